"""ILF's tasks and records: the four pools (prepare, refine, train, test) from MBPP / HumanEval or the generated
family, the policy's and the refiner's training records, what a step keeps of a verdict and of a feedback request,
and the bootstrap interval over tasks."""

from __future__ import annotations

from typing import Any

from inweights.config import ExperimentConfig
from inweights.core.errors import UserError
from inweights.domains.coding import CodingTask, generated_tasks, prompt, read_humaneval, read_mbpp
from inweights.eval.stats import bootstrap_ci  # noqa: F401 - the regime's modules import it from here
from inweights.feedback import program_key

POOLS = ("prepare", "refine", "train", "test")


def load_tasks(cfg: ExperimentConfig, quiet: bool = False) -> dict[str, list[CodingTask]]:
    c = cfg.domain.section()
    if c.source == "generated":
        # what the experiment's tasks compute never appears among the starting policy's training tasks: the
        # prepare pool draws from the preparation's share of the functions, the others from the rest
        out = {p: generated_tasks(n, cfg.seed, p, c.n_tests, family=c.family)
               for p, n in (("refine", c.n_refine), ("train", c.n_train), ("test", c.n_test))}
        out["prepare"] = (generated_tasks(c.n_prepare, cfg.seed, "prepare", c.n_tests, family=c.prepare_family)
                          if c.n_prepare else [])
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


