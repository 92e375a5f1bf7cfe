"""Rule distillation (docs/papers.md §2): learn a rule in weights from k examples and a teacher that reads it.

For every held-out rule, k in ``distill.ks`` and seed in ``distill.seeds``, the k training examples and
k validation examples (in distribution, no rule) are drawn from the rule's pool, then:

- ``in_context``: the base model with the rule in its prompt (no training; the teacher of *base*);
- ``sft_without_rule``: the student fine-tuned on the k examples, no rule anywhere;
- ``sft_with_rule``: fine-tuned on the k examples with the rule in the prompt, tested without it;
- ``rule_distill_base``: the student distilled from the base model reading the rule;
- ``rule_distill_enhanced``: distilled from a teacher first fine-tuned on the k examples with the rule in
  its prompt (the ``sft_with_rule`` run, its epoch chosen on rule-in-prompt validation loss).

Every trained model keeps its best epoch by cross-entropy on the k validation examples without the rule
(the paper: best epoch by the student's loss on k held-out no-rule examples), and is tested greedily
without the rule, in distribution and out of distribution (exact match of the answer).

Every model trains as a stage of the engine (``train.loop.train_stage``, the loop PBB's stages run on) with a
``train.distill.PairObjective``: pairs of prompts on one answer, for epochs over k examples, the best epoch
kept by a stage hook (``EpochSelect``).
"""

from __future__ import annotations

import copy
import json
import math
import re
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from inweights.config import ExperimentConfig, dump_config, same_config
from inweights.core import rejects
from inweights.core.errors import UserError
from inweights.core.io import atomic_write, write_summary
from inweights.core.seeds import derive_seed
from inweights.eval.generate import generate
from inweights.eval.stats import mean_ci
from inweights.regimes.rule_distill.tasks import (
    Example,
    Task,
    cell_diagnostics,
    check_ks,
    checked_alpaca_task,
    generated_tasks,
    split,
    with_worked_examples,
)
from inweights.train.data import tokenize_record
from inweights.train.distill import PairBatch, PairObjective, forward, make_pair_batch
from inweights.train.loop import get_accelerator


class Encoder:
    def __init__(self, tokenizer, device=None):
        self.tok, self.device = tokenizer, device  # batches go to the model's device
        self.cache: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def __call__(self, user: str, answer: str) -> tuple[list[int], list[int]]:
        key = (user, answer)
        if key not in self.cache:
            rec = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
                   "prompt": [{"role": "user", "content": user}]}
            ids, labels = tokenize_record(self.tok, rec, "completion")
            p = next(i for i, lab in enumerate(labels) if lab != -100)
            n = sum(lab != -100 for lab in labels)
            self.cache[key] = (ids[:p], ids[p: p + n])
        return self.cache[key]

    def batch(self, examples: list[Example], student_side: str = "student", teacher_side: str = "teacher") -> PairBatch:
        s = [self(getattr(e, student_side), e.answer) for e in examples]
        t = [self(getattr(e, teacher_side), e.answer) for e in examples]
        for (_, a1), (_, a2) in zip(s, t):
            if a1 != a2:
                raise ValueError("the answer tokenizes differently after the two prompts")
        batch = make_pair_batch([p for p, _ in s], [p for p, _ in t], [a for _, a in s], self.tok.pad_token_id)
        return batch.to(self.device) if self.device is not None else batch


def ce_loss(model, batch: PairBatch) -> torch.Tensor:
    logits = forward(model, batch.s_ids, batch.s_mask, hidden=False).logits
    s = logits.reshape(-1, logits.shape[-1]).index_select(0, batch.s_pos).float()
    return F.cross_entropy(s, batch.targets)


# --------------------------------------------------------------------------- models
def trainable_copy(base, cfg: ExperimentConfig, seed: int):
    """A copy of the base to train: a fresh LoRA adapter on it (``model.lora``), or all its weights."""
    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    if cfg.model.lora is not None:
        from peft import LoraConfig, get_peft_model

        from inweights.models.load import check_lora_targets

        lc = cfg.model.lora
        check_lora_targets(model, lc)  # a target the model lacks: one line, as every other regime says it
        model = get_peft_model(model, LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                                 target_modules=lc.target_modules, task_type="CAUSAL_LM"))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return model


def frozen(model):
    """A teacher: merged (when it carries an adapter), in eval mode, without gradients."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def stage_config(cfg: ExperimentConfig):
    """The engine's settings for a rule-distillation stage: the run's ``train`` section (precision, clipping,
    threads) with the ``distill`` section's batch and learning rate, a cosine schedule to zero, no weight decay,
    one forward per batch, no compilation (stages of a few dozen steps) and no mid-stage checkpoint (a cell is
    the unit of resumption)."""
    dc = cfg.distill
    return cfg.train.model_copy(update={"batch_size": dc.batch_size, "grad_accum": 1, "lr": dc.lr,
                                        "min_lr_ratio": 0.0, "weight_decay": 0.0, "compile": False,
                                        "freeze_embeddings": False})


class EpochSelect:
    """A stage hook: after each epoch, the validation cross-entropy of each name in ``select`` (name -> prompt
    side) keeps that name's best epoch's trainable weights."""

    def __init__(self, objective, val_batches: dict[str, PairBatch]):
        self.objective, self.val_batches = objective, val_batches
        self.best = {name: (math.inf, -1, None) for name in val_batches}
        self.history: list[dict[str, Any]] = []

    def __call__(self, step: int, model) -> bool:
        if step % self.objective.steps_per_epoch:
            return False
        epoch = step // self.objective.steps_per_epoch
        rec = {"epoch": epoch, **{k: round(v, 5) for k, v in self.objective.take_parts().items()}}
        model.eval()
        with torch.no_grad():
            for name, vb in self.val_batches.items():
                v = float(ce_loss(model, vb))
                rec[f"val_{name}"] = round(v, 5)
                if v < self.best[name][0]:
                    self.best[name] = (v, epoch, trainable_state(model))
        model.train()
        self.history.append(rec)
        return False


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}


def train(model, enc: Encoder, train_ex: list[Example], val_ex: list[Example], cfg: ExperimentConfig, seed: int, *,
          side: str = "student", teacher=None, epochs: int | None = None,
          select: dict[str, str] | None = None) -> dict[str, Any]:
    """Train for ``epochs`` as one stage of the engine (``train.loop.train_stage``) on a ``PairObjective``;
    after each epoch, the validation cross-entropy of each side in ``select`` (name -> prompt side) picks that
    name's best epoch, whose weights are returned in ``best``.

    ``teacher`` given: the distill objective (teacher reads the ``teacher`` side, the student ``side``);
    ``teacher == "adapter_off"``: the teacher is the model itself with its LoRA adapter disabled."""
    import tempfile

    from inweights.train.loop import train_stage

    dc = cfg.distill
    epochs = epochs or dc.epochs
    select = select or {"best": "student"}
    examples = []
    for e in train_ex:
        (sp, a1), (tp, a2) = enc(getattr(e, side), e.answer), enc(e.teacher, e.answer)
        if a1 != a2:
            raise ValueError("the answer tokenizes differently after the two prompts")
        examples.append((sp, tp, a1))
    objective = PairObjective(examples, dc.batch_size, derive_seed(seed, "order"), enc.tok.pad_token_id,
                              teacher=teacher, tau=dc.tau, beta=dc.beta, layers=dc.layers, ce_weight=dc.ce_weight)
    hook = EpochSelect(objective, {name: enc.batch(val_ex, s, s) for name, s in select.items()} if val_ex else {})
    steps = objective.steps_per_epoch * epochs
    with tempfile.TemporaryDirectory(prefix="inweights-stage-") as work:
        res = train_stage(model, objective, steps, stage_config(cfg), Path(work), save_every=steps + 1,
                          desc="distill" if teacher is not None else "sft", on_step=hook, progress=False,
                          warmup_steps=min(dc.warmup_steps, steps // 2))
    best = hook.best
    if not hook.val_batches:  # no validation examples: the last epoch
        best = {name: (math.nan, epochs, trainable_state(model)) for name in select}
    return {"best": best, "history": hook.history, "seconds": res["seconds"]}


def load_best(model, state: dict[str, torch.Tensor]):
    with torch.no_grad():
        named = dict(model.named_parameters())
        for k, v in state.items():
            named[k].copy_(v)
    return model


# --------------------------------------------------------------------------- evaluation
class Answers:
    """Greedy answers of one model, kept by prompt: the frozen base answers the same prompts in many cells (the
    rule-in-prompt tests and the transfer inputs do not depend on k or the seed when no worked examples are
    shown), and greedy decoding of the same prompts in the same batches gives the same tokens, so the first
    cell's answers serve the others. A model with a LoRA adapter is answered by a merged copy (the lean decoder
    drives plain models only; the copy is dropped after)."""

    def __init__(self, model=None):
        self.model, self.kept = model, {}

    def __call__(self, model, tok, prompts: list[list[dict[str, str]]], cfg: ExperimentConfig) -> list[str]:
        key = (json.dumps(prompts), cfg.distill.max_new_tokens, cfg.eval.batch_size)
        if model is self.model and key in self.kept:
            return self.kept[key]
        runner = copy.deepcopy(model).merge_and_unload() if hasattr(model, "merge_and_unload") else model
        outs = generate(runner, tok, prompts, max_new_tokens=cfg.distill.max_new_tokens,
                        batch_size=cfg.eval.batch_size)
        if model is self.model:
            self.kept[key] = outs
        return outs


def accuracy(model, tok, task: Task, side: str, cfg: ExperimentConfig,
             answers: Answers | None = None) -> tuple[dict[str, float], list[dict]]:
    accs, samples = {}, []
    answers = answers or Answers()
    for split_name, exs in task.tests.items():
        prompts = [[{"role": "user", "content": getattr(e, side)}] for e in exs]
        outs = answers(model, tok, prompts, cfg)
        ok = [task.read(o) == e.gold for o, e in zip(outs, exs)]
        accs[split_name] = sum(ok) / len(ok)
        samples += [{"split": split_name, "prompt": getattr(e, side), "output": o, "gold": e.gold, "correct": c}
                    for e, o, c in zip(exs, outs, ok)]
    return accs, samples


# --------------------------------------------------------------------------- the experiment
def run_cell(base, tok, task: Task, k: int, seed: int, cfg: ExperimentConfig, log,
             keep_samples=None, answers: Answers | None = None) -> list[dict[str, Any]]:
    """Every recipe at one (task, k, seed); ``keep_samples(records)`` receives every test generation;
    ``answers``: the base's answers kept across cells (``Answers(base)``)."""
    dc = cfg.distill
    answers = answers if answers is not None else Answers(base)
    enc = Encoder(tok, next(base.parameters()).device)
    train_ex, val_ex = split(task, k, seed, cfg.seed)
    wseed = derive_seed(cfg.seed, "worked", task.name, k, seed)
    train_t = with_worked_examples(train_ex, dc.teacher_examples, wseed, train_ex)
    task_t = Task(task.name, task.rule, task.pool, {s: with_worked_examples(exs, dc.teacher_examples, wseed, train_ex)
                                                    for s, exs in task.tests.items()}, task.direct, answer=task.answer)
    recipes = cfg.recipes
    rows = []

    def evaluate(model, t, side, recipe):
        accs, samples = accuracy(model, tok, t, side, cfg, answers)
        if keep_samples is not None:
            keep_samples([{"task": task.name, "k": k, "seed": seed, "recipe": recipe, **x} for x in samples])
        return accs

    diag = cell_diagnostics(task, train_ex)

    def row(recipe, accs, extra=None):
        r = {"task": task.name, "k": k, "seed": seed, "recipe": recipe, **{f"acc_{s}": a for s, a in accs.items()},
             **(extra or {}), **diag}
        rows.append(r)
        log(r)

    def sd(name):
        return derive_seed(cfg.seed, name, task.name, k, seed)

    if "in_context" in recipes:
        row("in_context", evaluate(base, task_t, "teacher", "in_context"))
    if "sft_without_rule" in recipes:
        m = trainable_copy(base, cfg, sd("sft_without_rule"))
        res = train(m, enc, train_ex, val_ex, cfg, sd("order_without"), side="student")
        _, ep, state = res["best"]["best"]
        accs = evaluate(load_best(m, state), task, "student", "sft_without_rule")
        row("sft_without_rule", accs, {"best_epoch": ep, "seconds": round(res["seconds"], 2)})
    teacher_state = None
    if "sft_with_rule" in recipes or "rule_distill_enhanced" in recipes:
        m = trainable_copy(base, cfg, sd("sft_with_rule"))
        res = train(m, enc, train_t, val_ex, cfg, sd("order_with"), side="teacher", epochs=dc.teacher_epochs,
                    select={"best": "student", "teacher": "teacher"})
        _, ep, state = res["best"]["best"]
        _, t_ep, teacher_state = res["best"]["teacher"]
        if "sft_with_rule" in recipes:
            accs = evaluate(load_best(m, state), task, "student", "sft_with_rule")
            row("sft_with_rule", accs, {"best_epoch": ep, "seconds": round(res["seconds"], 2)})
        enhanced_teacher = frozen(load_best(m, teacher_state))
    for recipe in ("rule_distill_base", "rule_distill_enhanced"):
        if recipe not in recipes:
            continue
        extra = {}
        if recipe == "rule_distill_enhanced":
            teacher = enhanced_teacher
            t_accs = evaluate(teacher, task_t, "teacher", "enhanced_teacher")
            extra = {f"teacher_acc_{s}": a for s, a in t_accs.items()} | {"teacher_epoch": t_ep}
        elif cfg.distill.teacher_path:
            teacher = _separate_teacher(cfg, tok)
        else:
            teacher = "adapter_off" if cfg.model.lora is not None else frozen(copy.deepcopy(base))
        m = trainable_copy(base, cfg, sd(recipe))
        # the teacher reads train_t (the rule, and worked examples if any); the student the bare question
        res = train(m, enc, train_t, val_ex, cfg, sd("order_" + recipe), side="student", teacher=teacher)
        _, ep, state = res["best"]["best"]
        accs = evaluate(load_best(m, state), task, "student", recipe)
        row(recipe, accs, {"best_epoch": ep, "seconds": round(res["seconds"], 2), **extra,
                           "final_kl": res["history"][-1]["kl"], "final_hidden": res["history"][-1]["hidden"]})
    if "rule_distill_transfer" in recipes:
        # the base reading the rule answers the fresh inputs; the student is distilled on its own answers (teacher
        # forcing on them) beside the k gold examples. The gold of the fresh inputs is only used to report.
        teacher = _separate_teacher(cfg, tok) if cfg.distill.teacher_path else base
        fresh = with_worked_examples(task.transfer, dc.teacher_examples, wseed, train_ex)
        outs = answers(teacher, tok, [[{"role": "user", "content": e.teacher}] for e in fresh], cfg)
        answered = [(e, o.strip()) for e, o in zip(fresh, outs) if task.read(o) is not None]
        labelled = [Example(e.student, e.teacher, o, e.gold, e.x) for e, o in answered]
        t_acc = sum(task.read(o) == e.gold for e, o in answered) / max(len(fresh), 1)
        m = trainable_copy(base, cfg, sd("rule_distill_transfer"))
        kl_teacher = teacher if cfg.distill.teacher_path else ("adapter_off" if cfg.model.lora is not None
                                                               else frozen(copy.deepcopy(base)))
        res = train(m, enc, train_t + labelled, val_ex, cfg, sd("order_transfer"), side="student", teacher=kl_teacher)
        _, ep, state = res["best"]["best"]
        accs = evaluate(load_best(m, state), task, "student", "rule_distill_transfer")
        row("rule_distill_transfer", accs, {"best_epoch": ep, "seconds": round(res["seconds"], 2),
                                            "transfer_kept": len(labelled), "transfer_teacher_acc": t_acc,
                                            "final_kl": res["history"][-1]["kl"],
                                            "final_hidden": res["history"][-1]["hidden"]})
    return rows


_TEACHER = {}


def _separate_teacher(cfg: ExperimentConfig, tok):
    from inweights.models.load import load_model

    path = cfg.distill.teacher_path
    if path not in _TEACHER:
        if not (Path(path) / "config.json").is_file():
            raise UserError(f"distill.teacher_path: {path} is not a model folder (no config.json)")
        teacher, t_tok = load_model(path)
        teacher = teacher.to(get_accelerator().device)
        if t_tok.get_vocab() != tok.get_vocab():
            raise UserError(f"distill.teacher_path: {path} has another tokenizer than the student; the KL "
                            f"term compares distributions over one vocabulary")
        _TEACHER[path] = frozen(teacher)
    return _TEACHER[path]


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """mean, std and 95% t-interval over seeds per (task, recipe, k, split); a share's interval clipped to [0, 1]."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["recipe"], r["k"]), []).append(r)
    out = []
    for (task, recipe, k), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        cell = {"task": task, "recipe": recipe, "k": k, "n_seeds": len(rs)}
        for key in sorted({key for r in rs for key in r
                           if key.startswith(("acc_", "teacher_acc_", "covered_", "transfer_teacher_acc"))
                           or key == "hypotheses"}):
            vals = [r[key] for r in rs if key in r]
            m, lo, hi = mean_ci(vals)
            if key != "hypotheses":  # a share: its interval stays within [0, 1] (a t-interval over 3 seeds need not)
                lo, hi = max(lo, 0.0), min(hi, 1.0)
            cell[key] = {"mean": m, "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0, "ci95": [lo, hi]}
        out.append(cell)
    return {"cells": out}


def run_rule_distill(cfg: ExperimentConfig, out: Path, config_path: Path | None, resume: bool = False) -> dict:
    """The run folder's life (checks, lock, status) around ``_run_rule_distill``."""
    from inweights.core.rundir import open_run
    from inweights.runs import Run, finishing

    run = Run(out, cfg)
    for line in open_run(out, resume, dump_config(cfg), same_config):
        print(f"resume: {line}")
    with finishing(run, out):
        return _run_rule_distill(cfg, out, config_path, run)


def _run_rule_distill(cfg: ExperimentConfig, out: Path, config_path: Path | None, run) -> dict:
    from inweights.models.load import load_model
    from inweights.runs import Steps, content_key, load_units

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    t0 = time.time()
    if getattr(cfg.domain.section(), "alpaca_train", None):
        tasks = [checked_alpaca_task(cfg)]
    else:
        domain, units = load_units(cfg)
        tasks = generated_tasks(cfg, domain, units)
    for task in tasks:  # a k the pool cannot serve fails before any work
        check_ks(task, cfg.distill.ks)
    base_path, prepared = base_model_path(cfg, config_path)
    base, tok = load_model(base_path)
    base = base.to(get_accelerator().device)  # every copy trained or used as a teacher stays there
    base = frozen(base)
    if cfg.distill.teacher_path and "rule_distill_base" in cfg.recipes:
        _separate_teacher(cfg, tok)  # a missing folder or another tokenizer fails before any training
    rejects.write(out, [i for t in tasks for i in t.rejected])  # (written once every input has been checked)
    (out / "config.yaml").write_text(dump_config(cfg))
    run.status("running")
    steps, rows, all_samples, answers = Steps(out / "steps"), [], [], Answers(base)
    for task in tasks:
        for k in cfg.distill.ks:
            for seed in cfg.distill.seeds:
                # a cell is the unit of resumption (``runs.Steps``): done when its record is there with its key — the
                # cell's inputs beyond the config, which --resume requires to be the same
                name = "cell_" + re.sub(r"[^A-Za-z0-9_.-]", "_", task.name) + f"_k{k}_s{seed}"
                key = content_key({"task": task.name, "rule": task.rule, "k": k, "seed": seed})
                if (rec := steps.done(name, key)) is None:
                    # an interrupted cell restarts from scratch: the metrics it logged before the interrupt go
                    run.metrics.rewind({"task": task.name, "k": k, "seed": seed}, None)
                    samples: list[dict[str, Any]] = []
                    cell = run_cell(base, tok, task, k, seed, cfg, run.log, samples.extend, answers)
                    rec = steps.finish(name, key, {"rows": cell, "samples": samples})
                rows += rec["rows"]
                all_samples += rec["samples"]
    # the run's tables, whole, from the cells' records
    atomic_write(out / "cells.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write(out / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in all_samples))
    summary = summarise(rows) | {"wall_seconds": time.time() - t0, "prepared": prepared,
                                 "tasks": [{"name": t.name, "rule": t.rule, "pool": len(t.pool),
                                            "tests": {s: len(v) for s, v in t.tests.items()}} for t in tasks]}
    summary["bars"] = bars(cfg, summary)
    summary = write_summary(out / "summary.json", summary)
    from inweights.regimes.rule_distill.report import write_report

    write_report(cfg, out, summary)
    run.status("finished", wall_seconds=round(summary["wall_seconds"], 1))
    return summary


def base_model_path(cfg: ExperimentConfig, config_path: Path | None) -> tuple[str, dict | None]:
    """The model every recipe starts from: the prepared base (of any model), or the configured pretrained model."""
    from inweights.models.load import resolve_source
    from inweights.runs import ensure_prepared

    m = cfg.model
    if m.preset != "tiny" and not m.prepared_base:
        return resolve_source(m)[0], None
    if not m.prepared_base:
        raise UserError("rule distillation needs a base that follows rules in its prompt: set "
                        "model.prepared_base (tiny) or a pretrained model")
    pdir, rec = ensure_prepared(cfg, config_path)
    return str(pdir), rec


def bars(cfg: ExperimentConfig, summary: dict) -> list[str]:
    """The issue's bar, per task and k <= 8 (or the smallest k): a distilled student (enhanced, or the transfer
    set's) beats ``sft_without_rule`` by >= 10 points out of distribution (the paper's bar), and by >= 15 points
    in and out of distribution with 95% CIs over seeds that do not overlap (the stricter one)."""
    lines = []
    cells = {(c["task"], c["recipe"], c["k"]): c for c in summary["cells"]}
    ks = [k for k in cfg.distill.ks if k <= 8] or [min(cfg.distill.ks)]
    for task in sorted({c["task"] for c in summary["cells"]}):
        for k in ks:
            s = cells.get((task, "sft_without_rule", k))
            for recipe in ("rule_distill_enhanced", "rule_distill_transfer"):
                e = cells.get((task, recipe, k))
                if not (e and s):
                    continue
                parts, strict = [], True
                for sp in ("id", "ood"):
                    if f"acc_{sp}" not in e:
                        continue
                    (em, elo, ehi), (sm, slo, shi) = (_ci(e[f"acc_{sp}"]), _ci(s[f"acc_{sp}"]))
                    d = 100 * (em - sm)
                    strict = strict and d >= 15 and elo > shi
                    parts.append(f"{sp.upper()} {100 * em:.1f} [{100 * elo:.1f}, {100 * ehi:.1f}] vs {100 * sm:.1f} "
                                 f"[{100 * slo:.1f}, {100 * shi:.1f}] ({d:+.1f})")
                paper = "no OOD split"
                if "acc_ood" in e:
                    d_ood = 100 * (e["acc_ood"]["mean"] - s["acc_ood"]["mean"])
                    paper = "MET" if d_ood >= 10 else "NOT met"
                lines.append(f"{task} k={k} {recipe} vs sft_without_rule: " + "; ".join(parts)
                             + f" — paper bar (OOD +10): {paper}; "
                             + f"+15 in every split, CIs apart: {'MET' if strict else 'NOT met'}")
    return lines


def _ci(stat: dict[str, Any]) -> tuple[float, float, float]:
    lo, hi = stat.get("ci95", (stat["mean"], stat["mean"]))
    return stat["mean"], lo, hi


