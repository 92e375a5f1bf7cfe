"""One-line verdicts for a report's opening: each comparison the regime exists to make, said plainly.

A verdict reads a difference only where the intervals allow it: "above" needs the 95% intervals disjoint (or a
paired difference's interval above 0); a score whose interval reaches chance shows no effect at all, whatever
it is compared with.
"""

from __future__ import annotations


def _p(x: float) -> str:
    return f"{100 * x:.1f}"


def _ci(ci: tuple[float, float] | list[float]) -> str:
    return f"[{100 * ci[0]:.0f}–{100 * ci[1]:.0f}]"


def compare(label: str, a_name: str, a: float, a_ci, b_name: str, b: float, b_ci, *, chance: float | None = None,
            diff_ci=None) -> str:
    """``- **label**: A x [lo–hi] vs B y [lo–hi]: <verdict>.`` ``diff_ci``: a paired difference's interval (A − B),
    used instead of comparing the two intervals."""
    head = f"- **{label}**: {a_name} {_p(a)}% {_ci(a_ci)} vs {b_name} {_p(b)}% {_ci(b_ci)}"
    if chance is not None and a_ci[0] <= chance + 1e-12:
        return f"{head}: **no effect** — {a_name}'s interval reaches chance ({_p(chance)}%), so nothing can be read."
    if diff_ci is not None:
        lo, hi = diff_ci
        where = f"paired difference {_p(a - b)} points, 95% CI [{_p(lo)}, {_p(hi)}]"
        if lo > 0:
            return f"{head}: **{a_name} is above** ({where})."
        if hi < 0:
            return f"{head}: **{a_name} is below** ({where})."
        return f"{head}: **no difference resolved** ({where})."
    if a_ci[0] > b_ci[1]:
        return f"{head}: **{a_name} is above** (the intervals do not overlap)."
    if a_ci[1] < b_ci[0]:
        return f"{head}: **{a_name} is below** (the intervals do not overlap)."
    return f"{head}: **no difference resolved** (the intervals overlap)."


def against_chance(label: str, name: str, a: float, a_ci, chance: float) -> str:
    head = f"- **{label}**: {name} {_p(a)}% {_ci(a_ci)}, chance {_p(chance)}%"
    if a_ci[0] > chance:
        return f"{head}: **above chance**."
    return f"{head}: **at chance** (its interval reaches chance)."
