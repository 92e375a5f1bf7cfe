"""The experiment's GRPO stages: the SFT warm-up a stage takes when its starting policy is under a reward floor,
and the stage itself (``train.grpo``'s objective on the one loop, with the evaluation backend's sampler). A mixin
of ``Experiment`` (``regimes.experiment.run``): it reads the run's config, steps and model loader."""

from __future__ import annotations

import random
from pathlib import Path

from inweights.core.errors import UserError
from inweights.core.seeds import derive_seed
from inweights.curriculum import TokenCache, stage_sampler
from inweights.models import save_model
from inweights.models.load import is_lora
from inweights.train.data import PackedBatches
from inweights.train.loop import get_accelerator, train_stage


class GRPOStages:
    def grpo_warmup(self, recipe, stage, key, prev_dir: Path, sdir: Path, model, tok, domain, units, log):
        """``grpo.sft_warmup_steps`` SFT steps on the stage's mixture before its GRPO steps, when the starting
        policy's greedy reward on ``floor_probes`` of the stage's training prompts is under ``warmup_floor`` (GRPO
        learns nothing from groups that all fail). Returns (model, record); the record says what was measured and
        whether the warm-up ran. A finished warm-up is kept in ``<stage>/warmup`` (its step record:
        ``steps/<stage>_warmup.json``) and reused on a rerun."""
        from inweights.curriculum import stage_prompts
        from inweights.eval.generate import generate

        cfg, g = self.cfg, self.cfg.grpo
        wdir = sdir / "warmup"
        if (rec := self.steps.done(f"{sdir.name}_warmup", key)) is not None:
            if rec["ran"]:
                model, _ = self.load(wdir / "model", None)
            return model, rec
        rng = random.Random(derive_seed(cfg.seed, key, "floor"))
        try:
            sample = stage_prompts(stage, domain, units)
        except ValueError as e:
            raise UserError(str(e)) from None
        probes = [sample(rng) for _ in range(g.floor_probes)]
        model.to(get_accelerator().device)
        outs = generate(model, tok, [p for p, _ in probes], max_new_tokens=g.max_completion_length,
                        batch_size=cfg.eval.batch_size)
        reward = sum(r(o) for (_, r), o in zip(probes, outs)) / len(probes)
        rec = {"event": "grpo_floor", "stage": f"{recipe}:{stage.name}", "reward_greedy": reward,
               "floor": g.warmup_floor, "probes": len(probes), "ran": reward < g.warmup_floor,
               "steps": g.sft_warmup_steps if reward < g.warmup_floor else 0}
        if rec["ran"]:
            acc = get_accelerator()
            sft = stage.model_copy(update={"objective": "sft", "name": f"{stage.name}_warmup"})
            batches = PackedBatches(stage_sampler(sft, domain, units, TokenCache(tok), derive_seed(cfg.seed, "demos")),
                                    derive_seed(cfg.seed, key, "warmup", 0), cfg.train.batch_size, cfg.train.max_len,
                                    tok.pad_token_id, shard=(acc.process_index, acc.num_processes))
            out = train_stage(model, batches, g.sft_warmup_steps, cfg.train, wdir, lr=stage.lr,
                              desc=f"{recipe}:{stage.name}:sft_warmup", save_every=cfg.train.save_every, log=log)
            model = out["model"]
            if acc.is_main_process:
                save_model(model, tok, wdir / "model", base=str(prev_dir) if is_lora(model) else None,
                           state_dict=out["state_dict"])
        if get_accelerator().is_main_process:
            log(rec)
        self.steps.finish(f"{sdir.name}_warmup", key, rec)
        return model, rec

    def train_grpo_stage(self, recipe, stage, key, prev_dir: Path, sdir: Path, model, tok, domain, units, log):
        """A grpo stage: prompts from the stage's mixture, rewards from the domain's scorer, samples from the
        evaluation backend (transformers, or vllm with the policy's weights pushed each step)."""
        from inweights.curriculum import stage_prompts
        from inweights.eval.generate import VllmPolicy, choose_backend
        from inweights.train.grpo import train_grpo

        cfg, g = self.cfg, self.cfg.grpo
        model.to(get_accelerator().device)
        gen = None
        backend = choose_backend(cfg.eval.backend)
        if backend == "vllm":
            gen = VllmPolicy(str(prev_dir), tok, max_new_tokens=g.max_completion_length, temperature=g.temperature,
                             top_p=g.top_p, dtype=cfg.model.dtype, seed=cfg.seed)
        elif backend == "lean":
            from inweights.eval.generate import generate_ids

            def gen(m, prompts, s):
                return generate_ids(m, tok, prompts, max_new_tokens=g.max_completion_length, batch_size=len(prompts),
                                    temperature=g.temperature, top_p=g.top_p, seed=s, backend="lean")
        try:
            sample = stage_prompts(stage, domain, units)
        except ValueError as e:
            raise UserError(str(e)) from None
        return train_grpo(model, tok, sample, stage.steps, g, cfg.train, lr=g.lr or stage.lr or cfg.train.lr,
                          seed=derive_seed(cfg.seed, key, "grpo"), desc=f"{recipe}:{stage.name}", log=log,
                          generate_fn=gen, out_dir=sdir, save_every=cfg.train.save_every)
