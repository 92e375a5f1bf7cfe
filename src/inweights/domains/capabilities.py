"""What a domain may do beyond the ``Domain`` protocol: optional capabilities, declared as such.

A capability is a mixin class a domain lists among its bases (``class ProgramsDomain(Domain, FreshUnits,
Listings)``); it names the methods (and class attributes) the domain then provides. The engine asks
``supports(domain, Listings)``, never a domain's name nor a flag that one domain sets, and a caller that
cannot go on without one asks ``need(domain, FreshUnits, "preparation")`` (a one-line ``UserError`` naming the
domain and what needed it). ``capabilities(cls)`` lists what a domain class declares (the docs' table of
domains and ``tests/test_domains_registry.py`` read it).

A new domain declares what it can do and gets the rest of the toolkit for it: declare ``FreshUnits`` and
``inweights prepare`` can build it a prepared base; declare ``Listings`` and its probes measure extraction.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from inweights.core.errors import UserError


class Capability:
    """A capability's marker; ``what`` says in a few words what it gives (used in messages and docs)."""

    what: ClassVar[str] = ""


class FreshUnits(Capability):
    """New units outside the experiment's: preparation draws one per example, ``group: fresh`` replays one."""

    what = "draws fresh units"
    # drawing a fresh unit is slow (grammars: hundreds of parses to check one), so callers draw a pool once
    fresh_units_slow: ClassVar[bool] = False
    # preparation: in-context prompts may show other units beside the asked one (prepare.distractors_max)
    distractors: ClassVar[bool] = False

    def fresh_unit(self, rng: random.Random, pool: str = "prepare", taken: set[str] | None = None,
                   n_statements: int | None = None) -> Any:
        raise NotImplementedError

    def unit_sizes(self) -> tuple[int, int] | None:
        """The range of a unit's size (programs: statements) where ``fresh_unit(n_statements=...)`` lets a
        caller choose it (preparation starts short); None: the domain draws its own."""
        return None


class PBBPool(Capability):
    """A PBB-prepared base's fixed pool of units (``prepare.pool_programs`` / ``pool_doc_only``)."""

    what = "has a PBB pool"

    def pool_unit(self, rng: random.Random, group: str, taken: set[str], uid: str) -> Any:
        raise NotImplementedError


class Listings(Capability):
    """A chain of thought that re-types the instruction (programs): extraction probes, recall by statement,
    the preparation's listing checks."""

    what = "reads listings back"

    def parse_listing(self, output: str) -> tuple[str | None, list[str]]:
        """(the name, the statements) a listing in ``output`` re-types."""
        raise NotImplementedError

    def statements(self, unit) -> list[str]:
        raise NotImplementedError

    def statements_recalled(self, unit, got: list[str], with_return: bool = False) -> float | None:
        raise NotImplementedError

    def statement_chance(self) -> float:
        """The chance of re-typing one statement right by guessing (the floor of recall)."""
        raise NotImplementedError

    def cot_layout(self) -> str:
        """What a chain of thought writes: ``trace`` (the execution), ``recite`` (the listing, then the trace) or
        ``header`` (the name, then the trace)."""
        return "trace"


class Signatures(Capability):
    """What a unit's first step does, whatever its names: skewed demonstrations (``MixItem.skew``)."""

    what = "groups units by signature"

    def signature(self, unit) -> str:
        raise NotImplementedError


class Acceptance(Capability):
    """Predictions are generated strings the unit's own parser accepts or not (grammars): probes and the report
    show acceptance, diversity and production coverage."""

    what = "judges generated strings by acceptance"

    def productions_used(self, unit, prediction: str | None) -> set:
        raise NotImplementedError


class Representations(Capability):
    """One instance in several representations (planning): probes report a cell per representation, and the
    report is the curriculum report (symbolic -> natural language)."""

    what = "shows one instance in several representations"
    all_inputs: ClassVar[tuple[str, ...]] = ()  # the representations, in the order reports list them


class FreshInputs(Capability):
    """Fresh inputs of a unit's rule outside its train and test inputs (rule distillation's transfer set)."""

    what = "draws fresh inputs"

    def draw_input(self, spec: dict[str, Any], rng: random.Random, ood: bool) -> Any:
        raise NotImplementedError


class Hypotheses(Capability):
    """Counts what k examples leave open (rules): how many rules of the unit's family fit them, and how much of a
    test split they reveal (rule distillation's per-cell diagnostics)."""

    what = "counts the hypotheses examples leave open"

    def hypotheses(self, unit, inputs) -> int | None:
        raise NotImplementedError

    def covered(self, unit, test_inputs, seen_inputs) -> float:
        raise NotImplementedError


class UnitFiles(Capability):
    """Units read back from a file written by `inweights data` (``domain.data_file``)."""

    what = "reads units back from a file"

    def read_units(self, path) -> list:
        raise NotImplementedError


class ReleaseLayout(Capability):
    """`inweights data` writes this domain's own release layout instead of the PBB one."""

    what = "has its own release layout"

    def release_files(self, units: list, seed: int, execution) -> dict[str, list[dict[str, Any]]]:
        raise NotImplementedError


CAPABILITIES: tuple[type[Capability], ...] = (FreshUnits, PBBPool, Listings, Signatures, Acceptance, Representations,
                                              FreshInputs, Hypotheses, UnitFiles, ReleaseLayout)


def supports(domain: Any, cap: type[Capability]) -> bool:
    """Whether a domain (an instance or its class) declares ``cap``."""
    cls = domain if isinstance(domain, type) else type(domain)
    return issubclass(cls, cap)


def need(domain: Any, cap: type[Capability], why: str) -> Any:
    """``domain``, where it declares ``cap``; else a one-line ``UserError``: ``<why>: the X domain <lacks it>``."""
    if not supports(domain, cap):
        raise UserError(f"{why}: the {domain.name} domain does not declare {cap.__name__} ({cap.what})")
    return domain


def capabilities(domain: Any) -> list[str]:
    """The names of the capabilities a domain (or its class) declares, in ``CAPABILITIES`` order."""
    return [c.__name__ for c in CAPABILITIES if supports(domain, c)]
