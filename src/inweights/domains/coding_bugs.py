"""Wrong programs for generated coding tasks: the gold program with one part of what it computes changed.

A refiner learns from (task, wrong program, feedback, fix) — ILF's refinement data (docs/papers.md §4). Each bug
is one change to the task's spec, rendered as the family renders it:

- ``edge_missed`` (``edge`` family): the one-line ``lists`` program, which returns the aggregate's own empty value
  (0) where the task wants its hidden answer — the starting policy's own mistake on that family;
- ``edge_answer`` (``edge`` family): the edge form with another of its answers;
- ``constant``: a constant one higher or lower; ``filter``: the opposite filter (greater / less, even / odd);
  ``transform``: another arithmetic transform; ``aggregate``: another aggregate.

Whether a bug is wrong on the task's tests is for the sandbox to say (``verdict``): a change can be invisible to
three tests. The edge bugs are the ones only feedback can fix — the statement never says the hidden answer.
"""

from __future__ import annotations

import random
from typing import Any

from inweights.domains.coding import AGGREGATES, EDGE_ANSWERS, CodingTask, generated_code

KINDS = ("edge_missed", "edge_answer", "constant", "filter", "transform", "aggregate")
_OPPOSITE = {"gt": "lt", "lt": "gt", "even": "odd", "odd": "even"}


def bug_kinds(spec: dict[str, Any]) -> list[str]:
    """The bugs a spec admits (``KINDS`` order)."""
    out = ["edge_missed", "edge_answer"] if "edge" in spec else []
    if spec["k1"] is not None or spec["k2"] is not None:
        out.append("constant")
    if spec["flt"] in _OPPOSITE:
        out.append("filter")
    return [*out, "transform", "aggregate"]


def buggy_spec(spec: dict[str, Any], kind: str, rng: random.Random) -> dict[str, Any]:
    """``spec`` with the one change ``kind`` names (``edge_missed`` drops the edge answer)."""
    s = dict(spec)
    if kind == "edge_missed":
        s.pop("edge")
    elif kind == "edge_answer":
        s["edge"] = rng.choice([a for a in EDGE_ANSWERS if a != spec["edge"]])
    elif kind == "constant":
        key = rng.choice([k for k in ("k1", "k2") if s[k] is not None])
        s[key] += rng.choice((-1, 1))
    elif kind == "filter":
        s["flt"] = _OPPOSITE[s["flt"]]
    elif kind == "transform":
        s["tr"] = rng.choice([t for t in ("add", "sub", "mul") if t != s["tr"]])
        s["k1"] = s["k1"] if s["k1"] is not None else rng.randint(2, 5)
    elif kind == "aggregate":
        s["agg"] = rng.choice([a for a in sorted(AGGREGATES) if a != s["agg"]])
    else:
        raise ValueError(f"unknown bug kind {kind}: one of {', '.join(KINDS)}")
    return s


def buggy(task: CodingTask, rng: random.Random, kinds: tuple[str, ...] = KINDS) -> tuple[str, str] | None:
    """(kind, wrong program) for a generated task, the kind drawn among those it admits and ``kinds`` allows;
    None when it admits none of them."""
    spec = task.meta["spec"]
    allowed = [k for k in bug_kinds(spec) if k in kinds]
    if not allowed:
        return None
    kind = rng.choice(allowed)
    return kind, generated_code(buggy_spec(spec, kind, rng), task.entry_point)
