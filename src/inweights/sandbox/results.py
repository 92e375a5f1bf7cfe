"""Reading what a program's process left, on the trusted side: the head of its output, its result file (unlinked,
read up to a cap), and the result line parsed only when it is small and shallow enough (``parse_result``)."""

from __future__ import annotations

import json
import os
import re
from typing import Any


def _head(path_fd, limit: int) -> str:
    os.lseek(path_fd, 0, os.SEEK_SET)
    data = os.read(path_fd, limit + 1)
    text = data[:limit].decode("utf-8", "replace")
    return text + ("\n[output truncated]" if len(data) > limit else "")


def _read_file(fd: int, cap: int) -> bytes:
    """Up to ``cap`` + 1 bytes of an (unlinked) result file, from its start."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks, got = [], 0
    while got <= cap:
        b = os.read(fd, min(1 << 20, cap + 1 - got))
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
MAX_NESTING = 256  # the child's encoder stops at 50 levels of values (two JSON levels each) plus the verdict's


def _too_deep(line: bytes, limit: int = MAX_NESTING) -> bool:
    """Whether a JSON line nests deeper than ``limit``, found without parsing it (strings skipped)."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    depth = 0
    for m in _TOKENS.finditer(line):
        c = m.group()
        if c in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif c in (b"]", b"}"):
            depth -= 1
    return False


def parse_result(raw: bytes, token: str, cap: int) -> tuple[dict[str, Any] | None, str]:
    """The child's result record from its result file, treating every byte as hostile: size and nesting limits
    before parsing, anything unparseable skipped; (record or None, why there is none)."""
    if len(raw) > cap:
        return None, f"its result was larger than {cap // 2**20} MB"
    out, why = None, "it wrote no result"
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        if _too_deep(line):
            why = f"its result was nested deeper than {MAX_NESTING} levels"
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError, MemoryError):
            why = "its result could not be read"
            continue
        if isinstance(rec, dict) and rec.get("token") == token:
            out = rec
    return out, why
