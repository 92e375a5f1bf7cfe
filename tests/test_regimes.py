"""Regimes are a registry (issue 19): `inweights run` dispatches on it and names no regime or domain itself, so a
regime defined in a test file alone runs end to end through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inweights.cli import main
from inweights.regimes.registry import REGIMES, Regime, register

ROOT = Path(__file__).resolve().parent.parent


class ToyRegime(Regime):
    """Counts the domain's units per group: the smallest regime there is, with the run folder's life (checks,
    lock, status, the end of a run however it ends, resuming by steps, atomic summary) from the shared machinery
    (``inweights.runs``). docs/architecture.md shows it as the worked example of "add a regime"."""

    name = "toy_count"

    def check(self, cfg, config_path, quiet):
        if cfg.recipes != ["count"]:
            from inweights.core.errors import UserError

            raise UserError("toy_count: recipes must be [count]")
        return {}

    def run(self, cfg, out, config_path, resume):
        from inweights.config import dump_config, same_config
        from inweights.core.io import atomic_write
        from inweights.core.rundir import open_run
        from inweights.runs import Run, Steps, content_key, finishing, load_units

        open_run(out, resume, dump_config(cfg), same_config)  # the lock; --resume only over the same config
        run = Run(out, cfg)
        with finishing(run, out):  # failed / interrupted recorded in status.json, the lock released
            run.status("running")
            _, units = load_units(cfg, quiet=True)
            steps, key = Steps(out / "steps"), content_key({"units": [u.id for u in units]})
            counts = steps.done("count", key)  # a finished step is read back on --resume
            if counts is None:
                counts = steps.finish("count", key, {g: sum(u.group == g for u in units)
                                                     for g in sorted({u.group for u in units})})
            summary = {"counts": counts, "bars": [f"toy: {sum(counts.values())} units"]}
            atomic_write(out / "summary.json", json.dumps(summary) + "\n")
            atomic_write(out / "report.md", f"# toy\n\n{counts}\n")
            run.status("finished")
            return summary


@pytest.fixture
def toy():
    register(ToyRegime())
    yield
    REGIMES.pop("toy_count", None)


def test_a_regime_from_a_test_file_runs_end_to_end(toy, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    text = (ROOT / "configs" / "smoke.yaml").read_text().replace(
        "recipes: [proactive, stage1_only, stage2_only, mixture, retroactive, demos_only]", "recipes: [count]")
    text += "regime: toy_count\n"
    cfg.write_text(text)
    assert main(["validate", str(cfg)]) == 0
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"with_io": 9, "without_io": 3}
    assert "toy: 12 units" in capsys.readouterr().out
    assert main(["status", str(out)]) == 0 and "finished" in capsys.readouterr().out
    assert main(["run", str(cfg), "--out", str(out), "--resume"]) == 0  # its step is read back
    assert json.loads((out / "steps" / "count.json").read_text())["record"] == summary["counts"]
    capsys.readouterr()
    # its own checks run before any work, through `validate` and `run` alike
    cfg.write_text(text.replace("recipes: [count]", "recipes: [other]"))
    assert main(["validate", str(cfg)]) == 2
    assert capsys.readouterr().err.strip() == "inweights: error: toy_count: recipes must be [count]"


def test_an_unknown_regime_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text((ROOT / "configs" / "smoke.yaml").read_text() + "regime: nope\n")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("inweights: error: regime: unknown regime 'nope' (known: ") and "experiment" in err


def test_every_domain_runs_its_default_regime():
    from inweights.config import ExperimentConfig, regime_name

    assert regime_name(ExperimentConfig(name="x")) == "experiment"
    assert regime_name(ExperimentConfig(name="x", domain={"name": "rules"})) == "rule_distill"
    assert regime_name(ExperimentConfig(name="x", domain={"name": "coding"})) == "ilf"
    assert regime_name(ExperimentConfig(name="x", domain={"name": "rules"}, regime="experiment",
                                        recipes=["proactive"])) == "experiment"
    assert {"experiment", "rule_distill", "ilf"} <= set(REGIMES)
