"""train.report_to: metrics mirrored to experiment trackers (TensorBoard here; events read back)."""

import json
import os

import pytest

from inweights.cli import main
from inweights.core.trackers import scalars


def test_scalars_name_lines_by_stage_and_event():
    prefix, step, vals = scalars({"recipe": "proactive", "stage_key": "ab12", "stage": "proactive:stage2", "step": 25,
                                  "loss": 1.5, "lr": 1e-3, "tok_s": 900})
    assert (prefix, step) == ("proactive:stage2", 25)
    assert vals == {"proactive:stage2/loss": 1.5, "proactive:stage2/lr": 1e-3, "proactive:stage2/tok_s": 900.0}
    assert not any("stage_key" in k for k in vals)  # strings are never sent
    prefix, step, vals = scalars({"event": "eval", "recipe": "mixture", "cells": {"a.weights": 0.25}, "note": "x"})
    assert (prefix, step, vals) == ("eval/mixture", None, {"eval/mixture/cells/a.weights": 0.25})


def test_missing_tracker_package_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    assert main(["validate", "smoke", "--set", "train.report_to=[wandb]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.report_to: wandb needs the `wandb` package" in err
    assert main(["validate", "smoke", "--set", "train.report_to=[comet]"]) == 2
    assert "train.report_to" in capsys.readouterr().err


def test_line_progress_prints_plain_lines(capsys):
    from inweights.core.progress import LineProgress

    bar = LineProgress(total=10, desc="stage", unit="step", every=0.0)
    bar.set_postfix(loss="1.2345")
    for _ in range(10):
        bar.update(1)
    bar.close()
    bar.close()  # once
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 11
    assert lines[0].startswith("stage: 1/10 steps") and "eta" in lines[0] and "loss=1.2345" in lines[0]
    assert lines[-1].endswith("(done)") and lines[-1].startswith("stage: 10/10 steps")


@pytest.mark.slow
def test_run_off_a_terminal_logs_lines_and_tensorboard(tmp_path):
    """One run, as a log file sees it: progress as plain lines (no carriage returns), and with
    train.report_to: [tensorboard] every logged training loss in TensorBoard's event files at its step."""
    import subprocess
    import sys

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "inweights.cli", "run", "smoke", "--out", str(out),
                           "--set", "recipes=[proactive]", "--set", "train.report_to=[tensorboard]"],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={k: v for k, v in os.environ.items() if k != "INWEIGHTS_PROGRESS"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr and "(done)" in proc.stderr and "report:" in proc.stdout
    logs = list((out / "tracking" / "tensorboard").glob("smoke*"))
    assert len(logs) == 1, logs
    ea = EventAccumulator(str(logs[0]))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in lines if "loss" in r and "stage" in r]
    assert losses
    for r in losses:  # every logged training loss is in TensorBoard at its step, with its value
        tag = f"{r['stage']}/loss"
        assert tag in tags, (tag, sorted(tags)[:10])
        got = {e.step: e.value for e in ea.Scalars(tag)}
        assert got[r["step"]] == pytest.approx(r["loss"], rel=1e-6)
    assert any(t.startswith("eval/") for t in tags)  # evaluations too
