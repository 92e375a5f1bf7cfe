"""Progress display: a tqdm bar on a terminal, plain lines in a log file, nothing with ``--quiet``.

``INWEIGHTS_PROGRESS`` (``auto``, ``bar``, ``lines``, ``none``; the command's ``--quiet`` sets ``none`` and
``--progress`` any) picks the mode; ``auto`` is ``bar`` when stderr is a terminal and ``lines`` otherwise.
tqdm has no line mode (off a terminal it still redraws with carriage returns, which turns a log file into one
enormous line), so ``lines`` is the small class below: one line per ``every`` seconds and one at the end.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Self

MODES = ("auto", "bar", "lines", "none")


def mode() -> str:
    m = os.environ.get("INWEIGHTS_PROGRESS", "auto")
    if m not in MODES[1:]:
        m = "bar" if sys.stderr.isatty() else "lines"
    return m


def set_mode(m: str) -> None:
    os.environ["INWEIGHTS_PROGRESS"] = m
    if m != "bar":  # the Hugging Face libraries' own bars (weights loading, downloads)
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass


class progress_mode:  # a context manager, named like the function it is used as
    """``set_mode`` for a block, the previous mode (and the Hugging Face libraries' bars) back after it: the
    Python API runs quietly by default without changing what the caller's own code shows afterwards."""

    def __init__(self, m: str):
        if m not in MODES:
            from inweights.core.errors import UserError

            raise UserError(f"progress: {m!r} is not one of {', '.join(MODES)}")
        self.m = m

    def __enter__(self) -> Self:
        self.before = os.environ.get("INWEIGHTS_PROGRESS")
        try:
            from transformers.utils import logging as hf_logging

            self.hf_bars = hf_logging.is_progress_bar_enabled()
        except ImportError:
            self.hf_bars = None
        set_mode(mode() if self.m == "auto" else self.m)
        return self

    def __exit__(self, *exc) -> None:
        if self.before is None:
            os.environ.pop("INWEIGHTS_PROGRESS", None)
        else:
            os.environ["INWEIGHTS_PROGRESS"] = self.before
        if self.hf_bars:
            from transformers.utils import logging as hf_logging

            hf_logging.enable_progress_bar()


class LineProgress:
    """tqdm's interface (update, set_postfix, close, context manager), printed as plain lines."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", initial: int = 0, every: float = 30.0):
        self.total, self.desc, self.unit, self.n, self.every = total, desc, unit, initial, every
        self.start_n, self.t0, self.last, self.postfix = initial, time.perf_counter(), time.perf_counter(), ""
        self.closed = False

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.perf_counter() - self.last >= self.every:
            self._line()

    def _line(self, end: bool = False) -> None:
        self.last = time.perf_counter()
        dt = self.last - self.t0
        done = self.n - self.start_n
        rate = f"{dt / done:.2f} s/{self.unit}" if done else "-"
        eta = ""
        if self.total and done and not end:
            eta = f", eta {(self.total - self.n) * dt / done / 60:.1f} min"
        total = f"/{self.total}" if self.total else ""
        post = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{total} {self.unit}s, {dt / 60:.1f} min, {rate}{eta}{post}"
              + (" (done)" if end else ""), file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line(end=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0, disable: bool = False,
             **tqdm_kw: Any):
    """A progress display in the current mode (``disable``: none, whatever the mode)."""
    from tqdm.auto import tqdm

    m = mode()
    if disable or m == "none":
        return tqdm(total=total, initial=initial, disable=True)
    if m == "lines":
        return LineProgress(total, desc, unit, initial)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, **tqdm_kw)
