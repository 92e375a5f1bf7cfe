"""The rule-distillation paper's released files (Alpaca JSON lists of ``{"instruction", "input", "output"}``): read
under the loader policy (``inweights.core.rejects``), with-rule and no-rule files paired record by record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inweights.core import rejects
from inweights.core.errors import UserError
from inweights.core.io import read_jsonl


def _alpaca_records(path: str | Path, what: str) -> list[tuple[str, dict[str, str] | None]]:
    """(where, record) of an Alpaca file (a JSON list, or JSONL) of ``{"instruction", "input", "output"}``
    strings, under the loader policy (``inweights.core.rejects``): a bad record is reported and comes back as None,
    so that files aligned record by record stay aligned."""
    from inweights.core.io import read_text

    p = Path(path)
    text = read_text(p, what)
    if text.lstrip().startswith("["):  # one JSON document: a syntax error leaves no record to keep
        try:
            recs = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: not JSON or JSONL ({e.msg} at line {e.lineno})") from None
        items: list[tuple[str, Any]] = [(f"{p} record {i}", r) for i, r in enumerate(recs)]
    else:
        items = read_jsonl(p, what, lenient=True)
    out: list[tuple[str, dict[str, str] | None]] = []
    for where, r in items:
        why = None
        if r is None:
            pass  # reported by read_jsonl
        elif not isinstance(r, dict):
            why = "not an object"
        else:
            why = next((f"missing field '{k}'" if k not in r else f"field '{k}' is not a string"
                        for k in ("instruction", "input", "output") if not isinstance(r.get(k), str)), None)
        if why:
            rejects.reject(where, why)
        out.append((where, None if why or r is None else r))
    return out


def load_alpaca(path: str | Path, what: str = "rule dataset") -> list[dict[str, str]]:
    """The good records of an Alpaca file (the rejected ones reported; none good is an error)."""
    good = [r for _, r in _alpaca_records(path, what) if r is not None]
    rejects.check_any_loaded(len(good), str(path))
    return good


def load_alpaca_pairs(full: str | Path, no: str | Path | None = None) -> list[dict[str, str]]:
    """Teacher/student pairs: ``full`` has the rule in ``instruction``; ``no`` (the paper's ``*_no``
    files) the same examples without it. Pairs must agree on input and output (a pair that does not is
    rejected); without ``no`` the student record is the teacher's with an empty instruction."""
    teacher = _alpaca_records(full, "rule dataset")
    if no is None:
        pairs = [{"rule": t["instruction"], "input": t["input"], "output": t["output"], "student_instruction": ""}
                 for _, t in teacher if t is not None]
        rejects.check_any_loaded(len(pairs), str(full))
        return pairs
    student = _alpaca_records(no, "rule dataset")
    if len(student) != len(teacher):
        raise UserError(f"{no}: {len(student)} records, but its teacher file {full} has {len(teacher)}")
    pairs = []
    for (_, t), (where, s) in zip(teacher, student):
        if t is None or s is None:
            continue
        why = next((f"{key} differs from its teacher record in {full}" for key in ("input", "output")
                    if t[key] != s[key]), None)
        if why is None and t["instruction"] == s["instruction"]:
            why = "the student instruction equals the teacher's (no rule to distil)"
        if why:
            rejects.reject(where, why)
            continue
        pairs.append({"rule": t["instruction"], "input": t["input"], "output": t["output"],
                      "student_instruction": s["instruction"]})
    rejects.check_any_loaded(len(pairs), f"{full} + {no}")
    return pairs
