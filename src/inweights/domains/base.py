"""The unit, the Domain protocol, and the registry of domains.

A domain is one class: it generates (or reads) units — pieces of declarative knowledge with executable
meaning — renders them, computes their answers by real execution and scores predictions. It subclasses
``Domain``, names its config section (``config_class``, a pydantic model; the experiment config then has
``domain.<name>: {...}``) and is registered with ``@register_domain``. Everything else in the toolkit asks the
domain: no module outside ``inweights.domains`` branches on a domain's name (``tests/test_architecture.py``),
and a domain defined in a test file alone runs end to end (``tests/test_regimes.py``).

The defaults below are what a plain domain needs; each built-in domain overrides what it does differently.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from inweights.core.errors import UserError
from inweights.core.schema import Strict


@dataclass(frozen=True)
class Unit:
    """A program (or grammar, rule, ...) with its pointer, its instruction and its input split.

    ``steps`` is the domain's statement-by-statement semantics, used for chain-of-thought targets; the
    final answer always comes from ``Domain.run`` (real execution), and tests check the two agree.
    """

    id: str
    family: str
    pointer: str  # the name that points to the instruction (a function name)
    instruction: str  # the declarative text (Python source)
    group: str  # "with_io" | "without_io" | "prepare"
    train_inputs: tuple[Any, ...] = ()
    test_inputs: tuple[Any, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def extract_answer(text: str) -> str | None:
    """The text after the last 'Answer:' on its line, or None when the model gave no answer."""
    idx = text.rfind("Answer:")
    if idx < 0:
        return None
    return text[idx + len("Answer:") :].strip().split("\n", 1)[0].strip() or None


class NoSettings(Strict):
    """The config section of a domain that has no settings."""


class Domain:
    """What the toolkit asks of every domain. Required: ``name``, ``build``, ``instruction_text``, ``format_input``,
    ``answer_text``, ``steps``, ``score``, ``chance``, ``decl_templates`` and ``query_templates``; the hooks below
    them have defaults. What only some domains can do (draw fresh units, read listings back, judge by acceptance,
    ...) is a capability the domain declares among its bases (``inweights.domains.capabilities``)."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[Strict]] = NoSettings  # its section: ``domain.<name>`` in the experiment config
    # the regime a config of this domain runs when it names none (``inweights.regimes``)
    default_regime: ClassVar[str] = "experiment"
    default_recipes: ClassVar[tuple[str, ...]] = ("proactive", "stage2_only", "mixture")  # when the config has none
    # the tiny preset's prepared base (a prepare config, see `inweights prepare`) when the config names none;
    # None: random init with a tokenizer trained on the run's own data
    prepared_base: ClassVar[str | None] = None
    unit_noun: ClassVar[str] = "units"  # how reports call the units ("programs", "grammars")
    instruction_noun: ClassVar[str] = "instruction"  # and their declarative text ("code", "rules")
    # the groups a run's summary and an export count (zero included)
    groups: ClassVar[tuple[str, ...]] = ("with_io", "without_io")
    eval_groups: ClassVar[tuple[str, ...]] = ("with_io", "without_io")  # what eval.groups probes when the config is silent
    gate_format: ClassVar[str] = "cot"  # the answer format a preparation gate measures
    answer_template: ClassVar[str] = "Answer: {}"
    decl_templates: ClassVar[list[str]] = []
    query_templates: ClassVar[list[str]] = []

    def __init__(self, cfg: Any, seed: int):
        self.cfg, self.seed = cfg, seed

    # ------------------------------------------------------------------ required
    def build(self) -> list[Unit]:
        raise NotImplementedError

    def instruction_text(self, unit: Unit) -> str:
        raise NotImplementedError

    def format_input(self, unit: Unit, x: Any) -> str:
        raise NotImplementedError

    def answer_text(self, unit: Unit, x: Any) -> str:
        raise NotImplementedError

    def steps(self, unit: Unit, x: Any) -> list[str]:
        raise NotImplementedError

    def score(self, unit: Unit, x: Any, prediction: str | None) -> bool:
        raise NotImplementedError

    def chance(self, unit: Unit) -> float:
        raise NotImplementedError

    # ------------------------------------------------------------------ optional, with defaults
    def recall(self, unit: Unit, output: str) -> float | None:
        """The share of the instruction a chain of thought re-types exactly; None where it does not apply."""
        return None

    def document_text(self, unit: Unit, rng: random.Random) -> str:
        """The body of a document (``decl``) view; programs draw a rendering per occurrence."""
        return self.instruction_text(unit)

    def render(self, unit: Unit, style: str, rng: random.Random | None = None) -> str | None:
        """The instruction as code (``style="code"``) where it is code; None otherwise."""
        return None

    def question(self, unit: Unit, x: Any, rng: random.Random) -> str:
        return rng.choice(self.query_templates).format(name=unit.pointer, input=self.format_input(unit, x))

    def extract_answer(self, text: str) -> str | None:
        """The model's final answer in this domain's layout."""
        return extract_answer(text)

    def why_empty(self, group: str) -> str:
        """Why ``group`` holds no units, ending the one-line error of a recipe stage or an eval group that needs
        some (``group X has no units <this>``)."""
        return "with these domain settings"

    def summary_extras(self, units: list[Unit]) -> dict[str, Any]:
        """What this domain adds to a run's summary (planning: how near each test instance is to training)."""
        return {}

    @classmethod
    def has_validation_inputs(cls, section: Any) -> bool:
        """Whether units carry validation inputs (stage gates measure on them)."""
        return False


DOMAINS: dict[str, type[Domain]] = {}


def register_domain(cls: type[Domain]) -> type[Domain]:
    """Register a domain class under its ``name`` (a class decorator); the config then accepts
    ``domain.name: <name>`` and a ``domain.<name>`` section."""
    if not cls.name or not cls.name.isidentifier():
        raise ValueError(f"a domain's name must be an identifier, got {cls.name!r}")
    if cls.name in ("name", "data_file"):
        raise ValueError(f"'{cls.name}' is a key of the domain section, not a domain name")
    DOMAINS[cls.name] = cls
    return cls


_plugins_loaded = False


def load_domain_plugins() -> None:
    """The domains other installed packages declare (entry-point group ``inweights.domains``, each a ``Domain``
    subclass), registered once per process; the config's domain section calls this before it reads ``DOMAINS``."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from inweights.core.plugins import entry_point_objects

    for where, obj in entry_point_objects("inweights.domains"):
        if not (isinstance(obj, type) and issubclass(obj, Domain)):
            raise UserError(f"entry point {where} (inweights.domains) is not a Domain subclass")
        if DOMAINS.get(obj.name) is not obj:
            register_domain(obj)


def domain_class(name: str) -> type[Domain]:
    if name not in DOMAINS:
        raise UserError(f"domain.name: unknown domain '{name}' (known: {', '.join(sorted(DOMAINS))})")
    return DOMAINS[name]


def make_domain(cfg) -> Domain:
    """The config's domain object (its section of the config, and the run's seed)."""
    return domain_class(cfg.domain.name)(cfg.domain.section(), cfg.seed)
