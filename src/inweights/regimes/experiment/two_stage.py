"""Symbolic-to-natural-language curricula (docs/papers.md §3), written down once as data.

All spend the same total steps on training instances: ``two_stage`` (the symbolic representation,
then NL), ``reverse`` (NL, then symbolic), ``nl_only``, ``mixed`` (symbolic and NL in one mixture), and ``ladder``
(the representation ladder: the symbolic form, then templated English in graph order, then NL, so each stage is a
small shift; stage 1's steps are split between the first two rungs).
The objective is the config's ``two_stage.objective``, the symbolic form ``two_stage.symbolic``; a recipe's suffix
overrides either or both, words joined by ``.``: ``two_stage@sft``, ``two_stage@code`` (code, then NL),
``mixed@code.grpo``. With ``two_stage.replay`` > 0 a later stage keeps the earlier stages' representations in its
mixture at that weight (symbolic replay: graph -> NL without erasing graph reading).
"""

from __future__ import annotations

from typing import Any

from inweights.config import MixItem, StageConfig

NAMES = ("two_stage", "reverse", "nl_only", "mixed", "ladder")
OBJECTIVES = ("sft", "grpo")
SYMBOLIC = ("graph", "code")


def parse_suffix(arg: str) -> tuple[str | None, str | None]:
    """``code.sft`` -> (objective, symbolic); a word neither an objective nor a symbolic form raises ValueError."""
    objective = symbolic = None
    for word in arg.split("."):
        if word in OBJECTIVES and objective is None:
            objective = word
        elif word in SYMBOLIC and symbolic is None:
            symbolic = word
        else:
            raise ValueError(f"the suffix names the objective ({', '.join(OBJECTIVES)}) and/or the symbolic form "
                             f"({', '.join(SYMBOLIC)}), each at most once, joined by '.': not '{arg}'")
    return objective, symbolic


def _stage(name: str, steps: int, reps: list[str], objective: str, fmt: str) -> StageConfig:
    mix = [MixItem(view="exec", group="train", representation=r, format=fmt) for r in reps]
    return StageConfig(name=f"{name}_{objective}", steps=steps, mixture=mix, objective=objective)


def _replayed(plan: list[StageConfig], weight: float) -> list[StageConfig]:
    """``two_stage.replay``: every stage after the first also trains the earlier stages' representations."""
    if weight <= 0:
        return plan
    out: list[StageConfig] = []
    earlier: dict[str, str] = {}  # representation -> its answer format, in first-seen order
    for st in plan:
        own = {m.representation for m in st.mixture}
        extra = [MixItem(view="exec", group="train", representation=r, format=f, weight=weight)
                 for r, f in earlier.items() if r not in own]
        out.append(st.model_copy(update={"mixture": [*st.mixture, *extra]}) if extra else st)
        earlier.update({m.representation: m.format for m in st.mixture if m.representation not in earlier})
    return out


def stages(name: str, cfg, suffix: str | None = None) -> list[StageConfig]:
    return _replayed(_plan(name, cfg, suffix), cfg.two_stage.replay)


def _plan(name: str, cfg, suffix: str | None) -> list[StageConfig]:
    t = cfg.two_stage
    objective, symbolic = parse_suffix(suffix) if suffix else (None, None)
    obj, sym, total = objective or t.objective, symbolic or t.symbolic, t.stage1_steps + t.stage2_steps
    if name == "two_stage":
        return [_stage(sym, t.stage1_steps, [sym], obj, t.format), _stage("nl", t.stage2_steps, ["nl"], obj, t.format)]
    if name == "reverse":
        return [_stage("nl", t.stage1_steps, ["nl"], obj, t.format), _stage(sym, t.stage2_steps, [sym], obj, t.format)]
    if name == "nl_only":
        return [_stage("nl", total, ["nl"], obj, t.format)]
    if name == "ladder":
        first = max(t.stage1_steps // 2, 1)
        if first >= t.stage1_steps:
            raise ValueError("the ladder recipe splits stage1_steps between two rungs: set two_stage.stage1_steps >= 2")
        return [_stage(sym, first, [sym], obj, t.format), _stage("template", t.stage1_steps - first, ["template"], obj,
                t.format), _stage("nl", t.stage2_steps, ["nl"], obj, t.format)]
    if name == "mixed":
        return [_stage(f"mixed_{sym}_nl", total, [sym, "nl"], obj, t.format)]
    raise KeyError(name)


RECIPES: dict[str, Any] = {n: (lambda c, _n=n: stages(_n, c)) for n in NAMES}
