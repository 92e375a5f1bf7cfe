"""Regimes: what a run does with a config — its checks before work, the run itself, and what it prints after.

One registry, so the command line never names a regime or a domain: ``inweights run`` asks ``regime_of(cfg)``.
A new regime is a class with ``name``, ``check`` and ``run`` passed to ``register`` (a test registers a toy one
from the test file alone). The built-ins wrap the three loops that exist today:

- ``experiment``: PBB curricula and the symbolic → natural-language curricula (``inweights.experiment``);
- ``rule_distill``: rule distillation (``inweights.recipes.rule_distill``);
- ``ilf``: imitation learning from language feedback (``inweights.recipes.ilf``).

``regime:`` in the config picks one; without it the domain's default is used (``config.DEFAULT_REGIME``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from inweights.config import regime_name
from inweights.core.errors import UserError


class RunPaused(Exception):
    """A run that stopped to wait for something outside it (people's feedback): ``message`` says what to do,
    and the command exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 3):
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


class Regime(Protocol):
    name: str

    def check(self, cfg, config_path: Path | None, quiet: bool) -> dict[str, Any]:
        """Everything the run would fail on, found before any work (``UserError``: one line)."""

    def run(self, cfg, out: Path, config_path: Path | None, resume: bool) -> dict[str, Any] | None:
        """The run; its summary (None on a secondary process of a multi-process run)."""


REGIMES: dict[str, Regime] = {}


def register(regime: Regime) -> Regime:
    REGIMES[regime.name] = regime
    return regime


def preflight(cfg, config_path: Path | None, quiet: bool = False) -> dict[str, Any]:
    """Everything ``inweights run`` checks before any work starts; ``inweights validate`` runs the same. Raises
    ``UserError`` (one line) for anything that would fail the run; returns what was measured."""
    if cfg.kind != "experiment":
        return {}
    return regime_of(cfg).check(cfg, config_path, quiet)


def regime_of(cfg) -> Regime:
    name = regime_name(cfg)
    if name not in REGIMES:
        raise UserError(f"regime: unknown regime '{name}' (known: {', '.join(sorted(REGIMES))})")
    return REGIMES[name]


class _Experiment:
    name = "experiment"

    def check(self, cfg, config_path, quiet):
        from inweights.preflight import check_units_and_stages

        return check_units_and_stages(cfg, config_path, quiet, stages=True)

    def run(self, cfg, out, config_path, resume):
        from inweights.experiment import run_experiment

        return run_experiment(cfg, out, config_path, resume=resume)


class _RuleDistill:
    name = "rule_distill"

    def check(self, cfg, config_path, quiet):
        from inweights.preflight import check_units_and_stages

        if cfg.domain.rules.alpaca_train:
            from inweights.recipes.rule_distill import checked_alpaca_task

            checked_alpaca_task(cfg)  # the files are read, every record checked, every k of distill.ks served
        return check_units_and_stages(cfg, config_path, quiet, stages=False)

    def run(self, cfg, out, config_path, resume):
        from inweights.recipes.rule_distill import run_rule_distill

        return run_rule_distill(cfg, out, config_path, resume=resume)


class _ILF:
    name = "ilf"

    def check(self, cfg, config_path, quiet):
        from inweights.preflight import check_memory, check_model
        from inweights.recipes.ilf import load_tasks

        load_tasks(cfg, quiet=quiet)
        check_model(cfg)
        check_memory(cfg)
        return {}

    def run(self, cfg, out, config_path, resume):
        from inweights.recipes.ilf import WaitingForFeedback, run_ilf

        try:
            return run_ilf(cfg, out, config_path, resume=resume)
        except WaitingForFeedback as e:
            raise RunPaused(f"waiting for feedback: {e.n} failing programs are in {e.path}\n"
                            f"  annotate them: inweights feedback export {out} --out FILE, fill in each 'feedback', "
                            f"then\n  inweights feedback import FILE --run {out}\n"
                            f"  and continue:  inweights run {config_path} --out {out} --resume") from None


for _r in (_Experiment(), _RuleDistill(), _ILF()):
    register(_r)
