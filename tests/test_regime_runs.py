"""Every regime's run folder lives like a PBB run's (issue 19): the run lock refuses a second process, and the
models a run builds sit on the accelerator's device (rule distillation's own check is in test_rules.py)."""

from __future__ import annotations

import pytest
import yaml

from inweights.cli import main


@pytest.mark.parametrize("config", ["configs/rule_distill_arith.yaml", "configs/ilf_tiny.yaml"])
def test_every_regime_refuses_a_held_run_directory(root, tmp_path, capsys, config, lock_holder):
    out = tmp_path / "run"
    with lock_holder(out) as pid:
        assert main(["run", str(root / config), "--out", str(out), "--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by pid {pid}" in err[0], err
        assert not (out / "config.yaml").exists()


@pytest.mark.slow
def test_ilf_builds_its_models_on_the_accelerators_device(tmp_path, monkeypatch):
    from test_ilf import SMOKE

    from inweights import models
    from inweights.train.loop import get_accelerator

    built = []
    real = models.load_model

    def recording(*a, **k):
        model, tok = real(*a, **k)
        built.append(model)
        return model, tok

    monkeypatch.setattr(models, "load_model", recording)
    cfg = tmp_path / "ilf.yaml"
    cfg.write_text(yaml.safe_dump(SMOKE))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 0
    assert len(built) >= 4  # the starting policy, the refiners, the fine-tuned policies
    assert {next(m.parameters()).device for m in built} == {get_accelerator().device}


def test_a_prepared_base_being_built_is_refused_to_a_second_build(root, tmp_path, capsys, lock_holder):
    out = tmp_path / "prepared" / "p"
    with lock_holder(tmp_path / "prepared" / "p.work") as pid:
        assert main(["prepare", str(root / "configs/prepare_tiny.yaml"), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by pid {pid}" in err[0], err
        assert not (out / "prepare.json").exists()
