"""The stage language every regime shares: a stage (``StageConfig``) trains a mixture of views of groups of units
(``MixItem``), may run until a measurement reaches a value (``GateConfig``), with an objective (``sft``, or
``grpo`` with its ``GRPOConfig``). ``inweights.config`` re-exports all of them; this module sits below the
config and the regimes' sections (the ``pbb`` section names a stage-1 gate), so both can read it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from inweights.core.schema import Strict

ViewName = Literal["decl", "exec", "in_context", "demos"]
# "fresh": a new preparation-pool unit every example (names disjoint from the experiment's; in_context view only):
# replay of the generic in-context skill rather than of the experiment's own units
GroupName = Literal["with_io", "without_io", "composed", "train", "test", "all", "fresh"]


class MixItem(Strict):
    """One component of a stage's mixture: a view of a group of units, in some answer format."""

    view: ViewName
    group: GroupName
    format: Literal["direct", "cot", "both"] = "both"
    weight: float = Field(1.0, gt=0)
    k: int | None = Field(None, gt=0)  # demos: execution examples per unit
    # demos: draw this fraction of the pool from the units sharing the most common first statement
    # (e.g. one cipher shift), the rest from the others (ablation (c): skewed demonstrations)
    skew: float | None = Field(None, ge=0, le=1)
    # planning: the representation the instances are shown in (nl, graph, code); None = any of the unit's
    representation: Literal["nl", "template", "graph", "code"] | None = None

    @model_validator(mode="after")
    def _fresh_is_in_context(self) -> MixItem:
        if self.group == "fresh" and self.view != "in_context":
            raise ValueError("group fresh (a new preparation-pool unit every example) goes with view in_context")
        return self


class GateConfig(Strict):
    """A stage that runs until a measurement reaches ``value``: every ``every`` steps the stage's model answers
    in-weights (or in-context) probes of ``group`` on the units' *validation* inputs (never test inputs), and the
    stage stops once the accuracy reaches ``value``; its ``steps`` are then the cap (the LR schedule is laid out
    over them). The curve and whether the value was reached are recorded and reported."""

    group: Literal["with_io", "without_io"] = "with_io"
    mode: Literal["in_weights", "in_context"] = "in_weights"
    format: Literal["direct", "cot"] = "cot"
    value: float = Field(gt=0, le=1)
    every: int = Field(100, gt=0)
    max_probes: int = Field(100, gt=0)


class StageConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    steps: int = Field(gt=0)
    mixture: list[MixItem] = Field(min_length=1)
    # sft: cross-entropy on the mixture's targets; grpo: the mixture's prompts, rewarded by the unit's scorer
    objective: Literal["sft", "grpo"] = "sft"
    lr: float | None = Field(None, gt=0)
    gate: GateConfig | None = None
    # what the stage trains: every weight, or only the embedding rows of the units' name tokens (needs
    # model.name_tokens): the network stays as it was and each new program is stored on its name's vector
    trainable: Literal["all", "names"] = "all"

    @model_validator(mode="after")
    def _grpo_views(self) -> StageConfig:
        if self.objective == "grpo":
            bad = [m.view for m in self.mixture if m.view not in ("exec", "in_context")]
            if bad:
                raise ValueError(f"stage {self.name}: a grpo stage needs prompts with a scorer (exec or in_context "
                                 f"views), not {bad[0]}")
        return self


class GRPOConfig(Strict):
    """Group-relative policy optimisation (Shao et al. 2024), the objective of ``grpo`` stages.

    Each step draws ``prompts_per_step`` prompts from the stage's mixture, samples ``group_size``
    completions of each with the policy, scores them with the unit's scorer (1 = correct), and takes
    ``iterations`` optimiser steps on the clipped-ratio objective with advantages normalised within each
    group (a group whose rewards are all equal contributes nothing), plus ``beta`` x the k3 estimate of
    KL(policy || reference), the reference being the stage's starting model.
    """

    group_size: int = Field(8, ge=2)
    prompts_per_step: int = Field(4, gt=0)
    max_completion_length: int = Field(160, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    clip_eps: float = Field(0.2, gt=0)
    clip_eps_high: float | None = Field(None, gt=0)  # DAPO's asymmetric upper clip; None = clip_eps
    beta: float = Field(0.0, ge=0)  # KL weight (the planning paper: 0.01)
    iterations: int = Field(1, gt=0)  # optimiser steps per generated batch (ratio != 1 from the second on)
    scale_rewards: bool = True  # divide by the group's reward std (Dr. GRPO: False)
    # grpo: mean over each completion's tokens, then over completions; dapo: mean over all tokens of the batch
    loss_type: Literal["grpo", "dapo"] = "grpo"
    micro_batch: int = Field(16, gt=0)  # completions per forward pass
    lr: float | None = Field(None, gt=0)  # default: the stage's lr, else train.lr
    # DAPO's dynamic sampling: groups whose rewards all agree (no signal) are dropped and more prompts drawn, up to
    # ``max_draws`` draws of ``prompts_per_step`` per step; the step trains on the groups that carry signal
    dynamic_sampling: bool = False
    max_draws: int = Field(3, gt=0)
    # an SFT warm-up where the starting policy is below a floor: its greedy reward on ``floor_probes`` of the
    # stage's (training) prompts is measured first, and under ``warmup_floor`` the stage begins with
    # ``sft_warmup_steps`` SFT steps on the same mixture (0 = never)
    sft_warmup_steps: int = Field(0, ge=0)
    warmup_floor: float = Field(0.1, ge=0, le=1)
    floor_probes: int = Field(32, gt=0)
