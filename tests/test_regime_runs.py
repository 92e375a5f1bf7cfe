"""Every regime's run folder lives like a PBB run's (issue 19): the run lock refuses a second process, and the
models a run builds sit on the accelerator's device (checked in test_rules.py and test_ilf.py)."""

from __future__ import annotations

import pytest

from inweights.cli import main


@pytest.mark.parametrize("config", ["configs/rule_distill_arith.yaml", "configs/ilf_tiny.yaml"])
def test_every_regime_refuses_a_held_run_directory(root, tmp_path, capsys, config, lock_holder):
    out = tmp_path / "run"
    with lock_holder(out) as pid:
        assert main(["run", str(root / config), "--out", str(out), "--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by pid {pid}" in err[0], err
        assert not (out / "config.yaml").exists()


def test_a_prepared_base_being_built_is_refused_to_a_second_build(root, tmp_path, capsys, lock_holder):
    out = tmp_path / "prepared" / "p"
    with lock_holder(tmp_path / "prepared" / "p.work") as pid:
        assert main(["prepare", str(root / "configs/prepare_tiny.yaml"), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by pid {pid}" in err[0], err
        assert not (out / "prepare.json").exists()
