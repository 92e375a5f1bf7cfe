"""The Python API (inweights.run / inweights.load_run) and the example that documents it."""

import subprocess
import sys

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


@pytest.mark.slow
def test_example_script_runs(root, tmp_path):
    """examples/quickstart.py, as a user runs it, from a folder outside the checkout."""
    proc = subprocess.run([sys.executable, str(root / "examples" / "quickstart.py"), str(tmp_path / "run")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "state: finished" in proc.stdout and "proactive" in proc.stdout
    res = inweights.load_run(tmp_path / "run")
    assert res.config.name == "smoke" and res.config.train.lr == 3e-3 and res.config.pbb.stage2_steps == 2
    assert res.summary["provenance"]["packages"]["inweights"] == inweights.__version__
    assert res.files["report.md"].is_file() and res.report.startswith("# ")


def test_config_as_mapping(tmp_path):
    """A mapping is a config; the run directory records it."""
    res = inweights.run({"name": "api_map", "model": {"prepared_base": None, "tiny": {
        "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 320}},
        "domain": {"programs": {"n_programs": 6, "min_statements": 1, "max_statements": 1}},
        "train": {"batch_size": 2, "max_len": 128, "threads": 1}, "pbb": {"stage1_steps": 1, "stage2_steps": 1},
        "recipes": ["proactive"], "eval": {"batch_size": 32, "max_new_tokens": 8, "eval_base": False}},
        out=tmp_path / "run")
    assert res.state == "finished" and set(res.summary["rows"]) == {"proactive"}
    assert res.metrics() and inweights.load_run(tmp_path / "run").config.name == "api_map"
