"""The Python API: what ``inweights run`` does, from a notebook or a script.

    import inweights

    res = inweights.run("smoke", out="runs/smoke", train={"lr": 3e-3}, overrides=["pbb.stage2_steps=5"])
    res.summary["rows"]["proactive"]          # the numbers summary.json holds
    print(res.report)                          # report.md
    again = inweights.load_run("runs/smoke")   # a finished run, read back

``config`` is a path, a shipped config's name (``inweights configs`` lists them), a mapping, or an
``ExperimentConfig``. Keyword sections (``train={...}``) merge over the config like ``extends:`` does
(mappings key by key; lists replace); ``overrides`` are ``--set`` strings, applied last. Bad input raises
``inweights.UserError`` with the same one-line message the command prints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inweights.core.errors import UserError


@dataclass
class RunResult:
    """A run directory and what it holds: ``summary`` (summary.json), ``config`` (as the run recorded it),
    ``state`` (finished, failed, interrupted, waiting_for_feedback, ...) and the paths of its report and metrics."""

    out: Path
    summary: dict[str, Any] | None
    config: Any
    state: str
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def report(self) -> str:
        """report.md's text ('' before the run has one)."""
        p = self.out / "report.md"
        return p.read_text() if p.is_file() else ""

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl's records (training losses and evaluation rows, in order)."""
        p = self.out / "metrics.jsonl"
        return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.is_file() else []

    def __repr__(self) -> str:
        return f"RunResult(out={str(self.out)!r}, state={self.state!r}, name={getattr(self.config, 'name', None)!r})"


def _config(config: Any, sections: dict[str, Any], overrides: list[str] | None):
    from inweights.config import (
        ExperimentConfig,
        apply_overrides,
        load_raw,
        merge_configs,
        resolve_config_path,
    )
    from inweights.regimes.registry import validate

    path = None
    if isinstance(config, ExperimentConfig):
        raw = config.model_dump(mode="json")
    elif isinstance(config, dict):
        raw = config
    elif isinstance(config, (str, Path)):
        path = resolve_config_path(config)
        raw = load_raw(path)
    else:
        raise UserError(f"config must be a path, a shipped config's name, a mapping or an ExperimentConfig, "
                        f"not {type(config).__name__}")
    raw = apply_overrides(merge_configs(raw, sections), list(overrides or []))
    return validate(raw), path


def run(config: Any, out: str | Path | None = None, *, resume: bool = False, overrides: list[str] | None = None,
        progress: str = "none", **sections: Any) -> RunResult:
    """Run an experiment as ``inweights run`` does (the same checks first, the same run directory); returns
    the finished run's ``RunResult``. ``out`` defaults to runs/<name>. A run that stops to wait for people's
    feedback returns with state ``waiting_for_feedback`` and no summary. ``progress``: ``none`` (the default:
    no bars in a notebook or a script's output, the Hugging Face libraries' included), ``bar``, ``lines`` or
    ``auto`` (as the CLI picks); the caller's own setting is back afterwards."""
    from inweights.core.progress import progress_mode

    with progress_mode(progress):
        return _run(config, out, resume, overrides, sections)


def _run(config: Any, out: str | Path | None, resume: bool, overrides: list[str] | None,
         sections: dict[str, Any]) -> RunResult:
    from inweights.core.io import check_out
    from inweights.regimes.registry import RunPaused, preflight, regime_of

    cfg, path = _config(config, sections, overrides)
    if cfg.kind == "prepare":
        raise UserError(f"{cfg.name} is a prepare config: build it with `inweights prepare` (or run an "
                        "experiment that names it as model.prepared_base, which builds it on first use)")
    dest = check_out(Path(out) if out is not None else Path("runs") / cfg.name)
    preflight(cfg, path, quiet=True)
    try:
        regime_of(cfg).run(cfg, dest, path, resume)
    except RunPaused as e:
        print(e.message)
    return load_run(dest)


def load_run(out: str | Path) -> RunResult:
    """A run directory read back: its config, its state and (once it has one) its summary."""
    from inweights.config import load_config
    from inweights.core.io import read_json_object
    from inweights.core.rundir import state_of

    d = Path(out)
    if not (d / "config.yaml").is_file():
        raise UserError(f"{d}: not a run directory (no config.yaml)")
    summary = read_json_object(d / "summary.json", "run summary") if (d / "summary.json").is_file() else None
    files = {p.name: p for p in sorted(d.iterdir()) if p.is_file()}
    return RunResult(out=d, summary=summary, config=load_config(d / "config.yaml"), state=state_of(d), files=files)
