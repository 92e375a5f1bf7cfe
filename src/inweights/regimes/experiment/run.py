"""One experiment: units -> recipes (curricula of stages) -> trained models -> probes -> report.

Run directory layout::

    config.yaml  status.json  metrics.jsonl  samples.jsonl  summary.json  report.md  *.png
    base/                      the starting model (tiny preset without a prepared base)
    stages/<i>_<name>_<key>/   model/ (save_pretrained), eval.json, samples.jsonl
    steps/<i>_<name>_<key>.json  a trained stage's record (``runs.Steps``: written last, with the stage's key)

A stage's key hashes everything that determines its weights (starting point, stage spec, seed, data
and training config), so recipes that share a prefix of stages train it once and reuse it. A stage is done when
its step record is there with its key; an evaluation when ``eval.json`` is, with its probes' key (``runs.Steps``,
the one way every regime resumes).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from inweights import views
from inweights.config import ExperimentConfig, dump_config, same_config
from inweights.core.errors import UserError
from inweights.core.io import atomic_write
from inweights.core.rundir import LOCK, open_run
from inweights.core.seeds import derive_seed
from inweights.curriculum import TokenCache, corpus_texts, stage_sampler
from inweights.eval.extraction import diagnose
from inweights.eval.probes import evaluate
from inweights.gates import Curve, Gate, Hooks
from inweights.models import build_tiny, load_model, save_model, train_tokenizer
from inweights.models.load import (
    add_name_tokens,
    check_lora_for_source,
    is_lora,
    resolve_source,
)
from inweights.regimes.experiment.evaluation import Evaluation
from inweights.regimes.experiment.grpo_stages import GRPOStages
from inweights.regimes.experiment.jobs import run_jobs
from inweights.regimes.experiment.pbb import check_recipe_names, stages_for
from inweights.regimes.experiment.timing import time_shares
from inweights.runs import (
    Run,
    Steps,
    content_key,
    ensure_prepared,
    eval_autocast,
    finishing,
    load_units,
)
from inweights.train.data import PackedBatches
from inweights.train.loop import get_accelerator, train_stage


def _sha(obj: Any) -> str:
    return content_key(obj, 64)


def loss_kind(stage) -> str:
    """What a stage's training loss is averaged over, so plots never put different losses on one axis:
    ``documents`` (whole-text loss on decl), ``answers`` (completion loss), both mixed, or ``grpo``."""
    if getattr(stage, "objective", "sft") == "grpo":
        return "grpo"
    views = {m.view for m in stage.mixture}
    if views == {"decl"}:
        return "documents"
    return "answers" if "decl" not in views else "documents + answers"


def curve_measure(model, tok, domain, units, cfg: ExperimentConfig) -> dict[str, float]:
    """One point of a stage's curve: the evaluator's cells and extraction diagnostics on validation inputs (never
    test inputs) of the first ``eval.curve_units`` units per group, ``eval.curve_inputs`` inputs each, CoT only.
    Keys: ``<cell>@val`` accuracies, ``<group>/doc_recall``, ``<group>/doc_forced_recall``, ``<group>/query_recall``,
    ``tokens`` (the probes' prompt and generated tokens)."""
    import dataclasses

    e = cfg.eval
    val = [dataclasses.replace(u, test_inputs=tuple(u.meta.get("val_inputs", ()))[: e.curve_inputs]) for u in units]
    val = [u for u in val if u.test_inputs]
    ecfg = e.model_copy(update={"formats": ["cot"], "max_units_per_group": e.curve_units, "train_inputs": 0,
                                "groups": [g for g in e.groups if g in ("with_io", "without_io", "composed")]})
    counts: dict[str, int] = {}
    with eval_autocast(cfg):
        cells, samples = evaluate(model, tok, domain, val, ecfg, derive_seed(cfg.seed, "curve"), counts=counts)
    out = {f"{name}@val": c["acc"] for name, c in cells.items()}
    out["tokens"] = sum(counts.values())  # read and written (timing.time_shares: evaluation's work)
    diag = diagnose(domain, val, samples, cells)
    for group, g in (diag or {}).get("groups", {}).items():
        for k in ("doc_recall", "doc_forced_recall", "query_recall"):
            if g.get(k) is not None:
                out[f"{group}/{k}"] = g[k]
    return out


class Experiment(GRPOStages, Evaluation):
    def __init__(self, cfg: ExperimentConfig, out: Path, config_path: Path | None = None, resume: bool = False):
        self.cfg, self.out, self.config_path, self.resume = cfg, out, config_path, resume
        self.run = Run(out, cfg)
        self.steps = Steps(out / "steps")

    # ------------------------------------------------------------------ set-up
    def check_out_dir(self) -> None:
        """``--out`` checked, the run lock taken (main process), leftovers of an interrupted run cleaned."""
        if get_accelerator().is_main_process:
            for line in open_run(self.out, self.resume, dump_config(self.cfg), same_config):
                print(f"resume: {line}")
        elif self.out.exists() and any(p.name != LOCK for p in self.out.iterdir()) and not self.resume:
            raise UserError(f"run directory {self.out} already exists: pass --resume to continue it, or --out")

    def base_model(self, domain, units) -> tuple[Path | str, str, dict[str, Any] | None]:
        """(folder or hub id, identity, prepared record) of the model every recipe starts from."""
        cfg = self.cfg
        if cfg.model.preset != "tiny":
            source, ident = resolve_source(cfg.model)
            if cfg.model.lora and not cfg.model.path:  # (a path was checked before the run started)
                check_lora_for_source(source, cfg.model.lora, cfg.model.revision)
            if not cfg.model.prepared_base:
                return source, _sha(ident), None
        if cfg.model.prepared_base:
            pdir, rec = ensure_prepared(cfg, self.config_path)
            return pdir, rec["weights_sha256"], rec
        base = self.out / "base"
        key = _sha({"tiny": cfg.model.tiny.model_dump(), "seed": cfg.seed, "data": cfg.domain.identity()})
        if self.steps.done("base", key[:12]) is None and get_accelerator().is_main_process:
            tok = train_tokenizer(corpus_texts(domain, units, cfg.seed), cfg.model.tiny.vocab_size)
            model = build_tiny(cfg.model.tiny, tok, cfg.seed)
            save_model(model, tok, base)
            self.steps.finish("base", key[:12], {"dir": base.name})
        get_accelerator().wait_for_everyone()
        return base, key, None

    def named(self, source: Path | str, ident: str, folder: str, units) -> tuple[Path, str]:
        """``model.name_tokens``: a copy of the starting model whose tokenizer spells every unit's name as one
        token (written once per run; the stage keys change with it)."""
        names = [u.pointer for u in units]
        out = self.out / folder
        key = _sha({"from": ident, "name_tokens": names})
        if self.steps.done(folder, key[:12]) is None and get_accelerator().is_main_process:
            m = self.cfg.model
            tmp = self.out / f".{folder}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            add_name_tokens(source, names, tmp, m.dtype, m.attn_implementation,
                            m.revision if str(source) == m.name else None)
            shutil.rmtree(out, ignore_errors=True)  # an interrupted earlier write
            tmp.rename(out)
            self.steps.finish(folder, key[:12], {"dir": folder})
        get_accelerator().wait_for_everyone()
        return out, key

    # ------------------------------------------------------------------ the run
    def execute(self) -> dict[str, Any]:
        cfg = self.cfg
        acc = get_accelerator()
        self.check_out_dir()
        acc.wait_for_everyone()  # every process checked the directory before the first one writes
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            self.run.status("running")
            atomic_write(self.out / "config.yaml", dump_config(cfg))
        acc.wait_for_everyone()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        t_start = time.time()
        domain, units = load_units(cfg, self.out if acc.is_main_process else None, quiet=not acc.is_main_process)
        base_dir, base_id, prepared = self.base_model(domain, units)
        others = self.other_bases()
        if cfg.model.name_tokens:
            base_dir, base_id = self.named(base_dir, base_id, "base_named", units)
            others = {n: (*self.named(d, i, f"base_named_{n}", units), rec) for n, (d, i, rec) in others.items()}
        stages, finals = self.plan(base_dir, base_id, others)
        jobs = self.jobs(stages, finals, base_dir, others)
        workers = self.cfg.workers
        if acc.num_processes > 1 and workers > 1:
            if acc.is_main_process:
                print(f"{acc.num_processes} processes: jobs run one after another (workers {workers} ignored)")
            workers = 1
        run_jobs(jobs, workers, self.cfg, self.out, self.config_path, _do_job)
        results: dict[str, Any] = {"recipes": {}}
        if cfg.eval.eval_base:
            results["base"] = self.evaluate_dir("base", base_dir, self.out / "base_eval", domain, units)
            results["other_bases"] = {}
            for name, (odir, _, orec) in others.items():
                ev = self.evaluate_dir(f"base:{name}", odir, self.out / f"base_eval_{name}", domain, units)
                results["other_bases"][f"base:{name}"] = {**ev, "prepared": orec}
        if cfg.eval.positive_control:
            results["positive_control"] = self.positive_control(domain, units)
        for recipe, chain in finals.items():
            stages_out = []
            for key in chain:
                info = self.steps.done(stages[key]["dir"].name, key)
                stages_out.append({"name": stages[key]["stage"].name, "dir": stages[key]["dir"].name, "key": key,
                                   "loss_kind": loss_kind(stages[key]["stage"]),
                                   **{k: info[k] for k in ("steps", "tokens", "seconds", "tok_s")},
                                   **({"gate": info["gate"]} if info.get("gate") else {}),
                                   **({"curve": info["curve"]} if info.get("curve") else {})})
            final_dir = stages[chain[-1]]["dir"]
            ev = self.evaluate_dir(recipe, final_dir / "model", final_dir, domain, units)
            results["recipes"][recipe] = {"stages": stages_out, **ev}
        results["prepared"] = prepared
        results["wall_seconds"] = round(time.time() - t_start, 1)
        results["time"] = time_shares(results, workers, passes=2.0 if cfg.model.lora is not None else 3.0)
        results["counts"] = {g: sum(u.group == g for u in units) for g in dict.fromkeys(u.group for u in units)}
        for g in domain.groups:
            results["counts"].setdefault(g, 0)
        if any(m.skew is not None for stages_ in cfg.curricula.values() for st in stages_ for m in st.mixture):
            # skewed demonstrations: the report splits accuracy by each unit's first step (majority vs rest)
            results["signatures"] = {u.id: domain.signature(u) for u in units if u.group == "without_io"}
        results.update(domain.summary_extras(units))
        results["processes"] = acc.num_processes
        if not acc.is_main_process:
            acc.wait_for_everyone()
            return None
        self.collect_samples()
        models = {r: str((stages[c[-1]]["dir"] / "model").relative_to(self.out)) for r, c in finals.items()}
        atomic_write(self.out / "models.json", json.dumps(models, indent=1) + "\n")
        from inweights.regimes.experiment.report import write_report

        summary = write_report(self.out, cfg, results)
        self.run.status("finished", wall_seconds=results["wall_seconds"])
        acc.wait_for_everyone()
        return summary

    def recipe_list(self) -> list[str]:
        names = list(self.cfg.recipes)
        if self.cfg.sweep:
            if self.cfg.sweep.reference not in names:
                names.insert(0, self.cfg.sweep.reference)
            names += [f"demos_only@k{k}" for k in self.cfg.sweep.demos_k if f"demos_only@k{k}" not in names]
        return names

    def stage_key(self, prev: str, stage) -> str:
        c = self.cfg
        return _sha({"prev": prev, "stage": stage.model_dump(), "seed": c.seed, "domain": c.domain.identity(),
                     "train": c.train.model_dump(exclude={"log_every", "threads", "save_every", "report_to"}),
                     "lora": c.model.lora.model_dump() if c.model.lora else None})[:12]

    def other_bases(self) -> dict[str, tuple[Path, str, dict[str, Any]]]:
        """Prepared bases that recipes written ``recipe:NAME`` start from (configs/NAME.yaml), e.g. a control
        that starts from a base which never saw PBB's stage 1."""
        out = {}
        for recipe in self.recipe_list():
            _, sep, name = recipe.partition(":")
            if sep and name not in out:
                cfg = self.cfg.model_copy(deep=True)
                cfg.model.prepared_base = f"configs/{name}.yaml"
                pdir, rec = ensure_prepared(cfg, self.config_path)
                out[name] = (pdir, rec["weights_sha256"], rec)
        return out

    def plan(self, base_dir: Path, base_id: str, others=None):
        """Unique stages (by key) with their parents, and each recipe's chain of stage keys."""
        stages: dict[str, dict[str, Any]] = {}
        finals: dict[str, list[str]] = {}
        others = others or {}
        for recipe in self.recipe_list():
            plain, _, other = recipe.partition(":")
            start_dir, start_id = (others[other][0], others[other][1]) if other else (base_dir, base_id)
            prev_key, prev_dir, chain = start_id, start_dir, []
            for i, stage in enumerate(stages_for(plain, self.cfg)):
                key = self.stage_key(prev_key, stage)
                sdir = self.out / "stages" / f"{i + 1}_{stage.name}_{key}"
                stages.setdefault(key, {"stage": stage, "dir": sdir, "parent": chain[-1] if chain else None,
                                        "start": prev_dir, "recipe": recipe})
                chain.append(key)
                prev_key, prev_dir = key, sdir / "model"
            finals[recipe] = chain
        return stages, finals

    def jobs(self, stages, finals, base_dir: Path, others=None) -> list[dict[str, Any]]:
        """Training jobs (with their dependencies) and evaluation jobs, for the scheduler."""
        out = []
        for key, st in stages.items():
            if self.steps.done(st["dir"].name, key) is None:
                out.append({"kind": "train", "id": key, "deps": [st["parent"]] if st["parent"] else [],
                            "recipe": st["recipe"], "stage": st["stage"].model_dump(), "start": str(st["start"]),
                            "dir": str(st["dir"]), "key": key})
        if self.cfg.eval.eval_base:
            out.append({"kind": "eval", "id": "eval:base", "deps": [], "label": "base", "model": str(base_dir),
                        "cache": str(self.out / "base_eval")})
            for name, (odir, _, _) in (others or {}).items():
                out.append({"kind": "eval", "id": f"eval:base:{name}", "deps": [], "label": f"base:{name}",
                            "model": str(odir), "cache": str(self.out / f"base_eval_{name}")})
        for recipe, chain in finals.items():
            d = stages[chain[-1]]["dir"]
            out.append({"kind": "eval", "id": f"eval:{recipe}", "deps": [chain[-1]], "label": recipe,
                        "model": str(d / "model"), "cache": str(d)})
        return out

    def load(self, source, lora=None, seed: int = 0):
        m = self.cfg.model
        revision = m.revision if str(source) == m.name else None
        return load_model(source, m.dtype, lora, m.attn_implementation, revision, seed)

    def train_one(self, recipe, stage, key, prev_dir: Path, sdir: Path, domain, units) -> None:
        cfg = self.cfg
        acc = get_accelerator()
        if acc.is_main_process:
            sdir.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        model, tok = self.load(prev_dir, cfg.model.lora, derive_seed(cfg.seed, key, "lora"))
        log = self.run.stage_log(recipe=recipe, stage_key=key)
        if stage.objective == "grpo":
            warm = None
            if cfg.grpo.sft_warmup_steps:
                model, warm = self.grpo_warmup(recipe, stage, key, prev_dir, sdir, model, tok, domain, units, log)
            res = self.train_grpo_stage(recipe, stage, key, prev_dir, sdir, model, tok, domain, units, log)
            if warm is not None:
                res["sft_warmup"] = warm
        else:
            sample = stage_sampler(stage, domain, units, TokenCache(tok), derive_seed(cfg.seed, "demos"))
            # one global stream (the same on every process; each takes its share of the rows), so N processes
            # train on exactly the batches one process would
            batches = PackedBatches(sample, derive_seed(cfg.seed, key, "stream", 0), cfg.train.batch_size,
                                    cfg.train.max_len, tok.pad_token_id,
                                    shard=(acc.process_index, acc.num_processes))
            gate = self.stage_gate(stage, tok, domain, units, log) if stage.gate else None
            curve = self.curve(stage, tok, domain, units, log) if cfg.eval.curve_every else None
            if curve is not None and prev_dir.parent.parent != self.out / "stages" and not (sdir / "ckpt").exists():
                self.start_point(curve, model, prev_dir)  # later stages start where one ended: no step-0 point
            hooks = [h for h in (gate, curve) if h is not None]
            rows = None
            if stage.trainable == "names":
                rows = sorted({tok.convert_tokens_to_ids(u.pointer) for u in units})
            res = train_stage(model, batches, stage.steps, cfg.train, sdir, lr=stage.lr,
                              desc=f"{recipe}:{stage.name}", save_every=cfg.train.save_every, log=log,
                              on_step=Hooks(hooks) if len(hooks) > 1 else (hooks or [None])[0], trainable_rows=rows)
            if gate is not None:
                res["gate"] = gate.record()
            if curve is not None:
                res["curve"] = curve.history
        if acc.is_main_process:
            tmp = sdir / "model.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            lora_base = str(prev_dir) if is_lora(res["model"]) else None
            save_model(res["model"], tok, tmp, base=lora_base, state_dict=res["state_dict"],
                       revision=cfg.model.revision if str(prev_dir) == cfg.model.name else None)
            if (sdir / "model").exists():
                shutil.rmtree(sdir / "model")
            os.replace(tmp, sdir / "model")
            info = {k: v for k, v in res.items() if k not in ("model", "state_dict")}
            info["stage"] = stage.model_dump()
            self.steps.finish(sdir.name, key, info)
        acc.wait_for_everyone()

    def stage_gate(self, stage, tok, domain, units, log) -> Gate:
        """A stage's gate: accuracy on validation inputs (never test inputs) of the gate's group, every N steps."""
        g, cfg = stage.gate, self.cfg
        pairs = [(u, x) for u in units if u.group == g.group for x in u.meta.get("val_inputs", ())]
        if not pairs:
            raise UserError(f"stage {stage.name}: its gate measures on validation inputs, and the {g.group} units have "
                            "none; set domain.programs.n_val_inputs (> 0)")
        rng = random.Random(derive_seed(cfg.seed, "gate", stage.name))
        if len(pairs) > g.max_probes:
            pairs = rng.sample(pairs, g.max_probes)
        view = "exec" if g.mode == "in_weights" else "in_context"
        recs = [views.execution(domain, u, x, g.format, rng, view=view) for u, x in pairs]
        key = f"{g.group}/{g.mode}/{g.format}@val"

        def measure(model) -> dict[str, float]:
            from inweights.eval.generate import generate

            outs = generate(model, tok, [r["prompt"] for r in recs], max_new_tokens=cfg.eval.max_new_tokens,
                            batch_size=cfg.eval.batch_size)
            return {key: sum(domain.score(u, x, views.extract(domain, o)) for (u, x), o in zip(pairs, outs)) / len(pairs)}

        return Gate(measure, key, g.value, g.every, stage.steps, log)

    def start_point(self, curve: Curve, model, start: Path) -> None:
        """A chain's first stage starts from a base: its curve's step-0 point, that base's on the curve's probes,
        is measured once per run and reused (``seconds`` 0, ``reused``) by every other chain that starts there —
        the same model, probes and batches give the same point. Chains that start at once on two workers may
        each measure it (nothing waits for the other)."""
        acc = get_accelerator()
        path = self.out / "curves" / f"start-{hashlib.sha1(str(start).encode()).hexdigest()[:16]}.json"
        acc.wait_for_everyone()
        if path.exists():  # the same answer on every process: a multi-process run runs one job at a time
            curve.add(json.loads(path.read_text()) | {"seconds": 0.0, "reused": True})
            return
        curve(0, model)
        if acc.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two workers may write it at once
            tmp.write_text(json.dumps(curve.history[-1]))
            os.replace(tmp, path)

    def curve(self, stage, tok, domain, units, log) -> Curve:
        """``eval.curve_every``: the stage's curve on validation inputs (``curve_measure``)."""
        cfg = self.cfg

        def measure(model) -> dict[str, float]:
            return curve_measure(model, tok, domain, units, cfg)

        return Curve(measure, cfg.eval.curve_every, stage.steps, log)

def _do_job(job: dict[str, Any], cfg_json: str, out: str, config_path: str | None, threads: int | None) -> str:
    """One job, in this process or a worker process (spawned: it rebuilds everything it needs)."""
    from inweights.config import ExperimentConfig, StageConfig

    if threads:
        torch.set_num_threads(threads)
    cfg = ExperimentConfig.model_validate_json(cfg_json)
    exp = Experiment(cfg, Path(out), Path(config_path) if config_path else None, resume=True)
    domain, units = load_units(cfg, quiet=True)
    if job["kind"] == "train":
        if exp.steps.done(Path(job["dir"]).name, job["key"]) is None:
            exp.train_one(job["recipe"], StageConfig.model_validate(job["stage"]), job["key"], Path(job["start"]),
                          Path(job["dir"]), domain, units)
    else:
        # every process generates its share of the probes; the main one scores and writes
        exp.evaluate_dir(job["label"], job["model"], Path(job["cache"]), domain, units)
    return job["id"]


def run_experiment(cfg: ExperimentConfig, out: Path, config_path: Path | None = None, resume: bool = False):
    check_recipe_names(cfg)  # before the run folder is touched
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    exp = Experiment(cfg, out, config_path, resume)
    with finishing(exp.run, out):
        return exp.execute()
