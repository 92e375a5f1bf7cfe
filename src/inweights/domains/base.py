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
    """What the toolkit asks of a domain. Required: ``name``, ``build``, ``instruction_text``, ``format_input``,
    ``answer_text``, ``steps``, ``score``, ``chance``, ``decl_templates`` and ``query_templates``."""

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
    # how a prediction is judged: "exact" (the answer), or "acceptance" (a generated string the unit's own
    # parser accepts: the report then shows acceptance, diversity and coverage)
    scoring: ClassVar[str] = "exact"
    # the groups a run's summary and an export count (zero included)
    groups: ClassVar[tuple[str, ...]] = ("with_io", "without_io")
    eval_groups: ClassVar[tuple[str, ...]] = ("with_io", "without_io")  # what eval.groups probes when the config is silent
    gate_format: ClassVar[str] = "cot"  # the answer format a preparation gate measures
    answer_template: ClassVar[str] = "Answer: {}"
    # probes report one cell per input kind (planning: each representation of one instance)
    inputs_are_representations: ClassVar[bool] = False
    all_inputs: ClassVar[tuple[Any, ...] | None] = None  # every input a unit has, where there are few
    # preparation: in-context prompts may show other units beside the asked one (prepare.distractors_max)
    distractors: ClassVar[bool] = False
    # drawing a fresh unit is slow (grammars: hundreds of parses to check one), so callers draw a pool once
    fresh_units_slow: ClassVar[bool] = False
    decl_templates: ClassVar[list[str]] = []
    query_templates: ClassVar[list[str]] = []
    # optional capabilities, None where absent: ``parse_listing(output) -> (name, statements)`` reads a chain of
    # thought that re-types a program (extraction probes, recall); ``productions_used(unit, prediction)`` the
    # grammar productions a generated string uses (coverage)
    parse_listing: ClassVar[Any] = None
    productions_used: ClassVar[Any] = None

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

    def fresh_unit(self, rng: random.Random, pool: str = "prepare", taken: set[str] | None = None,
                   n_statements: int | None = None) -> Unit:
        """A new unit outside the experiment's (preparation draws one per example)."""
        raise UserError(f"the {self.name} domain draws no fresh units, which preparation needs")

    def unit_sizes(self) -> tuple[int, int] | None:
        """The range of a unit's size (programs: statements) where ``fresh_unit(n_statements=...)`` lets a
        caller choose it (preparation starts short); None: the domain draws its own."""
        return None

    def pool_unit(self, rng: random.Random, group: str, taken: set[str], uid: str) -> Unit:
        """A unit for a PBB-prepared base's fixed pool (``prepare.pool_programs``)."""
        raise UserError(f"prepare.pool_programs / pool_doc_only: the {self.name} domain has no PBB pool")

    def read_units(self, path) -> list[Unit]:
        """Units from a file written by `inweights data` (``domain.data_file``)."""
        raise UserError(f"domain.data_file: the {self.name} domain reads no units back from a file")

    def release_files(self, units: list[Unit], seed: int, execution) -> dict[str, list[dict[str, Any]]] | None:
        """`inweights data`: the files of this domain's own release layout (name -> records), built with
        ``execution`` (``inweights.views.execution``); None: the PBB layout (units, train views, probes)."""
        return None

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


def domain_class(name: str) -> type[Domain]:
    if name not in DOMAINS:
        raise UserError(f"domain.name: unknown domain '{name}' (known: {', '.join(sorted(DOMAINS))})")
    return DOMAINS[name]


def make_domain(cfg) -> Domain:
    """The config's domain object (its section of the config, and the run's seed)."""
    return domain_class(cfg.domain.name)(cfg.domain.section(), cfg.seed)
