"""The sections of the config every regime shares, below ``inweights.config`` and the regimes' own sections (the
``pbb`` section names a stage-1 gate), so both can read them; ``inweights.config`` re-exports all of them.

The stage language: a stage (``StageConfig``) trains a mixture of views of groups of units (``MixItem``), may run
until a measurement reaches a value (``GateConfig``), with an objective (``sft``, or ``grpo`` with its
``GRPOConfig``). Then evaluation (``EvalConfig``: the probes), preparation (``PrepareConfig``: a prepared base)
and the loader policy for external data files (``DataConfig``)."""

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


class EvalConfig(Strict):
    batch_size: int = Field(128, gt=0)
    max_new_tokens: int = Field(160, gt=0)
    groups: list[Literal["with_io", "without_io", "composed", "test", "val"]] = Field(
        default_factory=lambda: ["with_io", "without_io"])
    modes: list[Literal["in_weights", "in_context"]] = Field(
        default_factory=lambda: ["in_weights", "in_context"]
    )
    formats: list[Literal["direct", "cot"]] = Field(default_factory=lambda: ["direct", "cot"])
    max_units_per_group: int | None = Field(None, gt=0)
    eval_base: bool = True  # also probe the starting model (the prepared base)
    # a prepare config whose base reads each unit in its prompt (in context, chain of thought) on this run's units:
    # a model known to have the skill, whose number should be high — else the probes, not the training, are wrong
    positive_control: str | None = None
    temperature: float = Field(0.0, ge=0)  # 0 = greedy; grammars need sampling to show variety
    top_p: float = Field(1.0, gt=0, le=1)
    # generation engine: transformers (its generate: the reference), lean (eval/decode.py: the same tokens with a
    # preallocated cache and early exit, Llama-family models; others fall back to transformers), vllm (must be
    # installed), auto (vllm when installed and a CUDA GPU is visible, else lean)
    backend: Literal["transformers", "lean", "vllm", "auto"] = "auto"
    # bf16 autocast while generating, where the hardware has native bf16 kernels (as training does; elsewhere it is
    # emulated and slow, so fp32): SmolLM2 greedy evaluation 1.6x faster on an AMX CPU, same answers on 64 probes
    bf16: bool = True
    # extraction diagnostics (programs): with_io in-weights CoT probes on this many *training* inputs per unit
    # (cell with_io/in_weights/cot/train), and one probe per unit that gives only a document's pointer
    # sentence and asks for the document (doc-context recall, vs recall inside a question)
    train_inputs: int = Field(2, ge=0)
    doc_context: bool = True
    # curves: every this many steps of every SFT stage, measured on validation inputs (never test) of up to
    # ``curve_units`` units per group, ``curve_inputs`` inputs each: in-weights and in-context CoT accuracy, and
    # (programs) document recall after the pointer sentence and statements recalled inside a question -- storage
    # and extraction by step, what stage lengths, LR and replay are chosen on (needs domain.programs.n_val_inputs)
    curve_every: int | None = Field(None, gt=0)
    curve_units: int = Field(10, gt=0)
    curve_inputs: int = Field(2, gt=0)


class PrepareConfig(Strict):
    """The preparation stage: in-context execution on fresh programs until a gate is passed."""

    max_steps: int = Field(6000, gt=0)
    eval_every: int = Field(250, gt=0)
    eval_programs: int = Field(200, gt=0)
    gate: float = Field(0.9, gt=0, le=1)
    warmup_statements: int = Field(2, gt=0)  # programs have 1..warmup_statements early on
    warmup_frac: float = Field(0.15, ge=0, lt=1)
    drill_frac: float = Field(0.15, ge=0, lt=1)  # single-statement programs
    # copy drills: "Repeat exactly:" a string of 4-16 distinct random characters, a share of every batch.
    # Copying an unseen string token by token is what an induction head does (find the current token earlier,
    # write what followed it: Olsson et al. 2022), the mechanism an in-context lookup needs; 0 leaves the
    # preparation's data stream as it was
    copy_frac: float = Field(0.0, ge=0, lt=1)
    direct_frac: float = Field(0.3, ge=0, le=1)
    corpus_programs: int = Field(2000, gt=0)  # for training the tokenizer
    # grammars: checking a random grammar takes ~30 ms (hundreds of Earley parses), too slow per example,
    # so training draws from this many fresh grammars (none of them a held-out one), strings redrawn
    pool_units: int = Field(3000, gt=0)
    # warm start from another prepared base (a prepare config path): its weights and tokenizer, e.g. a base
    # that already copies from its prompt; None = random init with a tokenizer trained on this domain
    init_from: str | None = None
    # programs: in-context prompts also show 0..distractors_max other functions; the question's name says
    # which to use (the in-context analogue of extraction: find the named function, re-type it)
    distractors_max: int = Field(0, ge=0, le=6)
    # A "PBB-prepared" base (issue lever b): besides fresh in-context examples, a fixed pool of
    # ``pool_programs`` programs from the preparation names, each trained as documents and executions
    # (PBB's stage 1 on many programs), and ``pool_doc_only`` more seen only as documents, whose in-weights
    # accuracy on held-out inputs is the transfer a later stage 2 relies on (measured at every gate check)
    pool_programs: int = Field(0, ge=0)
    pool_doc_only: int = Field(0, ge=0)
    pool_decl_weight: float = Field(1.0, ge=0)
    pool_exec_weight: float = Field(1.0, ge=0)
    in_context_weight: float = Field(1.0, ge=0)  # fresh in-context examples, when there is a pool
    pool_eval_probes: int = Field(100, gt=0)  # in-weights CoT probes per pool group at each gate check
    # which measurement the gate compares with ``gate``: in-context accuracy on fresh programs, or in-weights
    # CoT accuracy on the pool's held-out inputs (with I/O, or documents only)
    gate_metric: Literal["in_context", "pool_with_io", "pool_doc_only"] = "in_context"


class DataConfig(Strict):
    """The loader policy for external data files (``inweights.core.rejects``): unreadable records are left out and
    reported together (``rejected.jsonl`` beside the run); ``strict: true`` makes any of them an error."""

    strict: bool = False
