"""Seeds derived from the config's seed: every random choice in inweights draws from one of these."""

from __future__ import annotations

import hashlib
from typing import Any


def derive_seed(*parts: Any) -> int:
    """A stable 64-bit seed from any parts (Python's hash() is salted per process, so not that)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")
