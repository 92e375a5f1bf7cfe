"""Regimes: what a run does with a config — its checks before work, the run itself, and what it prints after.

One registry, so the command line never names a regime or a domain: ``inweights run`` asks ``regime_of(cfg)``.
A new regime is a ``Regime`` subclass with ``name``, ``check`` and ``run`` passed to ``register`` (a test registers
a toy one from the test file alone); ``check_config``, ``export`` and ``evaluate`` have defaults. The built-ins
wrap the three loops that exist today:

- ``experiment``: PBB curricula and the symbolic → natural-language curricula (``inweights.regimes.experiment.run``);
- ``rule_distill``: rule distillation (``inweights.regimes.rule_distill.run``);
- ``ilf``: imitation learning from language feedback (``inweights.regimes.ilf.run``).

``regime:`` in the config picks one; without it the domain's default is used (``Domain.default_regime``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from inweights.config import ExperimentConfig, regime_name
from inweights.config import validate as _validate
from inweights.core.errors import UserError


class RunPaused(Exception):
    """A run that stopped to wait for something outside it (people's feedback): ``message`` says what to do,
    and the command exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 3):
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


class Regime:
    name: str = ""
    # the domains whose units this regime knows how to run (None: any domain); a config pairing it with another
    # is refused in one line before any work
    domains: tuple[str, ...] | None = None

    def check_config(self, cfg) -> None:
        """The config's own sense for this regime, without touching any file (its recipe names)."""

    def check(self, cfg, config_path: Path | None, quiet: bool) -> dict[str, Any]:
        """Everything the run would fail on, found before any work (``UserError``: one line)."""
        return {}

    def run(self, cfg, out: Path, config_path: Path | None, resume: bool) -> dict[str, Any] | None:
        """The run; its summary (None on a secondary process of a multi-process run)."""
        raise NotImplementedError

    def prepare_builder(self) -> Callable[..., dict[str, Any]] | None:
        """`inweights prepare`: the regime's own preparation of a prepared base, ``build(cfg, out_dir, work,
        command) -> record``; None: the stage engine's (``prepare.build_prepared_base``)."""
        return None

    def export(self, cfg, out: Path) -> dict[str, Any]:
        """`inweights data`: the regime's views of the config's data as JSONL files with a manifest."""
        raise UserError(f"inweights data: the {self.name} regime exports no dataset")

    def evaluate(self, cfg, model: Path, out: Path | None, config_path: Path | None) -> tuple[dict[str, Any], Path]:
        """`inweights eval`: probe one model folder with the config's units; (its cells, the folder written)."""
        raise UserError(f"inweights eval: the {self.name} regime evaluates its models itself (inweights run)")


REGIMES: dict[str, Regime] = {}


def register(regime: Regime) -> Regime:
    REGIMES[regime.name] = regime
    return regime


def preflight(cfg, config_path: Path | None, quiet: bool = False) -> dict[str, Any]:
    """Everything ``inweights run`` checks before any work starts; ``inweights validate`` runs the same. Raises
    ``UserError`` (one line) for anything that would fail the run; returns what was measured."""
    if cfg.kind != "experiment":
        return {}
    if cfg.train.report_to:
        from inweights.core.trackers import check_installed

        check_installed(cfg.train.report_to)
    regime = regime_of(cfg)
    _check_domain(regime, cfg)
    regime.check_config(cfg)
    return regime.check(cfg, config_path, quiet)


def validate(raw: dict[str, Any]) -> ExperimentConfig:
    """``config.validate`` and the regime's own sense of the config (``Regime.check_config``)."""
    cfg = _validate(raw)
    if cfg.kind == "experiment":
        regime = regime_of(cfg)
        _check_domain(regime, cfg)
        regime.check_config(cfg)
    return cfg


def _check_domain(regime: Regime, cfg) -> None:
    if regime.domains is not None and cfg.domain.name not in regime.domains:
        raise UserError(f"config error at regime: the {regime.name} regime runs on the {' or '.join(regime.domains)} "
                        f"domain, not {cfg.domain.name} (domain.name: {regime.domains[0]})")


def _known(cfg, names: tuple[str, ...], what: str) -> None:
    for r in cfg.recipes:
        if r not in names:
            raise UserError(f"config error at recipes: unknown {what} '{r}' (known: {', '.join(names)})")


_plugins_loaded = False


def load_regime_plugins() -> None:
    """The regimes other installed packages declare (entry-point group ``inweights.regimes``: a ``Regime``
    instance, or a subclass to instantiate), registered once per process, on first use."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from inweights.core.plugins import entry_point_objects

    for where, obj in entry_point_objects("inweights.regimes"):
        if isinstance(obj, type) and issubclass(obj, Regime):
            obj = obj()
        if not isinstance(obj, Regime):
            raise UserError(f"entry point {where} (inweights.regimes) is not a Regime")
        if REGIMES.get(obj.name) is None:
            register(obj)


def regime_of(cfg) -> Regime:
    load_regime_plugins()
    name = regime_name(cfg)
    if name not in REGIMES:
        raise UserError(f"regime: unknown regime '{name}' (known: {', '.join(sorted(REGIMES))})")
    return REGIMES[name]


class _Experiment(Regime):
    name = "experiment"

    def check_config(self, cfg):
        from inweights.regimes.experiment.pbb import check_recipe_names

        check_recipe_names(cfg)

    def check(self, cfg, config_path, quiet):
        from inweights.preflight import check_units_and_stages
        from inweights.regimes.experiment.checks import recipe_stages

        if cfg.eval.positive_control:
            from inweights.prepare import find_config

            if find_config(cfg.eval.positive_control, config_path) is None:
                raise UserError(f"eval.positive_control: prepare config not found: {cfg.eval.positive_control}")
        return check_units_and_stages(cfg, config_path, quiet, stages_of=recipe_stages)

    def run(self, cfg, out, config_path, resume):
        from inweights.regimes.experiment.run import run_experiment

        return run_experiment(cfg, out, config_path, resume=resume)

    def export(self, cfg, out):
        from inweights.data import export
        from inweights.runs import load_units

        domain, units = load_units(cfg)
        return export(cfg, out, domain, units)

    def evaluate(self, cfg, model, out, config_path):
        from inweights.core.io import check_out
        from inweights.models.load import check_folder
        from inweights.preflight import check_eval_groups
        from inweights.regimes.experiment.run import Experiment
        from inweights.runs import load_units

        domain, units = load_units(cfg)
        check_eval_groups(cfg, domain, units)
        if not (model / "config.json").is_file() and not (model / "inweights.json").is_file():
            raise UserError(f"--model: {model} is not a Hugging Face model folder (no config.json) "
                            f"nor a LoRA stage folder (no inweights.json)")
        check_folder(model, "--model")
        out = check_out(out or model.parent / f"eval_{cfg.name}")
        exp = Experiment(cfg, out, config_path, resume=True)
        out.mkdir(parents=True, exist_ok=True)
        return exp.evaluate_dir(model.name, model, out, domain, units), out


class _RuleDistill(Regime):
    name = "rule_distill"

    def check_config(self, cfg):
        from inweights.regimes.rule_distill.config import RECIPES

        _known(cfg, RECIPES, "rule-distillation recipe")
        if "rule_distill_transfer" in cfg.recipes:
            if not cfg.distill.transfer_inputs:
                raise UserError("recipe rule_distill_transfer needs distill.transfer_inputs > 0 (the fresh inputs "
                                "the teacher answers)")
            from inweights.domains.base import domain_class
            from inweights.domains.capabilities import FreshInputs, supports

            if not supports(domain_class(cfg.domain.name), FreshInputs):
                raise UserError(f"recipe rule_distill_transfer needs fresh inputs of the rule; the {cfg.domain.name} "
                                "domain draws none (it does not declare FreshInputs)")
            if getattr(cfg.domain.section(), "alpaca_train", None):
                raise UserError("recipe rule_distill_transfer needs generated rules (fresh inputs are drawn from the "
                                "rule's input distribution); the Alpaca files hold no such distribution")

    def export(self, cfg, out):
        from inweights.regimes.rule_distill.tasks import export_rules

        return export_rules(cfg, out)

    def evaluate(self, cfg, model, out, config_path):
        raise UserError("inweights eval probes PBB domains; a rule-distillation run evaluates its models itself "
                        "(inweights run), its generations are in the run's samples.jsonl")

    def check(self, cfg, config_path, quiet):
        from inweights.preflight import check_units_and_stages

        if cfg.domain.section().alpaca_train:
            from inweights.regimes.rule_distill.tasks import checked_alpaca_task

            checked_alpaca_task(cfg)  # the files are read, every record checked, every k of distill.ks served
        return check_units_and_stages(cfg, config_path, quiet)

    def run(self, cfg, out, config_path, resume):
        from inweights.regimes.rule_distill.run import run_rule_distill

        return run_rule_distill(cfg, out, config_path, resume=resume)


class _ILF(Regime):
    name = "ilf"
    domains = ("coding",)

    def check_config(self, cfg):
        from inweights.regimes.ilf.config import RECIPES

        _known(cfg, RECIPES, "ILF recipe")
        if cfg.kind == "experiment" and cfg.model.preset == "tiny" and cfg.model.prepared_base and cfg.ilf.pretrain_steps:
            raise UserError("ilf.pretrain_steps trains a starting policy, model.prepared_base names a built one: "
                            "set one of them (ilf.pretrain_steps: 0, or model.prepared_base: null)")
        if cfg.ilf.gold_style != "family" and cfg.domain.coding.source != "generated":
            raise UserError(f"ilf.gold_style {cfg.ilf.gold_style} rewrites generated tasks' gold; domain.coding.source is "
                            f"{cfg.domain.coding.source} (use gold_style: family)")

    def prepare_builder(self):
        def build(cfg, out_dir, work, command, config_path=None):
            if cfg.ilf.prepare_target == "refiner":
                from inweights.regimes.ilf.refiner_base import build_refiner_base

                return build_refiner_base(cfg, out_dir, work, command, config_path)
            from inweights.regimes.ilf.policy import build_starting_policy

            return build_starting_policy(cfg, out_dir, work, command)

        return build

    def check(self, cfg, config_path, quiet):
        from inweights.preflight import check_memory, check_model
        from inweights.regimes.ilf.tasks import check_pools, load_tasks

        if cfg.model.prepared_base:
            from inweights.config import load_config
            from inweights.runs import resolve_prepared

            pconf, _ = resolve_prepared(cfg, config_path)
            if cfg.kind == "experiment" and load_config(pconf).ilf.prepare_target == "refiner":
                raise UserError(f"model.prepared_base: {pconf} prepares a refiner base, not a starting policy: name it "
                                "in ilf.refiner_base")
        if cfg.ilf.refiner_base:
            from inweights.regimes.ilf.refiner_base import resolve_refiner_base

            resolve_refiner_base(cfg, config_path)
        check_pools(cfg, load_tasks(cfg, quiet=quiet))
        check_model(cfg)
        check_memory(cfg)
        return {}

    def run(self, cfg, out, config_path, resume):
        from inweights.regimes.ilf.run import WaitingForFeedback, run_ilf

        try:
            return run_ilf(cfg, out, config_path, resume=resume)
        except WaitingForFeedback as e:
            raise RunPaused(f"waiting for feedback: {e.n} failing programs are in {e.path}\n"
                            f"  annotate them: inweights feedback export {out} --out FILE, fill in each 'feedback', "
                            f"then\n  inweights feedback import FILE --run {out}\n"
                            f"  and continue:  inweights run {config_path} --out {out} --resume") from None


for _r in (_Experiment(), _RuleDistill(), _ILF()):
    register(_r)
