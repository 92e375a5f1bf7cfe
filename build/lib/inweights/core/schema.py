"""The base of every config section: unknown keys, NaN and infinite numbers are errors, assignments are checked.

Below ``config`` so that a domain's section can live in the domain's own file (``inweights.domains``) while
``inweights.config`` assembles the whole experiment from the registered domains."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # allow_inf_nan=False: a NaN or infinite number anywhere (``train.lr: .nan``) is a config error, never a run
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
