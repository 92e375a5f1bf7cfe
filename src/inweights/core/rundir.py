"""A run directory's life: checked before any work, held by one process at a time, honest after a crash.

- ``open_run`` checks ``--out`` (not a file, writable, space left), refuses a non-empty folder without ``--resume``
  and a resume with another config, takes the **run lock** — an OS file lock (``flock``) on ``RUN/.lock``, held
  for the life of the process, so it is released however the process ends, SIGKILL included — and cleans what
  an interrupted write left (``*.tmp``). A second process on the same folder gets one line, exit 2.
- ``state_of`` reads ``status.json``; a run that says ``running`` while nobody holds its lock is reported as
  ``interrupted (process gone)``.
- ``MetricsLog`` appends to ``metrics.jsonl`` under a lock, and ``rewind`` drops the lines a resumed stage is
  about to write again (those after its checkpoint), so the log has no duplicates after a resume.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inweights.core.errors import UserError
from inweights.core.io import check_out, read_json_object, read_text, writing

LOCK = ".lock"
_HELD: dict[str, int] = {}  # run folder -> fd holding its lock (kept open for the life of the process)
_CREATED: set[str] = set()  # run folders this process created (removed again on release if nothing was written)


def owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def acquire(out: Path) -> None:
    """Take ``out``'s run lock for this process (idempotent); one line, exit 2, if another process holds it."""
    key = str(out.resolve())
    if key in _HELD:
        return
    if not out.exists():
        _CREATED.add(key)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode("utf-8", "replace").strip()
        os.close(fd)
        try:
            h = json.loads(holder)
            who = f"pid {h['pid']} on {h['host']}"
        except (ValueError, KeyError, TypeError):
            who = "another process"
        raise UserError(f"run directory {out} is in use by {who}: wait for it to end, or use another --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps({**owner(), "since": time.time()}) + "\n").encode())
    _HELD[key] = fd


def release(out: Path) -> None:
    """Give the lock back; a folder this process created and wrote nothing into (a run that stopped on bad input
    before any work) is removed, so nothing is left that looks like a run."""
    key = str(out.resolve())
    fd = _HELD.pop(key, None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock
    if key in _CREATED:
        _CREATED.discard(key)
        try:
            if [p.name for p in out.iterdir()] == [LOCK]:
                (out / LOCK).unlink()
                out.rmdir()
        except OSError:
            pass


def is_held(out: Path) -> bool:
    """Whether some process (this one included) holds ``out``'s run lock."""
    if str(out.resolve()) in _HELD:
        return True
    try:
        fd = os.open(out / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # (a lock taken here is released with it)
    return False


def state_of(out: Path) -> str:
    """The run's state from ``status.json``; ``running`` with its lock free means the process is gone."""
    path = out / "status.json"
    if not path.is_file():
        return "unknown (no status.json)"
    state = str(read_json_object(path, "run status").get("state", "unknown"))
    if state == "running" and not is_held(out):
        return "interrupted (process gone)"
    return state


def clean_stray(out: Path) -> list[str]:
    """Remove what interrupted writes left under ``out`` (every ``*.tmp``), except a training checkpoint that was
    completely written (its ``progress.json`` is written last) while the previous one was already gone: that
    one is promoted. Returns what was done, for the log."""
    done = []
    for tmp in sorted(out.rglob("*.tmp"), key=lambda p: len(p.parts), reverse=True):
        if not tmp.exists() and not tmp.is_symlink():
            continue
        final = tmp.with_name(tmp.name[: -len(".tmp")])
        if (tmp.is_dir() and not final.name.endswith(".old") and (tmp / "progress.json").is_file()
                and not (final / "progress.json").is_file()):
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            done.append(f"promoted {tmp.relative_to(out)}")
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        done.append(f"removed {tmp.relative_to(out)}")
    return done


def open_run(out: Path, resume: bool, config_text: str,
             same: Callable[[str, str], bool] | None = None) -> list[str]:
    """Everything a run does to its folder before work starts: checks, the lock, leftovers. Returns the leftovers
    cleaned (on a resume). ``same(recorded, new)`` decides whether a resumed run's config is this one (default:
    the same text; ``config.same_config`` compares values, so a release that adds a key still resumes)."""
    check_out(out)
    if out.exists() and any(p.name != LOCK for p in out.iterdir()) and not resume:
        raise UserError(f"run directory {out} already exists: pass --resume to continue it, or --out")
    if resume and (out / "status.json").is_file():
        read_json_object(out / "status.json", "run status")  # damaged: one line now, not a traceback later
    recorded = read_text(out / "config.yaml", "the run's config") if resume and (out / "config.yaml").is_file() else None
    if recorded is not None and not (same or str.__eq__)(recorded, config_text):
        raise UserError(f"--resume: {out}/config.yaml differs from this config; use another --out")
    acquire(out)
    return clean_stray(out) if resume else []


class MetricsLog:
    """``metrics.jsonl``: one JSON line per record, appended under an exclusive lock (several worker processes
    write one run's log), with ``rewind`` for resumed stages."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, rec: dict[str, Any]) -> None:
        with writing(self.path), self.path.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(json.dumps(rec) + "\n")

    def rewind(self, match: dict[str, Any], step: int | None) -> int:
        """Drop the lines whose fields equal ``match`` and whose ``step`` is after ``step`` (what a stage resumed
        from its checkpoint at ``step`` logs again; ``None``: every matching line, for a unit of work that restarts
        from scratch). Rewritten in place under the lock; returns lines dropped."""
        if not self.path.is_file():
            return 0
        with self.path.open("r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            lines = f.read().splitlines(keepends=True)
            keep = []
            for ln in lines:
                try:
                    rec = json.loads(ln)
                except ValueError:  # a line cut by the kill: it is written again
                    continue
                drop = (isinstance(rec, dict) and all(rec.get(k) == v for k, v in match.items())
                        and (step is None or (isinstance(rec.get("step"), int) and rec["step"] > step)))
                if not drop:
                    keep.append(ln if ln.endswith("\n") else ln + "\n")
            if len(keep) != len(lines):
                f.seek(0)
                f.write("".join(keep))
                f.truncate()
            return len(lines) - len(keep)
