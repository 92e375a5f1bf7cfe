"""Symbolic-to-natural-language curricula (PAPERS.md §3), written down once as data.

All four spend the same total steps on training instances: ``two_stage`` (the symbolic representation,
then NL), ``reverse`` (NL, then symbolic), ``nl_only`` and ``mixed`` (symbolic and NL in one mixture).
The objective is the config's ``two_stage.objective`` or the recipe's suffix (``two_stage@sft``).
"""

from __future__ import annotations

from typing import Any

from inweights.config import MixItem, StageConfig

NAMES = ("two_stage", "reverse", "nl_only", "mixed")


def _stage(name: str, steps: int, reps: list[str], objective: str, fmt: str) -> StageConfig:
    mix = [MixItem(view="exec", group="train", representation=r, format=fmt) for r in reps]
    return StageConfig(name=f"{name}_{objective}", steps=steps, mixture=mix, objective=objective)


def stages(name: str, cfg, objective: str | None = None) -> list[StageConfig]:
    t = cfg.two_stage
    obj = objective or t.objective
    sym, total = t.symbolic, t.stage1_steps + t.stage2_steps
    if name == "two_stage":
        return [_stage(sym, t.stage1_steps, [sym], obj, t.format), _stage("nl", t.stage2_steps, ["nl"], obj, t.format)]
    if name == "reverse":
        return [_stage("nl", t.stage1_steps, ["nl"], obj, t.format), _stage(sym, t.stage2_steps, [sym], obj, t.format)]
    if name == "nl_only":
        return [_stage("nl", total, ["nl"], obj, t.format)]
    if name == "mixed":
        return [_stage(f"mixed_{sym}_nl", total, [sym, "nl"], obj, t.format)]
    raise KeyError(name)


RECIPES: dict[str, Any] = {n: (lambda c, _n=n: stages(_n, c)) for n in NAMES}
