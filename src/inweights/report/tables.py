"""Table helpers shared by the reports (PBB's and the planning curricula's): cell formatting and column order."""

from __future__ import annotations

from typing import Any


def _pct(c: dict[str, Any] | None, ci: bool = True) -> str:
    if c is None:
        return "–"
    s = f"{100 * c['acc']:.1f}"
    if ci:
        s += f" [{100 * c['ci95'][0]:.0f}–{100 * c['ci95'][1]:.0f}]"
    return s


def _cells_order(rows: dict[str, dict[str, Any]]) -> list[str]:
    order = []
    for r in rows.values():
        for k in r["cells"]:
            if k not in order:
                order.append(k)
    rank = {"without_io": 0, "with_io": 1, "in_weights": 0, "in_context": 1, "cot": 0, "direct": 1}
    return sorted(order, key=lambda k: tuple(rank.get(p, 9) for p in k.split("/")))
