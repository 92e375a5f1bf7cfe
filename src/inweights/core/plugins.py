"""Code from outside the package: modules named with ``--import`` (or ``INWEIGHTS_IMPORT``) and the entry points
other installed packages declare (``inweights.domains``, ``inweights.regimes``).

A plugin registers what it defines when it is loaded (``register_domain``, ``regimes.registry.register``), so a
domain or regime from another package runs through the CLI with no edit here. The registries load their entry-point
groups themselves, on first use (``domains.base.load_domain_plugins``, ``regimes.registry.load_regime_plugins``);
``--import`` modules go into ``INWEIGHTS_IMPORT`` too, so spawned worker processes import them again.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from inweights.core.errors import UserError

ENV = "INWEIGHTS_IMPORT"


def import_modules(names: list[str]) -> None:
    """Import each module (one line naming it if it fails) and remember them for worker processes."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a user's module: whatever it raises is reported in one line
            raise UserError(f"--import {name}: {type(e).__name__}: {e}") from None
    known = [n for n in os.environ.get(ENV, "").split(",") if n]
    os.environ[ENV] = ",".join(known + [n for n in names if n not in known])


def import_env_modules() -> None:
    """In a spawned worker: the modules the run's process was given with ``--import``."""
    import_modules([n for n in os.environ.get(ENV, "").split(",") if n])


def entry_point_objects(group: str) -> list[tuple[str, Any]]:
    """(``name = value`` as declared, the loaded object) for every entry point of ``group`` in the installed
    distributions; one that fails to load is one line naming it and its package."""
    from importlib.metadata import entry_points

    out = []
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - another package's code: whatever it raises, in one line
            dist = getattr(ep.dist, "name", "?")
            raise UserError(f"entry point {ep.name} = {ep.value} ({group}, package {dist}) failed to load: "
                            f"{type(e).__name__}: {e}") from None
        out.append((f"{ep.name} = {ep.value}", obj))
    return out
