from pathlib import Path

import pytest

from inweights.cli import main
from inweights.config import ExperimentConfig, apply_overrides, validate
from inweights.core.errors import UserError


def test_defaults_validate():
    cfg = ExperimentConfig(name="x")
    assert cfg.model.preset == "tiny" and cfg.recipes


@pytest.mark.parametrize(
    "raw,where",
    [
        ({"name": "x", "train": {"lrr": 1}}, "train.lrr: unknown key"),
        ({"name": "x", "pbb": {"stage1_steps": -5}}, "pbb.stage1_steps"),
        ({"name": "x", "train": {"lr": "fast"}}, "train.lr"),
        ({"name": "x", "domain": {"programs": {"min_statements": 5, "max_statements": 2}}}, "domain.programs"),
        ({"name": "x", "recipes": ["nope"]}, "unknown recipe 'nope'"),
        ({"name": "x", "model": {"preset": None}}, "model"),
    ],
)
def test_bad_config_names_the_key(raw, where):
    from inweights import regimes

    with pytest.raises(UserError) as e:
        regimes.validate(raw)  # the config's schema, then the regime's own sense of it (recipe names)
    assert where in str(e.value)


def test_overrides_are_typed():
    raw = apply_overrides({"name": "x"}, ["train.lr=3e-4", "recipes=[proactive]", "eval.eval_base=false"])
    cfg = validate(raw)
    assert cfg.train.lr == 3e-4 and cfg.recipes == ["proactive"] and cfg.eval.eval_base is False


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("name: x\nbogus: 1\n", "bogus: unknown key"),
        ("name: x\npbb: {stage1_steps: -3}\n", "pbb.stage1_steps"),
        ("name: x\nmodel: {preset: null, path: /nonexistent/model}\n", "/nonexistent/model"),
        ("name: x\n  bad: [yaml\n", "invalid YAML"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, text, needle, command):
    args = [command, _write(tmp_path, text)] + (["--out", str(tmp_path / "run")] if command == "run" else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_cli_missing_config(capsys):
    assert main(["validate", "/nonexistent.yaml"]) == 2
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_shipped_configs_validate(root, capsys, monkeypatch):
    from inweights.config import load_config

    monkeypatch.chdir(root)  # data paths in configs are relative to the repository
    for p in sorted((root / "configs").glob("*.yaml")):
        cfg = load_config(p)
        if cfg.domain.name == "coding" and cfg.domain.coding.source == "mbpp" and \
                not Path(cfg.domain.coding.mbpp_path).is_file():
            continue  # MBPP is not shipped: its schema was checked by load_config
        assert main(["validate", str(p)]) == 0, p


def test_gpu_configs_parse(root):
    """The GPU configs need the hub to load their models, so only their schema is checked here."""
    from inweights.config import load_config

    paths = sorted((root / "configs" / "gpu").glob("*.yaml"))
    assert any(p.name.startswith("ilf_") for p in paths)
    for p in paths:
        assert load_config(p).name, p
