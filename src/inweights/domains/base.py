"""The unit: one piece of declarative knowledge with executable meaning."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
