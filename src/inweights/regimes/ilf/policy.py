"""ILF's policies: the run folder and its steps, a policy trained (``train``: SFT with replay, early stopping on
validation tasks), sampled and judged in the sandbox, the starting policy (``base_policy``: the prepared base, or
pretraining on the prepare pool), and the coding prepared base itself (``build_starting_policy``: ``inweights
prepare`` with a coding config, gated on fresh-name tasks)."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from inweights.config import ExperimentConfig, dump_config
from inweights.core.errors import UserError
from inweights.core.seeds import derive_seed
from inweights.curriculum import TokenCache
from inweights.domains.coding import (
    CodingTask,
    fresh_generated_task,
    generated_tasks,
    program_of,
    prompt,
    spec_key,
)
from inweights.regimes.ilf.early_stop import EarlyStop
from inweights.regimes.ilf.tasks import _slim, policy_record, refine_prompt
from inweights.runs import Run, Steps, content_key
from inweights.sandbox import Limits, run_many


class PolicyRun:
    """What ILF's run and its prepared starting policy share: the run folder and its steps, loading, training
    (SFT with replay and early stopping) and sampling a policy, and judging programs in the sandbox."""

    def __init__(self, cfg: ExperimentConfig, out: Path, config_path: Path | None, resume: bool):
        self.cfg, self.out, self.config_path, self.resume = cfg, out, config_path, resume
        self.ilf = cfg.ilf
        self.limits = Limits(wall_seconds=self.ilf.timeout, cpu_seconds=self.ilf.timeout)
        self.t0 = time.time()
        self.prepared: dict[str, Any] | None = None  # the prepared starting policy's record, when there is one
        self.refiner_prepared: dict[str, Any] | None = None  # the refiners' prepared base's (``ilf.refiner_base``)
        self.run = Run(out, cfg)
        self.steps = Steps(out / "steps")

    # -- bookkeeping (the run folder's status and metrics log, as every regime keeps them)
    def log(self, rec: dict[str, Any]) -> None:
        self.run.log(rec)

    def status(self, state: str, **extra: Any) -> None:
        self.run.status(state, **extra)

    # ILF resumes as every regime does (``runs.Steps``). A sampling, feedback or refinement step's inputs follow from
    # the config (which --resume requires to be the same) and the steps before it, so its key is its name and the
    # seed; a fine-tune's key also hashes the records it trains on
    def key(self, name: str, inputs: Any = None) -> str:
        return content_key({"step": name, "seed": self.cfg.seed, **({"inputs": inputs} if inputs is not None else {})})

    def cached(self, name: str):
        return self.steps.done(name, self.key(name))

    def save_step(self, name: str, rec: dict[str, Any]) -> None:
        self.steps.finish(name, self.key(name), rec)

    # -- models
    def load(self, source):
        from inweights.models import load_model
        from inweights.train.loop import get_accelerator

        m = self.cfg.model
        model, tok = load_model(source, m.dtype, None, m.attn_implementation)
        return model.to(get_accelerator().device), tok

    def train(self, name: str, start, records: list[dict[str, Any]], steps: int | None, lr: float | None, *,
              replay: list[dict[str, Any]] = (), draw=None, val: list[CodingTask] = ()) -> Path:
        """SFT ``start`` (loss on the assistant turn) -> models/<name>/model; cached.

        Examples come from ``records`` (or ``draw(rng)``, a record per call), a ``ilf.replay`` share of them from
        ``replay``. ``steps=None``: a budget of ``ilf.policy_epochs`` epochs over ``records``; with ``val`` tasks,
        the greedy pass rate on them is measured every ``ilf.val_every`` epochs, training stops after
        ``ilf.patience`` measurements without improvement and the best checkpoint is what is saved."""
        from inweights.models import load_model, save_model
        from inweights.models.load import is_lora
        from inweights.train.data import PackedBatches
        from inweights.train.loop import train_stage

        d = self.out / "models" / name
        key = self.key(f"model_{name}", {"records": records, "replay": len(replay), "steps": steps, "lr": lr,
                                         "draw": draw is not None, "val": [t.id for t in val or ()]})
        if self.steps.done(f"model_{name}", key) is not None:
            return d / "model"
        if not records and draw is None:
            raise UserError(f"ILF step {name}: nothing to train on (no records)")
        m, t = self.cfg.model, self.cfg.train
        model, tok = load_model(start, m.dtype, m.lora, m.attn_implementation, 
                                seed=derive_seed(self.cfg.seed, name, "lora"))
        tokens = TokenCache(tok)
        share = self.ilf.replay if replay else 0.0
        budget: dict[str, Any] = {"replay": share, "replay_records": len(replay)}
        # an epoch over ``records``: their tokens over the tokens a step gives them
        own = sum(len(tokens(r, "completion")[0]) for r in records)
        per_epoch = own / ((1 - share) * t.batch_size * t.max_len) if draw is None else None
        if steps is None:
            steps = max(1, math.ceil(self.ilf.policy_epochs * per_epoch))
        if per_epoch:
            budget.update(epochs=round(steps / per_epoch, 2), steps_per_epoch=round(per_epoch, 3))

        def sample(rng):
            if share and rng.random() < share:
                return tokens(rng.choice(replay), "completion")
            return tokens(draw(rng) if draw is not None else rng.choice(records), "completion")

        batches = PackedBatches(sample, derive_seed(self.cfg.seed, "ilf", name, "stream"), t.batch_size,
                                t.max_len, tok.pad_token_id)
        hook = None
        if val and per_epoch:
            every = max(1, round(self.ilf.val_every * per_epoch))
            hook = EarlyStop(self, tok, list(val), every, steps, self.ilf.patience, d / "best.pt", name)
            from inweights.train.loop import get_accelerator

            hook.start(model.to(get_accelerator().device))
        log = self.run.stage_log(model=name)
        res = train_stage(model, batches, steps, t, d, lr=lr, desc=f"ilf:{name}",
                          save_every=t.save_every, log=log, on_step=hook)
        if hook is not None:
            hook.restore_best(res["model"])
            budget.update(hook.summary())
            self.log({"event": "early_stopping", "model": name, **hook.summary()})
        tmp = d / "model.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        save_model(res["model"], tok, tmp, base=str(start) if is_lora(res["model"]) else None,
                   state_dict=res["state_dict"])
        if (d / "model").exists():
            shutil.rmtree(d / "model")
        os.replace(tmp, d / "model")
        info = {k: v for k, v in res.items() if k not in ("model", "state_dict", "losses")}
        self.steps.finish(f"model_{name}", key, {**info, **budget, "planned_steps": steps, "records": len(records)})
        (d / "best.pt").unlink(missing_ok=True)
        return d / "model"

    def loss_on(self, model_dir, records: list[dict[str, Any]]) -> float:
        """Mean loss (nats per token) of a model on records' assistant turns: how near a fine-tune's data is to what
        the model writes (the paper compares the policy's perplexity on refinements and on gold)."""
        import torch

        from inweights.train.data import IGNORE, tokenize_record

        model, tok = self.load(model_dir)
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for r in records:
                ids, labels = tokenize_record(tok, r, "completion")
                x = torch.tensor([ids], device=model.device)
                y = torch.tensor([labels[1:]], device=model.device)
                logits = model(input_ids=x).logits[0, :-1].float()
                total += torch.nn.functional.cross_entropy(logits, y[0], ignore_index=IGNORE, reduction="sum").item()
                n += int((y != IGNORE).sum())
        return total / max(n, 1)

    def val_pass(self, model, tok, tasks: list[CodingTask]) -> float:
        """Greedy pass rate of ``model`` on ``tasks`` (early stopping's measure)."""
        from inweights.eval.generate import generate

        chat = [[{"role": "user", "content": prompt(task)}] for task in tasks]
        outs = generate(model, tok, chat, max_new_tokens=self.ilf.max_new_tokens, batch_size=self.cfg.eval.batch_size)
        verdicts = self.judge(tasks, [[program_of(task, x)] for task, x in zip(tasks, outs)])
        return sum(v[0]["status"] == "passed" for v in verdicts) / len(tasks)

    def base_policy(self, tasks) -> Path | str:
        cfg = self.cfg
        if cfg.model.preset != "tiny" and not cfg.model.prepared_base:
            from inweights.models.load import resolve_source

            return resolve_source(cfg.model)[0]
        if cfg.model.prepared_base:
            from inweights.runs import ensure_prepared

            folder, rec = ensure_prepared(cfg, self.config_path, build_starting_policy)
            if rec.get("gate_metric") == "refine_real":
                raise UserError(f"model.prepared_base: {folder} is a refiner base, not a starting policy: name it in "
                                "ilf.refiner_base")
            self.prepared = {k: rec.get(k) for k in ("name", "seed", "steps", "gate_value", "name_errors",
                                                     "prepare_functions", "weights_sha256")}
            return folder
        init = self.out / "models" / "init"
        if not (init / "config.json").is_file():
            from inweights.models import build_tiny, save_model, train_tokenizer

            texts = [prompt(t) + "\n" + t.gold for p in ("prepare", "refine", "train") for t in tasks[p]]
            texts += [refine_prompt(t, t.gold, "The code is wrong.") for t in (tasks["refine"] or tasks["prepare"])[:50]]
            tok = train_tokenizer(texts, cfg.model.tiny.vocab_size)
            save_model(build_tiny(cfg.model.tiny, tok, cfg.seed), tok, init)
        if not self.ilf.pretrain_steps:
            return init
        if not tasks["prepare"]:
            raise UserError("ilf.pretrain_steps needs the generated prepare pool (domain.coding.n_prepare > 0)")
        recs = [policy_record(t, t.gold) for t in tasks["prepare"]]
        draw = None
        if self.ilf.pretrain_fresh_names and cfg.domain.section().source == "generated":
            specs = [t.meta["spec"] for t in tasks["prepare"]]
            n_tests, family = cfg.domain.section().n_tests, cfg.domain.section().prepare_family

            def draw(rng):
                t = fresh_generated_task(rng, specs, "prepare", n_tests, family)
                return policy_record(t, t.gold)
        return self.train("policy_base", init, recs, self.ilf.pretrain_steps, self.ilf.pretrain_lr, draw=draw)

    # -- sampling and judging
    def sample(self, model_dir, prompts: list[str], n: int, name: str) -> list[list[str]]:
        from inweights.eval.generate import generate

        model, tok = self.load(model_dir)
        chat = [[{"role": "user", "content": p}] for p in prompts for _ in range(n)]
        outs = generate(model, tok, chat, max_new_tokens=self.ilf.max_new_tokens,
                        batch_size=self.cfg.eval.batch_size, temperature=self.ilf.temperature,
                        top_p=self.ilf.top_p, seed=derive_seed(self.cfg.seed, "ilf", name, "sample"))
        return [outs[i * n:(i + 1) * n] for i in range(len(prompts))]

    def judge(self, tasks: list[CodingTask], programs: list[list[str]]) -> list[list[dict[str, Any]]]:
        progs = [t.sandboxed(code) for t, codes in zip(tasks, programs) for code in codes]
        verdicts = iter(run_many(progs, limits=self.limits, workers=self.ilf.workers))
        return [[next(verdicts).to_dict() for _ in codes] for codes in programs]

    def sample_and_judge(self, name: str, model_dir, tasks: list[CodingTask], n: int) -> dict[str, Any]:
        """Programs sampled for each task and their verdicts; cached in steps/<name>.json."""
        hit = self.cached(name)
        if hit is not None:
            return hit
        t0 = time.time()
        texts = self.sample(model_dir, [prompt(t) for t in tasks], n, name)
        programs = [[program_of(t, x) for x in xs] for t, xs in zip(tasks, texts)]
        verdicts = self.judge(tasks, programs)
        rec = {"tasks": [{"task_id": t.id, "programs": p, "verdicts": [_slim(v) for v in vs]}
                         for t, p, vs in zip(tasks, programs, verdicts)],
               "seconds": round(time.time() - t0, 1)}
        self.save_step(name, rec)
        return rec


def build_starting_policy(cfg: ExperimentConfig, out_dir: Path, work: Path, command: str,
                          config_path: str | Path | None = None) -> dict[str, Any]:
    """The coding domain's prepared base (``inweights prepare configs/prepare_coding.yaml``): the tiny starting
    policy, trained once for ``prepare.max_steps`` steps on a stream of the preparation's functions
    (``spec_is_prepare``) under fresh names, exactly as an ILF run trains its own (``ILFRun.base_policy``), so an
    experiment of any seed starts from it without spending the time. Its gate: the greedy pass rate on
    ``prepare.eval_programs`` fresh-name tasks (the preparation's functions, new names and inputs)."""
    from inweights.core.io import sha256_file
    from inweights.models import save_model

    if cfg.model.preset != "tiny":
        raise UserError("a coding prepared base is a tiny starting policy: model.preset must be tiny")
    c = cfg.domain.section()
    if c.source != "generated" or not c.n_prepare:
        raise UserError("a coding prepared base trains on the generated prepare pool: set domain.coding.source: "
                        "generated and domain.coding.n_prepare > 0")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cfg = cfg.model_copy(deep=True)
    cfg.ilf.pretrain_steps, cfg.ilf.pretrain_fresh_names = cfg.prepare.max_steps, True
    run = PolicyRun(cfg, work, None, resume=True)
    tasks = {"prepare": generated_tasks(c.n_prepare, cfg.seed, "prepare", c.n_tests, c.prepare_family), "refine": [],
             "train": []}
    model_dir = Path(run.base_policy(tasks))
    specs = [t.meta["spec"] for t in tasks["prepare"]]
    rng = random.Random(derive_seed(cfg.seed, "prepare", "eval"))
    held = [fresh_generated_task(rng, specs, "prepare", c.n_tests, c.prepare_family)
            for _ in range(cfg.prepare.eval_programs)]
    model, tok = run.load(model_dir)
    from inweights.eval.generate import generate

    outs = generate(model, tok, [[{"role": "user", "content": prompt(t)}] for t in held],
                    max_new_tokens=cfg.ilf.max_new_tokens, batch_size=cfg.eval.batch_size)
    verdicts = [v[0] for v in run.judge(held, [[program_of(t, o)] for t, o in zip(held, outs)])]
    passed = sum(v["status"] == "passed" for v in verdicts) / len(held)
    name_errors = sum(v.get("error_type") == "NameError" for v in verdicts) / len(held)
    save_model(model, tok, out_dir)
    done = run.steps.read(f"model_{model_dir.parent.name}")
    from inweights.prepare import config_digest

    record = {
        "name": cfg.name, "domain": "coding", "seed": cfg.seed, "gate": cfg.prepare.gate,
        "passed": passed >= cfg.prepare.gate, "gate_format": "pass@1 (greedy)", "gate_metric": "fresh_tasks",
        "gate_value": passed, "in_context": passed, "name_errors": name_errors,
        "eval_programs": len(held), "prepare_tasks": len(tasks["prepare"]),
        "prepare_functions": len({spec_key(s) for s in specs}),
        "steps": done.get("steps"), "tokens": done.get("tokens"), "train_seconds": round(done.get("seconds", 0.0), 1),
        "wall_seconds": round(time.time() - t0, 1), "gate_history": [], "init_from": None, "command": command,
        "config_sha256": config_digest(cfg), "weights_sha256": sha256_file(out_dir / "model.safetensors"),
    }
    (out_dir / "config.yaml").write_text(dump_config(cfg))
    (out_dir / "prepare.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
