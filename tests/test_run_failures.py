"""A run or an export that dies of its environment (issue 38: a full disk): one line naming the path, exit 2, the
run's status.json saying ``failed`` (or the line saying it could not be written), and an export that leaves no
``.partial`` folder behind. The disk is filled by making a write raise ``ENOSPC``, as the OS does."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from inweights.cli import main

ENOSPC = os.strerror(errno.ENOSPC)


def _full_disk():
    return OSError(errno.ENOSPC, ENOSPC)  # a failed write(): no file named


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("inweights: warning:")]
    assert len(lines) == 1 and lines[0].startswith("inweights: error: ") and "Traceback" not in err, err
    return lines[0]


def _state(out: Path) -> dict:
    return json.loads((out / "status.json").read_text())


@pytest.mark.parametrize("raised", [
    _full_disk,  # an OSError from write(), which names no file
    # safetensors' writer wraps the OS error in its own type, the OS's message inside
    lambda: RuntimeError(f'Error while serializing: IoError(Os {{ code: 28, kind: StorageFull, message: "{ENOSPC}" }})'),
], ids=["oserror", "wrapped"])
def test_a_full_disk_mid_run_names_the_path_and_marks_the_run_failed(raised, tmp_path, monkeypatch, capsys):
    def save_model(*a, **k):
        raise raised()

    monkeypatch.setattr("inweights.regimes.experiment.run.save_model", save_model)  # the first model the run writes
    out = tmp_path / "run"
    assert main(["run", "smoke", "--out", str(out), "-q"]) == 2
    line = _one_line(capsys)
    assert ENOSPC in line and str(out) in line and "(the disk is full)" in line, line
    status = _state(out)
    assert status["state"] == "failed" and ENOSPC in status["error"]
    assert main(["status", str(out)]) == 0 and "failed" in capsys.readouterr().out
    assert not list(out.rglob("*.tmp"))


def test_a_status_no_new_file_fits_for_is_written_in_place_or_the_line_says_so(tmp_path, monkeypatch, capsys):
    """On a full disk the temporary of an atomic write gets no block: status.json is then written over its own
    bytes; and when even that fails, the one line says the status could not be marked."""
    from inweights import runs
    from inweights.regimes.experiment import run as experiment

    full = {"on": False}
    atomic_write = experiment.atomic_write

    def save_model(*a, **k):
        full["on"] = True
        raise _full_disk()

    def atomic(path, text):
        if full["on"]:
            raise OSError(errno.ENOSPC, ENOSPC, str(path.with_name(path.name + ".tmp")))
        atomic_write(path, text)

    monkeypatch.setattr(experiment, "save_model", save_model)
    monkeypatch.setattr(experiment, "atomic_write", atomic)
    monkeypatch.setattr(runs, "atomic_write", atomic)  # the run's status.json
    out = tmp_path / "run"
    assert main(["run", "smoke", "--out", str(out), "-q"]) == 2
    line = _one_line(capsys)
    assert str(out) in line and "could not be marked" not in line, line
    assert _state(out)["state"] == "failed"  # written in place

    full["on"] = False

    def overwrite(path, text):
        raise OSError(errno.ENOSPC, ENOSPC, str(path))

    monkeypatch.setattr(runs, "overwrite", overwrite)
    out2 = tmp_path / "run2"
    assert main(["run", "smoke", "--out", str(out2), "-q"]) == 2
    line = _one_line(capsys)
    assert str(out2) in line and f"{out2 / 'status.json'} could not be marked failed" in line, line
    assert _state(out2)["state"] == "running"  # what it said before, and the line says so


def test_an_export_that_fails_leaves_no_partial_folder(tmp_path, monkeypatch, capsys):
    def write_bytes(self, data):
        raise _full_disk()

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    out = tmp_path / "data"
    assert main(["data", "programs", "--out", str(out)]) == 2
    line = _one_line(capsys)
    assert ENOSPC in line and f"{out}.partial" in line, line
    assert not out.exists() and not Path(f"{out}.partial").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)
