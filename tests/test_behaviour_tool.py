"""benchmarks/behaviour.py: two runs that differ only in timings and their folder have equal fingerprints; a
different loss, sample or record is a difference (issue 39's before/after check)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("behaviour", ROOT / "benchmarks" / "behaviour.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(d: Path, seconds: float, loss: float, sample: str, cell: float) -> Path:
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"rows": {"a": 0.5}, "wall_seconds": seconds, "gen_s": seconds,
                                                "out": str(d / "x"), "provenance": {"host": str(seconds)}}))
    (d / "metrics.jsonl").write_text(json.dumps({"stage": "s", "step": 1, "loss": loss, "tok_s": seconds}) + "\n")
    (d / "samples.jsonl").write_text(json.dumps({"text": sample, "where": str(d)}) + "\n")
    (d / "cells.jsonl").write_text(json.dumps({"acc": cell, "seconds": seconds}) + "\n")
    return d


def test_fingerprints_ignore_timings_and_folders_and_see_results(tmp_path, capsys):
    tool = _tool()
    a = tool.fingerprint(_run(tmp_path / "a", 1.0, 2.5, "x", 0.5))
    b = tool.fingerprint(_run(tmp_path / "b", 9.0, 2.5, "x", 0.5))
    assert a == b
    for i, args in enumerate([(1.0, 2.6, "x", 0.5), (1.0, 2.5, "y", 0.5), (1.0, 2.5, "x", 0.4)]):
        c = tool.fingerprint(_run(tmp_path / f"c{i}", *args))
        pa, pc = tmp_path / f"a{i}.json", tmp_path / f"c{i}.json"
        pa.write_text(json.dumps({"smoke": a}))
        pc.write_text(json.dumps({"smoke": c}))
        assert tool.compare(pa, pc) == 1
        assert "smoke: DIFFERENT" in capsys.readouterr().out
    pa.write_text(json.dumps({"smoke": b}))
    assert tool.compare(tmp_path / "a0.json", pa) == 0
