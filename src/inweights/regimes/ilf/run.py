"""Imitation learning from language feedback on code generation (docs/papers.md §4), and its baselines.

One run (``domain.name: coding``):

0. The starting policy pi_0: the configured model, or, for the tiny preset, a random-init model trained on
   the gold solutions of the generated ``prepare`` pool (``ilf.pretrain_steps``) — the stand-in for a
   pretrained code model.
1. Refiners. pi_0 samples ``n_samples`` programs per ``refine``-pool task (temperature); failing ones (up to
   ``refine_per_task`` distinct ones per task) get feedback; the refinement model learns
   (task, OLD CODE, FEEDBACK) -> REFINEMENT with the loss on the refinement only, the gold solution standing
   in for a person's repair. A second refiner learns the same pairs without the FEEDBACK section (the
   "refinements without feedback" baseline).
2. Each round r: pi_r samples ``n_samples`` programs per ``train``-pool task; tasks with no passing sample
   are kept; one failing program per kept task gets feedback; the refiner samples ``refine_samples``
   refinements; the first that passes the tests is kept (one per task); pi_{r+1} = pi_r fine-tuned on the
   kept refinements (``policy_epochs`` with replay and early stopping on held-out train tasks: ``finetune``).
3. Baselines: ``zero_shot`` (pi_0), ``sft_gold`` (pi_0 fine-tuned on the gold solutions of the tasks ILF
   kept in any round — the same tasks, the same budget rule), ``sft_refinements_no_feedback`` (steps 1-2 with the
   refiner that never saw feedback).
4. Every model is scored on the ``test`` pool with ``eval_samples`` samples per task: pass@k with the
   unbiased estimator, with a bootstrap 95% interval over tasks.

Every program runs in the sandbox. Every sampling step's record is written to ``steps/<name>.json`` (programs,
verdicts, feedback, what was kept), every trained model to ``models/<name>/`` with its record in
``steps/model_<name>.json`` (``runs.Steps``, the one way every regime resumes); a rerun with ``--resume`` reuses
both. With ``ilf.feedback.provider: file`` the run stops where feedback is missing and
writes the programs to annotate (``inweights feedback export`` / ``import``, then ``--resume``).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from inweights.config import ExperimentConfig, dump_config, same_config
from inweights.core.errors import UserError
from inweights.core.seeds import derive_seed
from inweights.curriculum import TokenCache
from inweights.domains.coding import (
    CodingTask,
    fresh_generated_task,
    generated_tasks,
    program_of,
    prompt,
    read_humaneval,
    read_mbpp,
    spec_key,
)
from inweights.eval.stats import pass_at_k
from inweights.feedback import make_provider, program_key
from inweights.runs import Run, Steps, content_key
from inweights.sandbox import Limits, run_many

POOLS = ("prepare", "refine", "train", "test")


class WaitingForFeedback(Exception):
    """The run needs people's feedback before it can go on (provider ``file``)."""

    def __init__(self, path: Path, n: int):
        super().__init__(f"{n} failing programs need feedback: {path}")
        self.path, self.n = path, n


# ------------------------------------------------------------------------------------------ tasks
def load_tasks(cfg: ExperimentConfig, quiet: bool = False) -> dict[str, list[CodingTask]]:
    c = cfg.domain.section()
    if c.source == "generated":
        # what the experiment's tasks compute never appears among the starting policy's training tasks: the
        # prepare pool draws from the preparation's share of the functions, the others from the rest
        out = {p: generated_tasks(n, cfg.seed, p, c.n_tests, family=c.family)
               for p, n in (("refine", c.n_refine), ("train", c.n_train), ("test", c.n_test))}
        out["prepare"] = generated_tasks(c.n_prepare, cfg.seed, "prepare", c.n_tests) if c.n_prepare else []
        return out
    if c.source == "mbpp":
        from inweights.core import rejects

        with rejects.collecting() as found:
            out = {"prepare": [], "refine": read_mbpp(c.mbpp_path, c.refine_ids),
                   "train": read_mbpp(c.mbpp_path, c.train_ids), "test": read_mbpp(c.mbpp_path, c.test_ids)}
        rejects.settle(found, cfg.data.strict, quiet=quiet)
        return out
    tasks = read_humaneval()
    rest, test = tasks[: -c.humaneval_test], tasks[-c.humaneval_test:]
    return {"prepare": [], "refine": rest[: len(rest) // 2], "train": rest[len(rest) // 2:], "test": test}


def check_pools(cfg: ExperimentConfig, tasks: dict[str, list[CodingTask]]) -> None:
    """The held-out shares must leave tasks to work on (checked before a run writes anything)."""
    ilf = cfg.ilf
    if ilf.val_tasks >= len(tasks["train"]):
        raise UserError(f"ilf.val_tasks ({ilf.val_tasks}) must be fewer than the train pool's {len(tasks['train'])} tasks")
    if ilf.check_tasks >= len(tasks["refine"]):
        raise UserError(f"ilf.check_tasks ({ilf.check_tasks}) must be fewer than the refine pool's "
                        f"{len(tasks['refine'])} tasks")


def policy_record(task: CodingTask, code: str) -> dict[str, Any]:
    msgs = [{"role": "user", "content": prompt(task)}, {"role": "assistant", "content": code}]
    return {"messages": msgs, "prompt": msgs[:1], "completion": msgs[1:], "task": task.id}


def refine_prompt(task: CodingTask, old: str, feedback: str | None) -> str:
    """The ILF layout: the task, OLD CODE, FEEDBACK (absent for the no-feedback refiner), REFINEMENT."""
    text = f"{prompt(task)}\n\nOLD CODE:\n{old.strip()}\n\n"
    if feedback is not None:
        text += f"FEEDBACK:\n{feedback.strip()}\n\n"
    return text + "REFINEMENT:"


def refine_record(task: CodingTask, old: str, feedback: str | None, new: str) -> dict[str, Any]:
    msgs = [{"role": "user", "content": refine_prompt(task, old, feedback)}, {"role": "assistant", "content": new}]
    return {"messages": msgs, "prompt": msgs[:1], "completion": msgs[1:], "task": task.id}


def completion_of(task: CodingTask, code: str) -> str:
    """What the policy is trained to write: the whole program (HumanEval: the part after the prefix)."""
    return code[len(task.prefix):] if task.prefix and code.startswith(task.prefix) else code


# ------------------------------------------------------------------------------------------ the run
class ILFRun:
    def __init__(self, cfg: ExperimentConfig, out: Path, config_path: Path | None, resume: bool):
        self.cfg, self.out, self.config_path, self.resume = cfg, out, config_path, resume
        self.ilf = cfg.ilf
        self.limits = Limits(wall_seconds=self.ilf.timeout, cpu_seconds=self.ilf.timeout)
        self.t0 = time.time()
        self.prepared: dict[str, Any] | None = None  # the prepared starting policy's record, when there is one
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
            hook = _EarlyStop(self, tok, list(val), every, steps, self.ilf.patience, d / "best.pt", name)
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
            n_tests = cfg.domain.section().n_tests

            def draw(rng):
                t = fresh_generated_task(rng, specs, "prepare", n_tests)
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

    def feedback(self, name: str, requests: list[dict[str, Any]]) -> list[str | None]:
        """Feedback for each request; provider ``file`` stops the run when some is missing."""
        provider = make_provider(self.cfg.ilf.feedback, self.out, self.known)
        texts = provider(requests)
        missing = [r for r, f in zip(requests, texts) if f is None]
        if missing and provider.name == "file":
            from inweights.core.io import atomic_write

            (self.out / "feedback").mkdir(exist_ok=True)
            path = self.out / "feedback" / "pending.jsonl"
            atomic_write(path, "".join(json.dumps({
                "task_id": r["task_id"], "text": r["text"], "tests": list(r["tests"]), "program": r["program"],
                "verdict": r["verdict"]["reason"], "step": name, "feedback": ""}) + "\n" for r in missing))
            raise WaitingForFeedback(path, len(missing))
        return texts

    # -- the pieces
    def refiners(self, base, tasks, methods: set[str]) -> dict[str, Path]:
        """The refinement models the methods need (ilf: with feedback; the baseline: without), trained on the
        refine pool."""
        pool = tasks["refine"]
        s = self.sample_and_judge("refine_pool_samples", base, pool, self.ilf.n_samples)
        requests, golds = [], []
        for t, rec in zip(pool, s["tasks"]):
            seen: set[str] = set()
            for prog, v in zip(rec["programs"], rec["verdicts"]):
                if v["status"] != "passed" and prog not in seen and len(seen) < self.ilf.refine_per_task:
                    seen.add(prog)
                    requests.append(_request(t, prog, v))
                    golds.append(completion_of(t, t.gold))
        step = self.cached("refine_pool_feedback")
        if step is None:
            fb = self.feedback("refine_pool_feedback", requests)
            step = {"requests": [_slim_request(r) for r in requests], "feedback": fb}
            self.save_step("refine_pool_feedback", step)
        by_id = {t.id: t for t in pool}
        held = {t.id for t in self.check_pool(tasks)}  # the feedback check's tasks: never trained on
        use = [(r, f, g) for r, f, g in zip(step["requests"], step["feedback"], golds)
               if f is not None and r["task_id"] not in held]
        with_fb = [refine_record(by_id[r["task_id"]], r["program"], f, g) for r, f, g in use]
        without = [refine_record(by_id[r["task_id"]], r["program"], None, g) for r, f, g in use]
        self.log({"event": "refiner_data", "pairs": len(with_fb), "tasks": len(pool) - len(held),
                  "tasks_with_a_failure": len({r["task_id"] for r, _, _ in use}), "check_tasks": len(held)})
        out = {}
        if "ilf" in methods:
            out["ilf"] = self.train("refiner_feedback", base, with_fb, self.ilf.refiner_steps, None)
        if "sft_refinements_no_feedback" in methods:
            out["sft_refinements_no_feedback"] = self.train("refiner_no_feedback", base, without,
                                                            self.ilf.refiner_steps, None)
        return out

    def check_pool(self, tasks) -> list[CodingTask]:
        """The refine-pool tasks the feedback check holds out (the last ``ilf.check_tasks``)."""
        n = self.ilf.check_tasks
        return tasks["refine"][-n:] if n else []

    def feedback_check(self, refiners: dict[str, Path], tasks) -> dict[str, Any] | None:
        """Does the feedback carry information the refiner uses? The held-out refine tasks' failing programs,
        refined by the feedback refiner with their own feedback (``real``) and with another task's
        (``shuffled``, drawn, seeded, from another task's), and by the no-feedback refiner (``none``);
        ``refine_samples`` each. Rates are the share of refinements that pass, with bootstrap 95% intervals
        over programs, and paired differences."""
        check = self.check_pool(tasks)
        if not check or not {"ilf", "sft_refinements_no_feedback"} <= set(refiners):
            return None
        hit = self.cached("feedback_check")
        if hit is None:
            ids = {t.id for t in check}
            by_id = {t.id: t for t in check}
            step = self.cached("refine_pool_feedback")
            items = [(by_id[r["task_id"]], r["program"], f) for r, f in zip(step["requests"], step["feedback"])
                     if r["task_id"] in ids and f is not None]
            if len({t.id for t, _, _ in items}) < 2:
                return None
            rng = random.Random(derive_seed(self.cfg.seed, "ilf", "feedback_check", "shuffle"))
            shuffled = []
            for t, _, _ in items:
                others = [f for u, _, f in items if u.id != t.id]
                shuffled.append(rng.choice(others))
            conds = {"real": ("ilf", [refine_prompt(t, p, f) for t, p, f in items]),
                     "shuffled": ("ilf", [refine_prompt(t, p, g) for (t, p, _), g in zip(items, shuffled)]),
                     "none": ("sft_refinements_no_feedback", [refine_prompt(t, p, None) for t, p, _ in items])}
            hit = {"programs": len(items), "tasks": len({t.id for t, _, _ in items}), "conditions": {}}
            t0 = time.time()
            for cond, (which, prompts) in conds.items():
                texts = self.sample(refiners[which], prompts, self.ilf.refine_samples, f"check_{cond}")
                cand = [[program_of(t, x) for x in xs] for (t, _, _), xs in zip(items, texts)]
                verdicts = self.judge([t for t, _, _ in items], cand)
                hit["conditions"][cond] = [sum(v["status"] == "passed" for v in vs) / len(vs) for vs in verdicts]
            hit["shuffled_feedback"] = shuffled
            hit["seconds"] = round(time.time() - t0, 1)
            self.save_step("feedback_check", hit)
        per = hit["conditions"]
        seed = derive_seed(self.cfg.seed, "bootstrap", "feedback_check")
        out = {"programs": hit["programs"], "tasks": hit["tasks"]}
        for cond, vals in per.items():
            out[cond] = {"rate": sum(vals) / len(vals), "ci": bootstrap_ci(vals, seed)}
        for other in ("shuffled", "none"):
            diff = [a - b for a, b in zip(per["real"], per[other])]
            out[f"real_minus_{other}"] = {"diff": sum(diff) / len(diff), "ci": bootstrap_ci(diff, seed)}
        out["informative"] = all(out[f"real_minus_{o}"]["ci"][0] > 0 for o in ("shuffled", "none"))
        self.log({"event": "feedback_check", **{k: v for k, v in out.items()}})
        if not out["informative"]:
            r, sh, no = (100 * out[c]["rate"] for c in ("real", "shuffled", "none"))
            print(f"warning: feedback check: refinements with real feedback pass {r:.1f}% against {sh:.1f}% with "
                  f"shuffled feedback and {no:.1f}% without — real feedback is not clearly better (a 95% CI of the "
                  f"paired differences reaches 0 or below; steps/feedback_check.json)")
        return out

    def round(self, method: str, r: int, policy, refiner, tasks) -> tuple[Path, dict[str, Any]]:
        """One ILF round with this refiner: sample, keep failed tasks, feedback, refine, filter, fine-tune."""
        pool = self.train_pool(tasks)
        name = f"{method}_r{r}"
        # round 1 samples pi_0 for both methods: one sampling, shared
        s = self.sample_and_judge(f"policy_r{r}" if r == 1 else f"{name}_policy", policy, pool, self.ilf.n_samples)
        failed = [(t, rec) for t, rec in zip(pool, s["tasks"]) if not any(v["status"] == "passed" for v in rec["verdicts"])]
        requests = [_request(t, rec["programs"][0], rec["verdicts"][0]) for t, rec in failed]
        use_fb = method == "ilf"  # the other method refines the same failing programs without feedback
        step = self.cached(f"{name}_refinements")
        if step is None:
            if use_fb:
                fb_step = self.cached(f"{name}_feedback")
                if fb_step is None:
                    fb_step = {"feedback": self.feedback(f"{name}_feedback", requests)}
                    self.save_step(f"{name}_feedback", fb_step)
                fbs = fb_step["feedback"]
            else:
                fbs = [None] * len(requests)
            asked = [(t, req, f) for (t, _), req, f in zip(failed, requests, fbs) if f is not None or not use_fb]
            prompts = [refine_prompt(t, req["program"], f if use_fb else None) for t, req, f in asked]
            t0 = time.time()
            texts = self.sample(refiner, prompts, self.ilf.refine_samples, name) if prompts else []
            cand = [[program_of(t, x) for x in xs] for (t, _, _), xs in zip(asked, texts)]
            verdicts = self.judge([t for t, _, _ in asked], cand) if cand else []
            kept = []
            for (t, req, f), progs, vs in zip(asked, cand, verdicts):
                good = next((p for p, v in zip(progs, vs) if v["status"] == "passed"), None)
                kept.append({"task_id": t.id, "old": req["program"], "feedback": f if use_fb else None,
                             "refinements": progs, "statuses": [v["status"] for v in vs], "kept": good})
            step = {"tasks": len(pool), "failed_tasks": len(failed), "refined": len(asked),
                    "refinements": sum(len(k["refinements"]) for k in kept),
                    "passing_refinements": sum(s == "passed" for k in kept for s in k["statuses"]),
                    "kept": sum(k["kept"] is not None for k in kept), "items": kept,
                    "seconds": round(time.time() - t0, 1)}
            self.save_step(f"{name}_refinements", step)
        by_id = {t.id: t for t in pool}
        records = [policy_record(by_id[k["task_id"]], completion_of(by_id[k["task_id"]], k["kept"]))
                   for k in step["items"] if k["kept"] is not None]
        summary = {k: step[k] for k in ("tasks", "failed_tasks", "refined", "refinements",
                                        "passing_refinements", "kept")}
        summary["policy_pass_any"] = summary["tasks"] - summary["failed_tasks"]
        self.log({"event": "round", "method": method, "round": r, **summary})
        if not records:
            return Path(policy), {**summary, "trained": False}
        return self.finetune(name, policy, records, tasks), {**summary, "trained": True}

    def train_pool(self, tasks) -> list[CodingTask]:
        """The train pool less the validation tasks (the last ``ilf.val_tasks``)."""
        n = self.ilf.val_tasks
        return tasks["train"][:-n] if n else tasks["train"]

    def finetune(self, name: str, start, records: list[dict[str, Any]], tasks) -> Path:
        """A policy fine-tune (ILF's and the SFT baselines'): epochs (or ``policy_steps``), replay of the
        starting policy's training tasks, early stopping on the validation tasks."""
        n = self.ilf.val_tasks
        replay = [policy_record(t, t.gold) for t in tasks["prepare"]]
        return self.train(name, start, records, self.ilf.policy_steps, self.ilf.policy_lr, replay=replay,
                          val=tasks["train"][-n:] if n else [])

    def evaluate(self, label: str, model_dir, tasks) -> dict[str, Any]:
        s = self.sample_and_judge(f"eval_{label}", model_dir, tasks["test"], self.ilf.eval_samples)
        counts = [(len(rec["verdicts"]), sum(v["status"] == "passed" for v in rec["verdicts"])) for rec in s["tasks"]]
        out = {"tasks": len(counts), "samples": sum(n for n, _ in counts), "seconds": s["seconds"]}
        statuses: dict[str, int] = {}
        for rec in s["tasks"]:
            for v in rec["verdicts"]:
                statuses[v["status"]] = statuses.get(v["status"], 0) + 1
        out["statuses"] = statuses
        for k in self.ilf.ks:
            per = [pass_at_k(n, c, k) for n, c in counts]
            out[f"pass@{k}"] = sum(per) / len(per)
            out[f"pass@{k}_ci"] = bootstrap_ci(per, derive_seed(self.cfg.seed, "bootstrap", label, k))
        self.log({"event": "eval", "recipe": label, **{k: v for k, v in out.items() if k.startswith("pass@")}})
        return out

    # -- everything
    def execute(self) -> dict[str, Any]:
        cfg, out = self.cfg, self.out
        from inweights.core.rundir import open_run

        for line in open_run(out, self.resume, dump_config(cfg), same_config):  # checks, the run lock, leftovers
            print(f"resume: {line}")
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        tasks = load_tasks(cfg)
        self.known = {t.id for ts in tasks.values() for t in ts}
        for p in ("refine", "train", "test"):
            if not tasks[p]:
                raise UserError(f"domain.coding: the {p} pool is empty")
        check_pools(cfg, tasks)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_config(cfg))
        (out / "tasks.json").write_text(json.dumps({p: [t.id for t in ts] for p, ts in tasks.items()}) + "\n")
        self.status("running")
        base = self.base_policy(tasks)
        results: dict[str, Any] = {"recipes": {}, "rounds": {}}
        finals: dict[str, Path | str] = {"zero_shot": base}
        want = set(cfg.recipes)
        methods = want & {"ilf", "sft_refinements_no_feedback"} | ({"ilf"} if "sft_gold" in want else set())
        if methods and self.ilf.check_tasks:  # the check compares both refiners
            methods |= {"ilf", "sft_refinements_no_feedback"}
        refiners = self.refiners(base, tasks, methods) if methods else {}
        check = self.feedback_check(refiners, tasks) if refiners else None
        if check is not None:
            results["feedback_check"] = check
        first_round: dict[str, dict] = {}
        for method in ("ilf", "sft_refinements_no_feedback"):
            if method not in methods:
                continue
            policy = base
            for r in range(1, self.ilf.rounds + 1):
                policy, info = self.round(method, r, policy, refiners[method], tasks)
                results["rounds"].setdefault(method, []).append(info)
                if r == 1:
                    first_round[method] = self.cached(f"{method}_r1_refinements")
            finals[method] = policy
        if "sft_gold" in want:
            # the gold solutions of every task ILF kept, over all its rounds
            kept_ids = [k["task_id"] for r in range(1, self.ilf.rounds + 1)
                        for k in (self.cached(f"ilf_r{r}_refinements") or {"items": []})["items"] if k["kept"] is not None]
            by_id = {t.id: t for t in self.train_pool(tasks)}
            failed_ids = [k["task_id"] for k in first_round["ilf"]["items"]] or list(by_id)
            ids = list(dict.fromkeys(kept_ids)) or failed_ids
            recs = [policy_record(by_id[i], completion_of(by_id[i], by_id[i].gold)) for i in ids]
            finals["sft_gold"] = self.finetune("sft_gold", base, recs, tasks)
            results["sft_gold_tasks"] = len(recs)
        results["finetunes"] = {d.name: rec for d in sorted((out / "models").glob("*"))
                                if (rec := self.steps.read(f"model_{d.name}")) is not None}
        for recipe in cfg.recipes:
            results["recipes"][recipe] = self.evaluate(recipe, finals[recipe], tasks)
        results["pools"] = {p: len(ts) for p, ts in tasks.items()}
        if self.prepared:
            results["prepared_base"] = self.prepared
        results["wall_seconds"] = round(time.time() - self.t0, 1)
        results["resumed"] = self.resume  # then wall_seconds is this session's only
        results["feedback_provider"] = cfg.ilf.feedback.provider
        from inweights.core.io import atomic_write
        from inweights.regimes.ilf.report import write_report

        atomic_write(out / "models.json", json.dumps({r: str(Path(p).relative_to(out)) if str(p).startswith(str(out))
                                                      else str(p) for r, p in finals.items()}, indent=1) + "\n")
        summary = write_report(out, cfg, results)
        self.status("finished", wall_seconds=results["wall_seconds"])
        return summary


class _EarlyStop:
    """``train_stage``'s step hook: the greedy pass rate on the validation tasks every ``every`` steps (and at the
    last), the best checkpoint's trainable weights in ``best_path``, a stop after ``patience`` measurements
    without improvement. Resumable (its state rides in the training checkpoint)."""

    def __init__(self, run: ILFRun, tok, tasks: list[CodingTask], every: int, steps: int, patience: int,
                 best_path: Path, name: str):
        self.run, self.tok, self.tasks, self.every, self.steps = run, tok, tasks, every, steps
        self.patience, self.best_path, self.name = patience, best_path, name
        self.curve: list[dict[str, Any]] = []
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad = 0

    def start(self, model) -> None:
        if not self.curve:  # the starting point, for the curve (never chosen: the stage is meant to train)
            self.curve.append({"step": 0, "val_pass": self.run.val_pass(model, self.tok, self.tasks)})

    def __call__(self, step: int, model) -> bool:
        if step % self.every and step != self.steps:
            return False
        score = self.run.val_pass(model, self.tok, self.tasks)
        self.curve.append({"step": step, "val_pass": score})
        self.run.log({"event": "val", "model": self.name, "step": step, "val_pass": score})
        if self.best is None or score > self.best:
            self.best, self.best_step, self.bad = score, step, 0
            torch.save({n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad},
                       self.best_path)
        else:
            self.bad += 1
        return self.bad >= self.patience

    def restore_best(self, model) -> None:
        if self.best_step is not None and self.best_step != self.curve[-1]["step"]:
            model.load_state_dict(torch.load(self.best_path, weights_only=True), strict=False)

    def summary(self) -> dict[str, Any]:
        return {"val_tasks": len(self.tasks), "val_every_steps": self.every, "best_step": self.best_step,
                "best_val_pass": self.best, "curve": self.curve}

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve, "best": self.best, "best_step": self.best_step, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve, self.best, self.best_step, self.bad = state["curve"], state["best"], state["best_step"], state["bad"]


def _slim(v: dict[str, Any]) -> dict[str, Any]:
    """What a step file keeps of a verdict (enough for feedback and for the report)."""
    keep = ("status", "reason", "error_type", "message", "tests_passed", "tests_total")
    return {**{k: v.get(k) for k in keep}, "tests": [{k: t.get(k) for k in ("test", "passed", "actual", "expected")}
                                                     for t in v.get("tests", [])]}


def _request(task: CodingTask, program: str, verdict: dict[str, Any]) -> dict[str, Any]:
    return {"task_id": task.id, "text": task.text, "tests": list(task.judged_tests), "program": program,
            "verdict": verdict, "key": program_key(task.id, program)}


def _slim_request(r: dict[str, Any]) -> dict[str, Any]:
    return {"task_id": r["task_id"], "program": r["program"], "reason": r["verdict"]["reason"]}


def bootstrap_ci(values: list[float], seed: int, n: int = 1000) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean over tasks."""
    if not values:
        return (0.0, 0.0)
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(values) for _ in values) / len(values) for _ in range(n))
    return (means[int(0.025 * n)], means[int(0.975 * n) - 1])


def build_starting_policy(cfg: ExperimentConfig, out_dir: Path, work: Path, command: str) -> dict[str, Any]:
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
    run = ILFRun(cfg, work, None, resume=True)
    tasks = {"prepare": generated_tasks(c.n_prepare, cfg.seed, "prepare", c.n_tests), "refine": [], "train": []}
    model_dir = Path(run.base_policy(tasks))
    specs = [t.meta["spec"] for t in tasks["prepare"]]
    rng = random.Random(derive_seed(cfg.seed, "prepare", "eval"))
    held = [fresh_generated_task(rng, specs, "prepare", c.n_tests) for _ in range(cfg.prepare.eval_programs)]
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


def run_ilf(cfg: ExperimentConfig, out: Path, config_path: Path | None = None, resume: bool = False):
    from inweights.runs import finishing

    run = ILFRun(cfg, out, config_path, resume)
    with finishing(run.run, out, keep=(WaitingForFeedback,)):
        try:
            return run.execute()
        except WaitingForFeedback as e:
            run.status("waiting_for_feedback", pending=str(e.path), programs=e.n)
            raise
