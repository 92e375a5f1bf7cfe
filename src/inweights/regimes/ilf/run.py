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
import random
import time
from pathlib import Path
from typing import Any

import torch

from inweights.config import ExperimentConfig, dump_config, same_config
from inweights.core.errors import UserError
from inweights.core.seeds import derive_seed
from inweights.domains.coding import (
    CodingTask,
    program_of,
)
from inweights.domains.coding_styles import loop_code
from inweights.eval.stats import pass_at_k
from inweights.feedback import make_provider
from inweights.regimes.ilf.diagnose import FAILURES, failure_kind, outcome, shares
from inweights.regimes.ilf.policy import PolicyRun
from inweights.regimes.ilf.tasks import (
    _request,
    _slim_request,
    bootstrap_ci,
    check_pools,
    completion_of,
    load_tasks,
    policy_record,
    refine_prompt,
    refine_record,
)


class WaitingForFeedback(Exception):
    """The run needs people's feedback before it can go on (provider ``file``)."""

    def __init__(self, path: Path, n: int):
        super().__init__(f"{n} failing programs need feedback: {path}")
        self.path, self.n = path, n


# ------------------------------------------------------------------------------------------ tasks
class ILFRun(PolicyRun):
    """One ILF run: the refiners, the feedback check, the rounds, the fine-tunes and their evaluation."""

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
        start = self.refiner_start() if self.ilf.refiner_base else base
        if not self.ilf.refiner_steps:  # the prepared refiners' base as it is, for both
            return {m: start for m in methods}
        if "ilf" in methods:
            out["ilf"] = self.train("refiner_feedback", start, with_fb, self.ilf.refiner_steps, None)
        if "sft_refinements_no_feedback" in methods:
            out["sft_refinements_no_feedback"] = self.train("refiner_no_feedback", start, without,
                                                            self.ilf.refiner_steps, None)
        return out

    def refiner_start(self) -> Path:
        """The refiners' prepared base (``ilf.refiner_base``), built once when missing."""
        from inweights.regimes.ilf.refiner_base import build_refiner_base, resolve_refiner_base

        folder, rec = resolve_refiner_base(self.cfg, self.config_path, build_refiner_base)
        self.refiner_prepared = {k: rec.get(k) for k in ("name", "seed", "steps", "with_feedback", "shuffled_feedback",
                                                         "without_feedback", "family", "weights_sha256")}
        return folder

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
        by_id = {t.id: t for t in check}
        step = self.cached("refine_pool_feedback")
        items = [(by_id[r["task_id"]], r["program"], f) for r, f in zip(step["requests"], step["feedback"])
                 if r["task_id"] in by_id and f is not None]
        if len({t.id for t, _, _ in items}) < 2:
            return None
        old = {(rec["task_id"], p): v for rec in self.cached("refine_pool_samples")["tasks"]
               for p, v in zip(rec["programs"], rec["verdicts"])}
        hit = self.cached("feedback_check")
        if hit is None:
            rng = random.Random(derive_seed(self.cfg.seed, "ilf", "feedback_check", "shuffle"))
            shuffled = []
            for t, _, _ in items:
                others = [f for u, _, f in items if u.id != t.id]
                shuffled.append(rng.choice(others))
            conds = {"real": ("ilf", [refine_prompt(t, p, f) for t, p, f in items]),
                     "shuffled": ("ilf", [refine_prompt(t, p, g) for (t, p, _), g in zip(items, shuffled)]),
                     "none": ("sft_refinements_no_feedback", [refine_prompt(t, p, None) for t, p, _ in items])}
            hit = {"programs": len(items), "tasks": len({t.id for t, _, _ in items}), "conditions": {},
                   "outcomes": {}, "prompt_tokens": {}}
            t0 = time.time()
            for cond, (which, prompts) in conds.items():
                texts = self.sample(refiners[which], prompts, self.ilf.refine_samples, f"check_{cond}")
                cand = [[program_of(t, x) for x in xs] for (t, _, _), xs in zip(items, texts)]
                verdicts = self.judge([t for t, _, _ in items], cand)
                hit["conditions"][cond] = [sum(v["status"] == "passed" for v in vs) / len(vs) for vs in verdicts]
                hit["outcomes"][cond] = [[outcome(p, old[(t.id, p)], c, v) for c, v in zip(cs, vs)]
                                         for (t, p, _), cs, vs in zip(items, cand, verdicts)]
                hit["prompt_tokens"][cond] = self.prompt_tokens(refiners[which], prompts)
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
        # where the feedback helps: the rates by how the old program failed (diagnose.FAILURES)
        kinds = [failure_kind(old[(t.id, p)], len(t.tests)) for t, p, _ in items]
        out["by_failure"] = {k: {"programs": kinds.count(k), **{c: sum(v for v, x in zip(vals, kinds) if x == k)
                                                                 / kinds.count(k) for c, vals in per.items()}}
                             for k in FAILURES if k in kinds}
        if hit.get("outcomes"):  # what the refinements did (diagnose.py); absent from checks cached before it
            out["outcomes"] = {c: shares(v) for c, v in hit["outcomes"].items()}
            out["prompt_tokens"] = hit["prompt_tokens"]
        self.log({"event": "feedback_check", **{k: v for k, v in out.items()}})
        if not out["informative"]:
            r, sh, no = (100 * out[c]["rate"] for c in ("real", "shuffled", "none"))
            print(f"warning: feedback check: refinements with real feedback pass {r:.1f}% against {sh:.1f}% with "
                  f"shuffled feedback and {no:.1f}% without — real feedback is not clearly better (a 95% CI of the "
                  f"paired differences reaches 0 or below; steps/feedback_check.json)")
        return out

    def prompt_tokens(self, model_dir, prompts: list[str]) -> dict[str, float]:
        """The refiner prompts' lengths in the model's tokens (without the chat template), and the share longer than
        the context less the tokens generated (``train.max_len`` - ``ilf.max_new_tokens``)."""
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        n = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        room = self.cfg.train.max_len - self.ilf.max_new_tokens
        return {"mean": sum(n) / len(n), "max": max(n), "over_room": sum(x > room for x in n) / len(n),
                "room": room}

    def round(self, method: str, r: int, policy, refiner, tasks, base=None) -> tuple[Path, dict[str, Any]]:
        """One ILF round with this refiner: sample, keep failed tasks, feedback, refine, filter, fine-tune (from
        ``policy``, or from ``base`` on every round's kept refinements so far: ``ilf.round_start``)."""
        pool = self.train_pool(tasks)
        name = f"{method}_r{r}"
        # round 1 samples pi_0 for both methods: one sampling, shared
        s = self.sample_and_judge(f"policy_r{r}" if r == 1 else f"{name}_policy", policy, pool, self.ilf.n_samples)
        failed = [(t, rec) for t, rec in zip(pool, s["tasks"]) if not any(v["status"] == "passed" for v in rec["verdicts"])]
        refined = to_refine(pool, s["tasks"], self.ilf.refine_tasks)
        requests = [_request(t, prog, v) for t, prog, v in refined]
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
            asked = [(t, req, f) for (t, _, _), req, f in zip(refined, requests, fbs) if f is not None or not use_fb]
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
            step = {"tasks": len(pool), "failed_tasks": len(failed), "refined_tasks": len(refined), "refined": len(asked),
                    "refinements": sum(len(k["refinements"]) for k in kept),
                    "passing_refinements": sum(s == "passed" for k in kept for s in k["statuses"]),
                    "kept": sum(k["kept"] is not None for k in kept), "items": kept,
                    "seconds": round(time.time() - t0, 1)}
            self.save_step(f"{name}_refinements", step)
        by_id = {t.id: t for t in pool}
        summary = {k: step[k] for k in ("tasks", "failed_tasks", "refined", "refinements",
                                        "passing_refinements", "kept")}
        summary["policy_pass_any"] = summary["tasks"] - summary["failed_tasks"]
        start, items = policy, step["items"]
        if self.ilf.round_start == "base" and base is not None:
            start = base
            items = kept_union([self.cached(f"{method}_r{i}_refinements")["items"] for i in range(1, r + 1)])
            summary["trained_on"] = len(items)
            if r > 1 and not step["kept"]:  # nothing new: the same union as the round before, the same policy
                self.log({"event": "round", "method": method, "round": r, **summary})
                return Path(policy), {**summary, "trained": False}
        records = [policy_record(by_id[k["task_id"]], completion_of(by_id[k["task_id"]], k["kept"]))
                   for k in items if k["kept"] is not None]
        self.log({"event": "round", "method": method, "round": r, **summary})
        if not records:
            return Path(policy), {**summary, "trained": False}
        return self.finetune(name, start, records, tasks), {**summary, "trained": True}

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

    def policy_loss(self, base, gold: list[dict[str, Any]], by_id: dict[str, CodingTask]) -> dict[str, Any]:
        """The starting policy's loss (nats/token) on what gold SFT trains on and on ILF's kept refinements of the same
        tasks (the first kept per task over all rounds): the paper's reason ILF can beat gold is that refinements lie
        nearer the policy's own distribution than human-written gold. Cached."""
        hit = self.cached("policy_loss")
        if hit is None:
            ilf = kept_union([(self.cached(f"ilf_r{r}_refinements") or {"items": []})["items"]
                              for r in range(1, self.ilf.rounds + 1)])
            refined = [policy_record(by_id[k["task_id"]], completion_of(by_id[k["task_id"]], k["kept"])) for k in ilf]
            hit = {"gold_style": self.ilf.gold_style, "tasks": len(gold), "gold": self.loss_on(base, gold)}
            if refined:
                hit |= {"ilf_refinements": self.loss_on(base, refined), "ilf_tasks": len(refined)}
            self.save_step("policy_loss", hit)
        self.log({"event": "policy_loss", **hit})
        return hit

    def evaluate(self, label: str, model_dir, tasks) -> dict[str, Any]:
        s = self.sample_and_judge(f"eval_{label}", model_dir, tasks["test"], self.ilf.eval_samples)
        counts = [(len(rec["verdicts"]), sum(v["status"] == "passed" for v in rec["verdicts"])) for rec in s["tasks"]]
        out = {"tasks": len(counts), "samples": sum(n for n, _ in counts), "seconds": s["seconds"],
               "per_task": [[n, c] for n, c in counts]}  # (samples, passed) per test task: pooling seeds needs them
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
        # the methods whose rounds run (sft_gold trains on what ILF kept), and the refiners: both whenever the
        # feedback check is on, so `recipes: [zero_shot]` with `ilf.check_tasks` measures the refiner rung alone
        methods = want & {"ilf", "sft_refinements_no_feedback"} | ({"ilf"} if "sft_gold" in want else set())
        refiner_methods = methods | ({"ilf", "sft_refinements_no_feedback"} if self.ilf.check_tasks else set())
        refiners = self.refiners(base, tasks, refiner_methods) if refiner_methods else {}
        check = self.feedback_check(refiners, tasks) if refiners else None
        if check is not None:
            results["feedback_check"] = check
        first_round: dict[str, dict] = {}
        for method in ("ilf", "sft_refinements_no_feedback"):
            if method not in methods:
                continue
            policy = base
            for r in range(1, self.ilf.rounds + 1):
                policy, info = self.round(method, r, policy, refiners[method], tasks, base)
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
            recs = [policy_record(by_id[i], completion_of(by_id[i], gold_program(by_id[i], self.ilf.gold_style)))
                    for i in ids]
            finals["sft_gold"] = self.finetune("sft_gold", base, recs, tasks)
            results["sft_gold_tasks"] = len(recs)
            results["policy_loss"] = self.policy_loss(base, recs, by_id)
        results["finetunes"] = {d.name: rec for d in sorted((out / "models").glob("*"))
                                if (rec := self.steps.read(f"model_{d.name}")) is not None}
        for recipe in cfg.recipes:
            results["recipes"][recipe] = self.evaluate(recipe, finals[recipe], tasks)
        results["pools"] = {p: len(ts) for p, ts in tasks.items()}
        if self.prepared:
            results["prepared_base"] = self.prepared
        if self.refiner_prepared:
            results["refiner_base"] = self.refiner_prepared
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


def to_refine(pool: list[CodingTask], recs: list[dict[str, Any]], which: str) -> list[tuple[CodingTask, str, dict]]:
    """The (task, program, verdict) a round refines: each task's first failing sample, for the tasks no sample
    solved (``all_failed``) or any sample failed (``any_failed``)."""
    out = []
    for t, rec in zip(pool, recs):
        passed = [v["status"] == "passed" for v in rec["verdicts"]]
        if all(passed) or (which == "all_failed" and any(passed)):
            continue
        i = passed.index(False)
        out.append((t, rec["programs"][i], rec["verdicts"][i]))
    return out


def gold_program(task: CodingTask, style: str) -> str:
    """The program sft_gold trains on for ``task``: its own gold, or (``loop``) the same function as an explicit loop."""
    if style == "family":
        return task.gold
    if "spec" not in task.meta:
        raise UserError(f"ilf.gold_style {style}: only generated tasks can be rewritten ({task.id} is from {task.source})")
    return loop_code(task.meta["spec"], task.entry_point)


def kept_union(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The kept refinements of several rounds' items, one per task: the first round's that kept one."""
    seen: dict[str, dict[str, Any]] = {}
    for items in rounds:
        for k in items:
            if k["kept"] is not None:
                seen.setdefault(k["task_id"], k)
    return list(seen.values())


def run_ilf(cfg: ExperimentConfig, out: Path, config_path: Path | None = None, resume: bool = False):
    from inweights.runs import finishing

    run = ILFRun(cfg, out, config_path, resume)
    with finishing(run.run, out, keep=(WaitingForFeedback,)):
        try:
            return run.execute()
        except WaitingForFeedback as e:
            run.status("waiting_for_feedback", pending=str(e.path), programs=e.n)
            raise
