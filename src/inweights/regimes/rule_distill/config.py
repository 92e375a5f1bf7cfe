"""The rule-distillation regime's section of the config (``distill``) and its recipe names."""

from __future__ import annotations

from pydantic import Field, model_validator

from inweights.core.schema import Strict

PAPER_RECIPES = ("in_context", "sft_without_rule", "sft_with_rule", "rule_distill_base", "rule_distill_enhanced")
RECIPES = (*PAPER_RECIPES, "rule_distill_transfer")  # + the transfer set (distill.transfer_inputs)
DEFAULT_RECIPES = PAPER_RECIPES  # what a config of this regime runs when it names none


class DistillConfig(Strict):
    """Rule distillation (docs/papers.md §2): k examples, a teacher that reads the rule, a student that does not.

    Loss on answer positions only (shifted so the first answer token counts): tau^2 x forward
    KL(p_teacher || p_student) at temperature tau over the whole vocabulary, + beta x the squared distance
    between L2-normalised hidden states of ``layers`` (default: every layer but the last), + ce_weight x
    cross-entropy on the gold answer. The paper's beta = 10,000 multiplies a mean over a 4096-wide hidden
    state; ours is a sum over the hidden size (2 - 2 cos), so beta ~ 10,000 / 4096 is the same weight.
    """

    ks: list[int] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    epochs: int = Field(20, gt=0)
    batch_size: int = Field(4, gt=0)
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(5, ge=0)
    tau: float = Field(1.0, gt=0)
    beta: float = Field(2.5, ge=0)
    ce_weight: float = Field(0.0, ge=0)
    layers: list[int] | None = None  # hidden-state layers (1 = first block's output); None = all but the last
    teacher_examples: int = Field(0, ge=0)  # worked examples in the teacher's prompt (the paper: 3)
    teacher_epochs: int | None = Field(None, gt=0)  # enhanced teacher's SFT with the rule; default: epochs
    teacher_path: str | None = None  # a separate teacher model folder instead of the base (or its adapter-off self)
    n_eval: int | None = Field(None, gt=0)  # test inputs per split (default: all of the domain's)
    # the transfer set (recipe rule_distill_transfer): this many fresh unlabelled in-distribution inputs (never a
    # test input nor one of the k examples' pool), answered by the base reading the rule; the student is distilled
    # on the teacher's own answers to them beside the k gold examples (context distillation, Snell et al. 2022)
    transfer_inputs: int = Field(0, ge=0)
    max_new_tokens: int = Field(16, gt=0)

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if any(k < 1 for k in self.ks):
            raise ValueError("ks must be positive")
        return self
