"""Wrong programs for generated coding tasks: the gold program with one part of what it computes changed.

A refiner learns from (task, wrong program, feedback, fix) — ILF's refinement data (docs/papers.md §4). Each bug
is one change to the task's spec, rendered as the family renders it:

- ``edge_missed`` (``edge`` family): the one-line ``lists`` program, which returns the aggregate's own empty value
  (0) where the task wants its hidden answer — the starting policy's own mistake on that family;
- ``edge_answer`` (``edge`` family): the edge form with another of its answers;
- ``constant``: a constant one higher or lower; ``filter``: the opposite filter (greater / less, even / odd);
  ``transform``: another arithmetic transform; ``aggregate``: another aggregate;
- ``name`` (only when asked for: ``ALL_KINDS``): the gold program under a near name, one or two of its syllables
  changed — the starting policy's commonest failure (it mis-copies the fresh name it is asked for: ``zebace`` for
  ``zeguce``), whose test feedback (``NameError: name 'zeguce' is not defined``) names the fix.

Whether a bug is wrong on the task's tests is for the sandbox to say (``verdict``): a change can be invisible to
three tests. The edge bugs are the ones only feedback can fix — the statement never says the hidden answer.
"""

from __future__ import annotations

import random
from typing import Any

from inweights.domains.coding import AGGREGATES, EDGE_SETS, SYLLABLES, CodingTask, generated_code

KINDS = ("edge_missed", "edge_answer", "constant", "filter", "transform", "aggregate")  # the default draw
ALL_KINDS = (*KINDS, "name")
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
        s.pop("edge_set", None)
    elif kind == "edge_answer":
        s["edge"] = rng.choice([a for a in EDGE_SETS[spec.get("edge_set", "edge")] if a != spec["edge"]])
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


def near_name(name: str, rng: random.Random) -> str:
    """``name`` (fresh names are three two-letter syllables) with one or two syllables replaced by others."""
    syl = [name[i:i + 2] for i in range(0, len(name), 2)]
    for i in rng.sample(range(len(syl)), min(len(syl), rng.choice((1, 2)))):
        syl[i] = rng.choice([s for s in SYLLABLES if s != syl[i]])
    return "".join(syl)


def buggy(task: CodingTask, rng: random.Random, kinds: tuple[str, ...] = KINDS) -> tuple[str, str] | None:
    """(kind, wrong program) for a generated task, the kind drawn among those it admits and ``kinds`` allows;
    None when it admits none of them."""
    spec = task.meta["spec"]
    allowed = [k for k in bug_kinds(spec) if k in kinds] + (["name"] if "name" in kinds else [])
    if not allowed:
        return None
    kind = rng.choice(allowed)
    if kind == "name":
        return kind, generated_code(spec, near_name(task.entry_point, rng))
    return kind, generated_code(buggy_spec(spec, kind, rng), task.entry_point)
