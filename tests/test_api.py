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


def test_the_api_is_quiet_by_default_and_gives_the_callers_setting_back(tmp_path, monkeypatch):
    """No progress bars from a run through the API (ours and the Hugging Face libraries'), unless asked; the
    caller's mode and Hugging Face's bars are as they were afterwards, even when the run fails."""
    import os

    from transformers.utils import logging as hf_logging

    from inweights import api

    seen = []
    monkeypatch.setattr(api, "_run", lambda *a: seen.append((os.environ.get("INWEIGHTS_PROGRESS"),
                                                              hf_logging.is_progress_bar_enabled())) or "done")
    monkeypatch.setenv("INWEIGHTS_PROGRESS", "lines")
    hf_logging.enable_progress_bar()
    assert inweights.run("smoke", out=tmp_path / "r") == "done"
    assert inweights.run("smoke", out=tmp_path / "r", progress="bar") == "done"
    assert seen == [("none", False), ("bar", True)]
    assert os.environ["INWEIGHTS_PROGRESS"] == "lines" and hf_logging.is_progress_bar_enabled()
    monkeypatch.setattr(api, "_run", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        inweights.run("smoke", out=tmp_path / "r")
    assert os.environ["INWEIGHTS_PROGRESS"] == "lines" and hf_logging.is_progress_bar_enabled()
    with pytest.raises(inweights.UserError, match="progress: 'loud'"):
        inweights.run("smoke", out=tmp_path / "r", progress="loud")
