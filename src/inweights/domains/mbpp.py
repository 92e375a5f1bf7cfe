"""Real problems with their solutions as a PBB domain (the PBB paper's third code dataset; Leetcode there, MBPP
here, offline): the pointer is the problem statement, the document is the gold solution, and an execution is the
value of one of the task's test calls, computed by running the gold solution in the sandbox.

One file, registered by name (``domain.name: mbpp``) — the proof that a new domain needs no edit elsewhere. On
the CPU it runs, but a tiny model is not expected to show anything on real code; ``configs/gpu/pbb_mbpp.yaml``
is the setting to try on a GPU.

Only values whose text is stable from run to run are kept (numbers, strings, booleans, None, and lists or tuples
of them): a set's or a dict's order depends on string hashing, so its text is not a fixed target. Values longer
than ``max_answer_chars`` are dropped too (the answer is generated token by token).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from pydantic import Field, model_validator

from inweights.core.errors import UserError
from inweights.core.schema import Strict
from inweights.core.seeds import derive_seed
from inweights.domains.base import Domain, Unit, register_domain
from inweights.domains.coding import read_mbpp
from inweights.sandbox import Limits, run_many
from inweights.sandbox.plan import literal, plan_tests, same


class MBPPConfig(Strict):
    """MBPP problems (an MBPP-format JSONL) as PBB units."""

    path: str | None = None  # MBPP-format JSONL (text, code, task_id, test_list)
    task_ids: tuple[int, int] = (1, 1000)
    n_units: int = Field(200, gt=1)  # at most this many problems (in task_id order, after the filters)
    without_io_fraction: float = Field(0.5, gt=0, lt=1)
    max_answer_chars: int = Field(40, gt=0)
    timeout: float = Field(5.0, gt=0)  # seconds per gold solution in the sandbox
    workers: int | None = Field(None, gt=0)  # sandboxes at once (default: CPU count)

    @model_validator(mode="after")
    def _check(self) -> MBPPConfig:
        if self.task_ids[0] > self.task_ids[1]:
            raise ValueError("task_ids: the first id must not exceed the second")
        return self


def stable(value: Any) -> bool:
    """A value whose ``repr`` is the same in every run (no sets or dicts, whose order follows string hashing)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (list, tuple)) and all(stable(v) for v in value)


@register_domain
class MBPPDomain(Domain):
    name = "mbpp"
    config_class = MBPPConfig
    unit_noun = "problems"
    instruction_noun = "code"
    gate_format = "direct"
    decl_templates: ClassVar[list[str]] = ["{name}", "Problem: {name}", "A solution to this problem. {name}"]
    query_templates: ClassVar[list[str]] = ["{name}\nWhat does {input} return?", "Problem: {name}\nEvaluate {input}."]

    def build(self) -> list[Unit]:
        c = self.cfg
        if not c.path:
            raise UserError("domain.mbpp.path: give an MBPP-format JSONL (text, code, task_id, test_list)")
        tasks = read_mbpp(c.path, c.task_ids)
        # the value tests (``assert f(x) == y``) of each task; the gold solution runs them in the sandbox
        calls = {t.id: [s.call for s in plan_tests(t.tests) if s.is_value] for t in tasks}
        tasks = [t for t in tasks if len(calls[t.id]) >= 2]
        verdicts = run_many([t.sandboxed(t.gold, t.tests) for t in tasks],
                            Limits(wall_seconds=c.timeout, cpu_seconds=c.timeout), workers=c.workers)
        kept = []
        for t, v in zip(tasks, verdicts):
            if not v.passed:
                continue  # a gold solution that fails its own tests (or is refused) teaches nothing
            values = {}
            for rec, spec in zip(v.tests, plan_tests(t.tests)):
                ok, value = literal(rec.get("actual", ""))
                if spec.is_value and ok and stable(value) and len(repr(value)) <= c.max_answer_chars:
                    values[spec.call] = repr(value)
            if len(values) >= 2:
                kept.append((t, values))
            if len(kept) == c.n_units:
                break
        if len(kept) < 2:
            raise UserError(f"domain.mbpp: only {len(kept)} problems have two or more checkable test values; "
                            "widen task_ids or raise max_answer_chars")
        rng = random.Random(derive_seed(self.seed, "mbpp", "build"))
        rng.shuffle(kept)
        n_without = max(1, round(len(kept) * c.without_io_fraction))
        units = []
        for i, (t, values) in enumerate(kept):
            inputs = list(values)
            units.append(Unit(id=t.id, family="mbpp", pointer=t.text.strip(), instruction=t.gold.strip(),
                              group="without_io" if i < n_without else "with_io", train_inputs=tuple(inputs[:-1]),
                              test_inputs=tuple(inputs[-1:]), meta={"values": values, "entry_point": t.entry_point}))
        return units

    def instruction_text(self, unit: Unit) -> str:
        return unit.instruction

    def format_input(self, unit: Unit, x: str) -> str:
        return x

    def answer_text(self, unit: Unit, x: str) -> str:
        return unit.meta["values"][x]

    def steps(self, unit: Unit, x: str) -> list[str]:
        return [f"{x} returns {self.answer_text(unit, x)}."]  # no trace of real code: the call and its value

    def score(self, unit: Unit, x: str, prediction: str | None) -> bool:
        """The same value (``[1, 2]`` and ``[1,2]`` agree), else the same text."""
        if prediction is None:
            return False
        gold = self.answer_text(unit, x)
        ok, value = literal(prediction)
        expected = literal(gold)[1]
        return (type(value) is type(expected) and same(value, expected)) if ok else prediction == gold

    def chance(self, unit: Unit) -> float:
        """A guess among True/False for a yes/no function; any other value is one among unboundedly many."""
        return 0.5 if all(v in ("True", "False") for v in unit.meta["values"].values()) else 0.0
