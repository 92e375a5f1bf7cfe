"""The experiment's evaluations: a model folder probed with the config's units (sharded over processes, on the
chosen generation backend), the result a step (``eval.json`` beside its samples, keyed by the probes and the model),
and the run's ``samples.jsonl`` gathered from them. A mixin of ``Experiment`` (``regimes.experiment.run``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from inweights.core.seeds import derive_seed
from inweights.eval.extraction import diagnose
from inweights.eval.probes import evaluate
from inweights.models import save_model
from inweights.models.load import is_adapter_dir
from inweights.runs import Steps, content_key, eval_autocast, eval_bf16
from inweights.train.loop import get_accelerator


class Evaluation:
    def evaluate_dir(self, label: str, model_dir: Path | str, cache_dir: Path, domain, units,
                     ecfg=None) -> dict[str, Any]:
        """Probe a model (folder or hub id); cached in cache_dir/eval.json (same model, same probes). ``ecfg``: other
        probes than the config's ``eval`` section (the positive control's)."""
        cache_dir.mkdir(parents=True, exist_ok=True)
        ecfg = ecfg or self.cfg.eval
        # the model named relative to the run folder when it is inside it: a copied run folder keeps its evaluations
        where, run = Path(model_dir).resolve(), self.out.resolve()
        named = str(where.relative_to(run)) if where.is_relative_to(run) else str(model_dir)
        probe_key = content_key({"eval": ecfg.model_dump(), "seed": self.cfg.seed, "model": named}, 64)
        if (ev := Steps(cache_dir).done("eval", probe_key)) is not None:
            self._link_samples(label, cache_dir)
            return ev
        from inweights.core.progress import progress
        from inweights.eval.draft import draft_ids
        from inweights.eval.generate import choose_backend, generate, generate_vllm, prompt_ids

        acc = get_accelerator()
        backend = choose_backend(ecfg.backend)
        model, tok = self.load(model_dir)
        model.to(acc.device)
        if backend == "lean":
            from inweights.eval.decode import supports

            backend = "lean" if supports(model) else "transformers"
        vllm_dir = str(model_dir)
        if backend == "vllm" and is_adapter_dir(model_dir):  # vllm wants plain weights: merge once
            vllm_dir = str(cache_dir / "merged")
            if acc.is_main_process and not (cache_dir / "merged" / "config.json").is_file():
                save_model(model, tok, cache_dir / "merged")
            acc.wait_for_everyone()

        draft_stats: dict[str, Any] = {}  # this process's gold drafts: tokens offered and accepted, in all and by
        # cell (eval/draft.py)
        counts: dict[str, int] = {}  # this process's tokens read and written

        def local(prompts, records, bar):
            if backend == "vllm":
                outs = generate_vllm(vllm_dir, tok, prompts, max_new_tokens=ecfg.max_new_tokens,
                                     dtype=self.cfg.model.dtype, seed=self.cfg.seed,
                                     temperature=ecfg.temperature, top_p=ecfg.top_p)
                bar.update(len(prompts))
                # vllm gives texts: its tokens counted again from them (the same count but for an end of turn)
                counts["prompt"] = counts.get("prompt", 0) + sum(len(prompt_ids(tok, p)) for p in prompts)
                counts["generated"] = counts.get("generated", 0) + sum(
                    len(tok(o, add_special_tokens=False)["input_ids"]) for o in outs)
                return outs
            drafts = ([draft_ids(tok, r) for r in records] if backend == "lean" and ecfg.temperature == 0 else None)
            return generate(model, tok, prompts, max_new_tokens=ecfg.max_new_tokens, batch_size=ecfg.batch_size,
                            progress=bar, temperature=ecfg.temperature, top_p=ecfg.top_p,
                            seed=derive_seed(self.cfg.seed, "sample", acc.process_index), backend=backend,
                            drafts=drafts, draft_stats=draft_stats, draft_kinds=[r["cell"] for r in records],
                            counts=counts)

        def sharded(prompts, records):
            """Each process generates every N-th probe; the outputs are gathered back in order."""
            mine = list(range(acc.process_index, len(prompts), acc.num_processes))
            with progress(total=len(mine), desc=f"eval {label}", unit="probe",
                          disable=not acc.is_main_process) as bar:
                outs = local([prompts[i] for i in mine], [records[i] for i in mine], bar)
            if acc.num_processes == 1:
                return outs
            from accelerate.utils import gather_object

            full: list[str | None] = [None] * len(prompts)
            for i, o in gather_object(list(zip(mine, outs))):
                full[i] = o
            return full

        t0 = time.time()
        with eval_autocast(self.cfg):
            cells, samples = evaluate(model, tok, domain, units, ecfg, self.cfg.seed, generate_fn=sharded)
        if acc.num_processes > 1:  # every process's share of the probes (every process joins the gather)
            from accelerate.utils import gather_object

            parts = gather_object([counts])
            counts = {k: sum(c.get(k, 0) for c in parts) for k in ("prompt", "generated")} if any(parts) else {}
        ev = {"probe_key": probe_key, "cells": cells, "diagnostics": diagnose(domain, units, samples, cells),
              "eval_seconds": round(time.time() - t0, 1),
              "backend": backend, "processes": acc.num_processes, "bf16_autocast": eval_bf16(self.cfg),
              "draft_tokens": draft_stats, **({"tokens": counts} if counts else {})}
        if acc.is_main_process:
            with (cache_dir / "samples.jsonl.tmp").open("w") as f:
                for s in samples:
                    f.write(json.dumps(s) + "\n")
            os.replace(cache_dir / "samples.jsonl.tmp", cache_dir / "samples.jsonl")
            Steps(cache_dir).finish("eval", probe_key, ev)
        acc.wait_for_everyone()
        self.run.log({"event": "eval", "recipe": label, "cells": {k: v["acc"] for k, v in cells.items()},
                      "eval_seconds": ev["eval_seconds"]})
        self._link_samples(label, cache_dir)
        return ev

    def positive_control(self, domain, units) -> dict[str, Any]:
        """``eval.positive_control``: the named prepare config's base reading each unit in its prompt (in context,
        chain of thought) on this run's units — a model known to have the skill, so a low number here says the
        probes, the scorer or the generation budget are wrong, not the training. Built once if missing."""
        from inweights.config import load_config
        from inweights.core.errors import UserError
        from inweights.prepare import find_config
        from inweights.runs import ensure_prepared

        ref = self.cfg.eval.positive_control
        pconf = find_config(ref, self.config_path)
        if pconf is None:
            raise UserError(f"eval.positive_control: prepare config not found: {ref}")
        pcfg = load_config(pconf)
        probe = self.cfg.model_copy(update={"model": pcfg.model.model_copy(update={"prepared_base": str(pconf)})})
        pdir, _ = ensure_prepared(probe, self.config_path)
        ecfg = self.cfg.eval.model_copy(update={"modes": ["in_context"], "formats": ["cot"], "positive_control": None})
        ev = self.evaluate_dir("positive_control", pdir, self.out / "positive_control", domain, units, ecfg)
        return {"prepare": str(ref), "model": str(pdir), **ev}

    def _link_samples(self, label: str, cache_dir: Path) -> None:
        self._samples = getattr(self, "_samples", [])
        self._samples.append((label, cache_dir / "samples.jsonl"))

    def collect_samples(self) -> None:
        """samples.jsonl of the run: every sample of every evaluated model, tagged with its recipe."""
        tmp = self.out / "samples.jsonl.tmp"
        with tmp.open("w") as f:
            for label, path in getattr(self, "_samples", []):
                with path.open() as src:
                    for line in src:
                        f.write(json.dumps({"recipe": label, **json.loads(line)}) + "\n")
        os.replace(tmp, self.out / "samples.jsonl")
