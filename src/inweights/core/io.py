"""Files: reading what a user hands us (text, JSON, JSONL), checking where we will write before any work starts,
and writing so that a reader never sees half a file.

Every failure here is a ``UserError``: one line naming the file (and the byte or line), exit code 2.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inweights.core.errors import UserError

# a run writes models, checkpoints and logs: refuse to start one where less than this is free
MIN_FREE_MB = 200


def read_bytes(path: str | Path, what: str) -> bytes:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {p} is a directory, not a file")
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    try:
        return p.read_bytes()
    except OSError as e:
        raise UserError(f"{what} {p}: cannot be read ({e.strerror})") from None


def decode(data: bytes, path: str | Path, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{what} {path}: not valid UTF-8 at byte {e.start} (line {line})") from None


def read_text(path: str | Path, what: str) -> str:
    """A text file as UTF-8; missing, a directory, unreadable or not UTF-8 is one line naming it."""
    return decode(read_bytes(path, what), path, what)


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file (a run folder's own records: status, models, tasks, summary); damage is one line naming it."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {path}: not valid JSON ({e.msg} at line {e.lineno}); the file is damaged") from None


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    rec = read_json(path, what)
    if not isinstance(rec, dict):
        raise UserError(f"{what} {path}: expected a JSON object, found {type(rec).__name__}; the file is damaged")
    return rec


def check_out(path: str | Path, what: str = "--out", *, file: bool = False, min_free_mb: int = MIN_FREE_MB) -> Path:
    """Where a command will write (a directory, or with ``file`` a file), checked before any work: not an existing
    file where a directory is meant (or the reverse), under a directory we can write, with space left."""
    p = Path(path)
    if file and p.is_dir():
        raise UserError(f"{what} {p} is a directory; give a file path")
    if not file and p.exists() and not p.is_dir():
        raise UserError(f"{what} {p} exists and is not a directory")
    # the nearest existing ancestor decides whether we can create what is missing
    probe = p if p.exists() and not file else p.parent  # an existing file is replaced (atomically, by its writer)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what} {p}: {probe} is a file, so nothing can be created under it")
    try:  # really create a file there: permission bits say nothing of root, read-only mounts or pseudo-filesystems
        fd, name = tempfile.mkstemp(dir=probe, prefix=".inweights-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise UserError(f"{what} {p}: {probe} is not writable ({e.strerror})") from None
    free_mb = shutil.disk_usage(probe).free / 2**20
    if free_mb < min_free_mb:
        raise UserError(f"{what} {p}: only {free_mb:.0f} MB free on its disk (at least {min_free_mb} MB needed)")
    return p


def finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value}")
    return value


# OSErrors that mean "the place you gave us cannot take this" rather than a bug: the CLI reports them in one line
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                      errno.EISDIR, errno.ENAMETOOLONG, errno.EFBIG, errno.EMFILE, errno.ENFILE}


def is_environment_error(e: OSError) -> bool:
    """Whether ``e`` says the place we were given cannot take what we write (``ENVIRONMENT_ERRNOS``), or is any
    OSError raised while writing a file of ours (``writing``): one line for the user, not a traceback."""
    return e.errno in ENVIRONMENT_ERRNOS or getattr(e, "inweights_writing", False)


def describe_os_error(e: OSError) -> str:
    where = f": {e.filename}" if e.filename else ""
    hint = " (the disk is full)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return f"{e.strerror or e}{where}{hint}{getattr(e, 'inweights_note', '')}"


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """``with writing(path):`` an OSError in the block names ``path`` when it names no file (a failed ``write()``
    names none) and is marked as a failure to write (``is_environment_error``)."""
    try:
        yield
    except OSError as e:
        if not e.filename:
            e.filename = str(path)
        e.inweights_writing = True
        raise


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def write_failure(e: BaseException, where: str | Path) -> BaseException:
    """What a run that ended with ``e`` reports: an OSError of the environment names ``where`` (the run folder)
    when it names no file; an error that only wraps a full disk (safetensors' writer raises its own type with the
    OS's message in it) becomes that OSError, naming ``where``; anything else is ``e`` itself."""
    if isinstance(e, OSError):
        if is_environment_error(e) and not e.filename:
            e.filename = str(where)
        return e
    text = str(e)
    code = next((c for c in _DISK_FULL if os.strerror(c) in text), None)
    if code is None:
        return e
    err = OSError(code, os.strerror(code), str(where))
    err.inweights_writing = True
    return err


def atomic_write(path: Path, text: str) -> None:
    """Write a whole file or nothing: a temporary beside it, renamed over it (the temporary is removed again if
    the write fails)."""
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise


def overwrite(path: Path, text: str) -> None:
    """Write ``text`` over an existing small file's own bytes, in place: what still works on a full disk, where the
    temporary of ``atomic_write`` gets no block but the file's block is already there. Not atomic: for the last word
    of a run that is failing anyway (its status)."""
    data = text.encode()
    with writing(path), path.open("r+b") as f:
        f.write(data)
        f.truncate(len(data))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_jsonl(path: Path, what: str = "data file", lenient: bool = False) -> list[tuple[str, dict[str, Any] | None]]:
    """(where, record) for each non-blank line, ``where`` being ``path:line`` for the caller's own messages;
    a missing file is one line naming it. A line that is not JSON or not an object is one line naming it too,
    or with ``lenient`` a rejection (``inweights.core.rejects``) and ``(where, None)``, so that files aligned line by
    line stay aligned."""
    from inweights.core import rejects

    path = Path(path)
    text = read_text(path, what)  # missing, a directory or not UTF-8: one line naming the file and byte
    out: list[tuple[str, dict[str, Any] | None]] = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
            why = None if isinstance(rec, dict) else "a record must be a JSON object"
        except json.JSONDecodeError as e:
            rec, why = None, f"not valid JSON ({e.msg})"
        if why is not None:
            if not lenient:
                raise UserError(f"{where}: {why}")
            rejects.reject(where, why)
            rec = None
        out.append((where, rec))
    return out


def write_summary(path: Path, summary: dict) -> dict:
    """A run's ``summary.json``, written whole, with the software and machine that produced it
    (``provenance``: same seed gives the same metrics on the same machine, not across machines)."""
    from inweights.core.provenance import provenance

    summary = {**summary, "provenance": provenance()}
    atomic_write(path, json.dumps(summary, indent=2) + "\n")
    return summary
