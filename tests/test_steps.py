"""One way every regime resumes (issue 39): ``runs.Steps`` — a step is done when its record is there with its
content key; anything else is done again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inweights.runs import Steps, content_key

SRC = Path(__file__).resolve().parent.parent / "src" / "inweights"


def test_a_step_is_done_only_with_its_key(tmp_path):
    steps = Steps(tmp_path / "steps")
    key = content_key({"stage": "s1", "seed": 0})
    assert steps.done("s1", key) is None and steps.names() == []
    assert steps.finish("s1", key, {"loss": 0.5}) == {"loss": 0.5}
    assert steps.done("s1", key) == {"loss": 0.5}
    assert steps.done("s1", content_key({"stage": "s1", "seed": 1})) is None  # other inputs: done again
    assert steps.read("s1") == {"loss": 0.5} and steps.names() == ["s1"]
    (tmp_path / "steps" / "s2.json").write_text('{"key": "')  # a torn file (never written by finish): not done
    assert steps.done("s2", key) is None and steps.read("s2") is None


def test_content_keys_are_canonical():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2}) and len(content_key({})) == 12


def test_step_names_are_plain(tmp_path):
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            Steps(tmp_path).path(bad)


def test_no_regime_keeps_a_resume_marker_of_its_own():
    """No done.json, no cells.jsonl read back as a marker: every regime asks ``Steps``."""
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if ('"done.json"' in line or "'done.json'" in line or ("cells.jsonl" in line and ".read_text" in line))]
    assert not hits, hits


def test_every_regime_records_its_steps(tmp_path):
    """The smoke runs of PBB leave their stages as steps (rule distillation's cells and ILF's steps are checked in
    tests/test_rules.py and tests/test_ilf.py)."""
    from inweights.cli import main

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "run"
    assert main(["run", str(root / "configs" / "smoke.yaml"), "--out", str(out), "-q"]) == 0
    stages = sorted(d.name for d in (out / "stages").iterdir())
    names = Steps(out / "steps").names()
    assert stages and set(stages) <= set(names)
    for d in stages:
        rec = json.loads((out / "steps" / f"{d}.json").read_text())
        assert d.endswith(rec["key"]) and rec["record"]["steps"] > 0  # the stage folder names its key
