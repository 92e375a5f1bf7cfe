"""The loader policy for external data files (AsyncHow, Alpaca, MBPP/HumanEval task files, units, feedback):
read every record, keep the good ones, and report the rejected ones together — a count, the first few with
``file:line`` and the reason, and every one in ``rejected.jsonl`` beside the run. ``data.strict: true`` (or
``--strict``) turns any rejection into the usual one-line error, exit 2; a file where *nothing* loads is an
error either way. Records that load but disagree with something (a released answer that its own graph
contradicts) are kept and reported as notes, never silently.

A loader calls ``reject(where, reason)`` / ``note(where, message)`` while it reads; ``collecting()`` gathers
them for one load and ``settle`` applies the policy.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from inweights.core.errors import UserError

SHOWN = 5  # rejections printed; the rest are in rejected.jsonl


@dataclass(frozen=True)
class Issue:
    where: str  # path:line
    reason: str
    action: str  # "rejected" (the record is left out) or "kept" (loaded, with a note)


_CURRENT: contextvars.ContextVar[list[Issue] | None] = contextvars.ContextVar("inweights_rejects", default=None)


@contextlib.contextmanager
def collecting() -> Iterator[list[Issue]]:
    """Gather the rejections and notes of the loads inside the block (nested blocks gather their own)."""
    found: list[Issue] = []
    token = _CURRENT.set(found)
    try:
        yield found
    finally:
        _CURRENT.reset(token)


def _add(issue: Issue) -> None:
    found = _CURRENT.get()
    if found is None:  # a loader used outside any policy: behave as strict (never drop a record silently)
        raise UserError(f"{issue.where}: {issue.reason}")
    found.append(issue)


def reject(where: str, reason: str) -> None:
    _add(Issue(where, reason, "rejected"))


def note(where: str, message: str) -> None:
    _add(Issue(where, message, "kept"))


def check_any_loaded(n_good: int, what: str, found: list[Issue] | None = None) -> None:
    """A file (or set of files) where nothing loads is an error whatever the policy: name the first reason."""
    if n_good:
        return
    found = found if found is not None else (_CURRENT.get() or [])
    first = next((i for i in found if i.action == "rejected"), None)
    why = f" ({len([i for i in found if i.action == 'rejected'])} rejected; first {first.where}: {first.reason})" \
        if first else ""
    raise UserError(f"{what}: no record could be loaded{why}")


def settle(found: list[Issue], strict: bool, out_dir: Path | None = None, quiet: bool = False) -> None:
    """Apply the policy to one load's issues: strict -> the first rejection is a one-line error; otherwise
    print a summary to stderr (unless ``quiet``) and write them all to ``out_dir/rejected.jsonl``."""
    found = list(dict.fromkeys(found))  # a file read twice (several task-id ranges) reports each record once
    rejected = [i for i in found if i.action == "rejected"]
    kept = [i for i in found if i.action == "kept"]
    if strict and rejected:
        more = f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""
        raise UserError(f"{rejected[0].where}: {rejected[0].reason}{more}; data.strict is on")
    if out_dir is not None:
        write(out_dir, found)
    if quiet or not found:
        return
    for label, items in (("rejected", rejected), ("loaded with a note", kept)):
        if not items:
            continue
        print(f"inweights: {len(items)} record(s) {label}:", file=sys.stderr)
        for i in items[:SHOWN]:
            print(f"  {i.where}: {i.reason}", file=sys.stderr)
        if len(items) > SHOWN:
            where = f"{out_dir / 'rejected.jsonl'}" if out_dir is not None else "data.strict: true to stop on them"
            print(f"  ... {len(items) - SHOWN} more ({where})", file=sys.stderr)


def write(out_dir: Path, found: list[Issue]) -> None:
    """``out_dir/rejected.jsonl``: every rejected record and every note, one JSON object per line."""
    if found:
        (Path(out_dir) / "rejected.jsonl").write_text("".join(json.dumps(asdict(i)) + "\n" for i in found))
