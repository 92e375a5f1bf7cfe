"""What a refinement did to the program it refined (issue 43: why does the refiner do worse with feedback?).

Each refinement gets one outcome, the first that applies, from its verdict against the old program's:

- ``passes``: every test passes;
- ``unchanged``: the same program as the old one (lines compared without surrounding blank space), still failing;
- ``broke_passing``: a test the old program passed now fails (or nothing runs) — a rewrite of working code;
- ``fixed_named``: the old program's first failing test — the one test-derived feedback names — now passes, but
  another still fails;
- ``no_progress``: none of these: the named test still fails and nothing that worked broke.
"""

from __future__ import annotations

from typing import Any

OUTCOMES = ("passes", "unchanged", "broke_passing", "fixed_named", "no_progress")
# how the refined (old) program failed: every shown test passes and only a hidden one (the ``edge`` family's edge
# case, said by nothing but the feedback) fails; it raised or did not run; a test shown in the prompt fails
FAILURES = ("hidden_only", "error", "wrong_shown")


def _lines(code: str) -> list[str]:
    return [ln.rstrip() for ln in code.strip().splitlines() if ln.strip()]


def _passed(verdict: dict[str, Any]) -> set[int]:
    return {i for i, t in enumerate(verdict.get("tests") or []) if t.get("passed")}


def outcome(old: str, old_verdict: dict[str, Any], new: str, new_verdict: dict[str, Any]) -> str:
    """The refinement's outcome (module docstring), from both programs and both verdicts (``Verdict.to_dict``
    or the step files' slim form: ``status`` and per-test ``passed``)."""
    if new_verdict["status"] == "passed":
        return "passes"
    if _lines(old) == _lines(new):
        return "unchanged"
    before, after = _passed(old_verdict), _passed(new_verdict)
    if before - after:
        return "broke_passing"
    named = next((i for i, t in enumerate(old_verdict.get("tests") or []) if not t.get("passed")), None)
    if named is not None and named in after:
        return "fixed_named"
    return "no_progress"


def failure_kind(old_verdict: dict[str, Any], shown: int) -> str:
    """How the old program failed (``FAILURES``); ``shown``: how many of the judged tests the prompt shows (they
    come first in a verdict's ``tests``)."""
    tests = old_verdict.get("tests") or []
    if len(tests) > shown and all(t.get("passed") for t in tests[:shown]):
        return "hidden_only"
    return "error" if old_verdict.get("status") != "failed" else "wrong_shown"


def shares(outcomes: list[list[str]]) -> dict[str, float]:
    """The share of all refinements (every sample of every program) with each outcome, in ``OUTCOMES`` order."""
    flat = [o for per in outcomes for o in per]
    return {o: (sum(x == o for x in flat) / len(flat) if flat else 0.0) for o in OUTCOMES}
