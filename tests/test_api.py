"""The Python API (inweights.run / inweights.load_run); tests/test_packaging.py runs examples/quickstart.py with
the installed wheel."""

import pytest

import inweights


def test_bad_input_raises_user_error(tmp_path):
    with pytest.raises(inweights.UserError, match="not a run directory"):
        inweights.load_run(tmp_path)
    with pytest.raises(inweights.UserError, match="train.lrr: unknown key"):
        inweights.run("smoke", out=tmp_path / "r", train={"lrr": 1})
    with pytest.raises(inweights.UserError, match="config file not found"):
        inweights.run("no_such_config", out=tmp_path / "r")
    with pytest.raises(inweights.UserError, match="prepare config"):
        inweights.run("prepare_tiny", out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_config_as_mapping_or_object():
    """A mapping or an ExperimentConfig is a config; keyword sections merge over it, --set strings apply last."""
    from inweights.api import _config
    from inweights.config import ExperimentConfig

    cfg, path = _config({"name": "m", "train": {"lr": 1e-3, "batch_size": 4}}, {"train": {"lr": 5e-4}},
                        ["train.batch_size=2"])
    assert path is None and (cfg.train.lr, cfg.train.batch_size) == (5e-4, 2)
    cfg2, _ = _config(ExperimentConfig(name="o"), {"recipes": ["mixture"]}, None)
    assert cfg2.recipes == ["mixture"]
    with pytest.raises(inweights.UserError, match="config must be"):
        _config(42, {}, None)
