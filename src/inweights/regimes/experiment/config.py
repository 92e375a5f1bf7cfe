"""The experiment regime's sections of the config: ``pbb`` (the PBB recipes' step counts and mixtures),
``two_stage`` (the symbolic -> natural-language curricula) and ``sweep`` (the sample-efficiency sweep). Its recipe
names are the curricula's own (``pbb.RECIPES``, ``two_stage.RECIPES``, and the config's ``curricula:``); the
domain says which it runs by default (``Domain.default_recipes``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from inweights.core.schema import Strict
from inweights.sections import GateConfig

# the recipes a config of this regime runs when it names none: the domain's (None)
DEFAULT_RECIPES: tuple[str, ...] | None = None


class PBBConfig(Strict):
    """Step counts and mixtures the PBB recipes are written with."""

    stage1_steps: int = Field(600, gt=0)
    stage2_steps: int = Field(300, gt=0)
    mixture_steps: int | None = Field(None, gt=0)  # default: stage1 + stage2
    decl_weight: float = Field(1.0, gt=0)
    exec_weight: float = Field(1.0, gt=0)
    replay_weight: float = Field(0.2, ge=0)  # generic in-context samples in stage 2 (format upkeep)
    # whose in-context examples are replayed: the experiment's with_io programs, or a fresh preparation-pool
    # program every example (the skill as the prepared base learned it, on code the experiment never trains)
    replay_group: Literal["with_io", "fresh"] = "with_io"
    composed_weight: float = Field(0.0, ge=0)  # stage 2 also reads the composed functions' definitions
    demos_k: int = Field(10, gt=0)
    demos_steps: int | None = Field(None, gt=0)  # default: stage2_steps
    rl_steps: int = Field(60, gt=0)  # retroactive_grpo's stage 2 (GRPO steps; see the grpo section)
    rl_format: Literal["direct", "cot", "both"] = "cot"
    # stage 1 (decl + exec of with_io) may run until a validation measurement reaches a value; stage1_steps is
    # then its cap. Recipes sharing stage 1 share the gated stage.
    stage1_gate: GateConfig | None = None
    # stage 2 replay (issue 14, lever d): with_io executions and documents besides the in-context samples, so
    # stage 2 does not erase what stage 1 taught; stage2_lr: a lower LR for stage 2 (None = train.lr)
    replay_exec_weight: float = Field(0.0, ge=0)
    replay_decl_weight: float = Field(0.0, ge=0)
    stage2_lr: float | None = Field(None, gt=0)
    # retroactive: the steps of its first stage (documents of every program; default stage2_steps). It stores three
    # times the documents proactive's stage 2 does, with no executions repeating their statements
    retro_decl_steps: int | None = Field(None, gt=0)
    # stage 2 of proactive and stage2_only trains only the name tokens' embeddings (model.name_tokens)
    stage2_trainable: Literal["all", "names"] = "all"
    # lever b2 (keep the in-context skill): every stage of every recipe also trains in-context with_io
    # examples at replay_weight (by default only stage 2 does; stage 1 alone erased the prepared skill)
    replay_all_stages: bool = False

    @model_validator(mode="after")
    def _replay_needs_a_weight(self) -> PBBConfig:
        if self.replay_all_stages and self.replay_weight <= 0:
            raise ValueError("pbb.replay_all_stages needs pbb.replay_weight > 0 (the weight of the replayed examples)")
        return self


class TwoStageConfig(Strict):
    """The symbolic-to-natural-language curricula (docs/papers.md §3): ``two_stage`` (symbolic, then NL),
    ``reverse`` (NL, then symbolic), ``nl_only`` and ``mixed`` (both in one mixture) for the same total steps.
    A recipe name may carry its objective: ``two_stage@grpo``; without one, ``objective`` applies."""

    symbolic: Literal["graph", "code"] = "graph"
    stage1_steps: int = Field(40, gt=0)
    stage2_steps: int = Field(40, gt=0)
    objective: Literal["sft", "grpo"] = "grpo"
    format: Literal["direct", "cot", "both"] = "cot"
    # replay: a stage that follows another keeps training the earlier stages' representations at this weight
    # (the stage's own at 1), so that e.g. graph -> NL does not erase graph reading; 0 = none (the paper's recipe)
    replay: float = Field(0.0, ge=0)


class SweepConfig(Strict):
    """Sample-efficiency sweep: demos_only at each k, compared with a reference recipe."""

    demos_k: list[int] = Field(min_length=1)
    reference: str = "proactive"
    group: Literal["without_io"] = "without_io"
    format: Literal["direct", "cot"] = "cot"
