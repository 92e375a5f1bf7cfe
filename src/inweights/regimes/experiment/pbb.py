"""Programming by Backprop curricula (docs/papers.md §1), written down once as data."""

from __future__ import annotations

import re
from typing import Any

from inweights.config import MixItem, StageConfig
from inweights.core.errors import UserError
from inweights.regimes.experiment import two_stage


def _m(view: str, group: str, weight: float = 1.0, fmt: str = "both", k: int | None = None) -> MixItem:
    return MixItem(view=view, group=group, weight=weight, format=fmt, k=k)


def _replayed(c, stage: StageConfig) -> StageConfig:
    """``pbb.replay_all_stages``: the stage also trains in-context with_io examples (if it does not already)."""
    p = c.pbb
    if not p.replay_all_stages or p.replay_weight <= 0 or any(m.view == "in_context" for m in stage.mixture):
        return stage
    return stage.model_copy(update={"mixture": [*stage.mixture, _m("in_context", p.replay_group, p.replay_weight)]})


def _stage1(c) -> StageConfig:
    # decl + exec of with_io, interleaved in one mixture
    p = c.pbb
    return _replayed(c, StageConfig(
        name="s1_decl_exec_with_io",
        steps=p.stage1_steps,
        mixture=[_m("decl", "with_io", p.decl_weight), _m("exec", "with_io", p.exec_weight)],
        gate=p.stage1_gate,
    ))


def _stage2(c, keep_stage1: bool = True) -> StageConfig:
    """Decl of without_io; ``keep_stage1``: also replay stage 1's with_io executions and documents (lever d;
    off for stage2_only, which must not train executions at all)."""
    p = c.pbb
    mix = [_m("decl", "without_io", p.decl_weight)]
    if p.composed_weight > 0:  # ablation (b): the definitions h(x) = g(f(x)) are documents too
        mix.append(_m("decl", "composed", p.composed_weight))
    if p.replay_weight > 0:
        # generic instruction-following samples so the answer format does not drift
        mix.append(_m("in_context", p.replay_group, p.replay_weight))
    if keep_stage1 and p.replay_exec_weight > 0:  # lever d: keep stage 1's executions alive
        mix.append(_m("exec", "with_io", p.replay_exec_weight))
    if keep_stage1 and p.replay_decl_weight > 0:
        mix.append(_m("decl", "with_io", p.replay_decl_weight))
    return StageConfig(name="s2_decl_without_io", steps=p.stage2_steps, mixture=mix, lr=p.stage2_lr,
                       trainable=p.stage2_trainable)


def proactive(c) -> list[StageConfig]:
    return [_stage1(c), _stage2(c)]


def stage1_only(c) -> list[StageConfig]:
    return [_stage1(c)]


def stage2_only(c) -> list[StageConfig]:
    return [_stage2(c, keep_stage1=False)]


def retroactive(c) -> list[StageConfig]:
    """Documents of every program, then executions of with_io. With ``pbb.replay_decl_weight`` its second stage
    replays the first stage's documents too, as proactive's stage 2 replays its stage 1 (lever d), so that neither
    curriculum is read after its second stage erased what its first stored."""
    p = c.pbb
    s1 = StageConfig(name="r1_decl_all", steps=p.retro_decl_steps or p.stage2_steps,
                     mixture=[_m("decl", "all", p.decl_weight)])
    mix2 = [_m("exec", "with_io")]
    if p.replay_decl_weight > 0:
        mix2.append(_m("decl", "all", p.replay_decl_weight))
    s2 = StageConfig(name="r2_exec_with_io", steps=p.stage1_steps, mixture=mix2)
    return [_replayed(c, s1), _replayed(c, s2)]


def retroactive_grpo(c) -> list[StageConfig]:
    """Retroactive with an RL stage 2: GRPO on with_io execution prompts, rewarded by exact-match answers
    (the paper: RL generalises better than SFT here)."""
    p = c.pbb
    s1 = StageConfig(name="r1_decl_all", steps=p.stage2_steps, mixture=[_m("decl", "all", p.decl_weight)])
    s2 = StageConfig(name="r2_grpo_exec_with_io", steps=p.rl_steps, mixture=[_m("exec", "with_io", fmt=p.rl_format)],
                     objective="grpo")
    return [s1, s2]


def mixture(c) -> list[StageConfig]:
    # everything proactive sees, in one homogeneous mixture, for the same total steps
    p = c.pbb
    s1, s2 = _stage1(c), _stage2(c)
    steps = p.mixture_steps or (s1.steps + s2.steps)
    w1, w2 = s1.steps / (s1.steps + s2.steps), s2.steps / (s1.steps + s2.steps)
    mix = [m.model_copy(update={"weight": m.weight * w1}) for m in s1.mixture]
    mix += [m.model_copy(update={"weight": m.weight * w2}) for m in s2.mixture]
    return [StageConfig(name="mix_all", steps=steps, mixture=mix)]


def demos_only(c, k: int | None = None) -> list[StageConfig]:
    p = c.pbb
    k = k or p.demos_k
    return [
        _replayed(c, StageConfig(
            name=f"demos_k{k}",
            steps=p.demos_steps or p.stage2_steps,
            mixture=[_m("demos", "without_io", k=k)],
        ))
    ]


RECIPES: dict[str, Any] = {
    **two_stage.RECIPES,
    "proactive": proactive,
    "retroactive": retroactive,
    "retroactive_grpo": retroactive_grpo,
    "mixture": mixture,
    "stage1_only": stage1_only,
    "stage2_only": stage2_only,
    "demos_only": demos_only,
}


def stages_for(name: str, cfg) -> list[StageConfig]:
    """Stages of a recipe: a user curriculum from the config, or a built-in (``demos_only@k30``)."""
    if name in cfg.curricula:
        return list(cfg.curricula[name])
    base, _, arg = name.partition("@")
    if base == "demos_only" and arg:
        return demos_only(cfg, int(arg.lstrip("k")))
    if base in two_stage.NAMES and arg:
        return two_stage.stages(base, cfg, arg)
    return RECIPES[base](cfg)


def check_recipe_names(cfg) -> None:
    """The experiment regime's recipes: built-in curricula (some with an ``@`` suffix), the config's own
    ``curricula``, each optionally ``:NAME`` (start from the prepared base of configs/NAME.yaml)."""
    def bad(msg: str) -> UserError:
        return UserError(f"config error at recipes: {msg}")

    for r in cfg.recipes:
        r, sep, other = r.partition(":")
        if sep and not re.fullmatch(r"[A-Za-z0-9_.-]+", other):
            raise bad(f"recipe '{r}:{other}': after ':' comes a prepare config's name (configs/NAME.yaml)")
        base, at, arg = r.partition("@")
        if base in two_stage.NAMES and arg:
            try:
                two_stage.parse_suffix(arg)
            except ValueError as e:
                raise bad(f"recipe '{r}': {e}") from None
        if base == "demos_only" and at and not re.fullmatch(r"k?[1-9][0-9]*", arg):
            raise bad(f"recipe '{r}': the suffix is the number of examples per program, e.g. demos_only@k30")
        if at and base not in (*two_stage.NAMES, "demos_only"):
            raise bad(f"recipe '{r}': {base} takes no '@' suffix")
        if base not in RECIPES and r not in cfg.curricula:
            raise bad(f"unknown recipe '{r}' (known: {', '.join(sorted(set(RECIPES) | set(cfg.curricula)))})")
