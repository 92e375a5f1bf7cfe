"""Experiment trackers (``train.report_to``): every line a run writes to ``metrics.jsonl`` is mirrored, as it is
written, to TensorBoard, Weights & Biases, trackio or MLflow through accelerate's tracker classes
(``accelerate.tracking``, the trackers ``Accelerator(log_with=...)`` uses).

Accelerate's own ``Accelerator(log_with=...)`` is not used because the Accelerator is one per process and built
before any config is read (``train.loop.get_accelerator``); its tracker classes are what it would call.

Offline by default where the tracker has an offline mode: W&B writes under the run folder with
``WANDB_MODE=offline`` unless the environment sets a mode; MLflow logs to ``file:<run>/tracking/mlruns`` unless
``MLFLOW_TRACKING_URI`` is set; trackio is local unless configured. TensorBoard writes
``<run>/tracking/tensorboard/<name>/``: ``tensorboard --logdir <run>/tracking/tensorboard``.

A metrics line becomes scalars under a prefix naming its stage or event (``proactive:stage2/loss``,
``eval/proactive/without_io.weights.cot``), at the line's ``step`` when it has one, else at the count of lines
with that prefix so far. Only numbers are sent; ``metrics.jsonl`` stays the complete record.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from inweights.core.errors import UserError

TRACKERS = ("tensorboard", "wandb", "trackio", "mlflow")
# the package each tracker needs, and how to get it
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}


def check_installed(names: list[str]) -> None:
    """One line naming a tracker whose package is missing (before any work)."""
    import importlib.util

    for n in names:
        mod = PACKAGES[n]
        if importlib.util.find_spec(mod) is None:
            extra = " (or pip install 'inweights[track]', which installs it)" if n == "tensorboard" else ""
            raise UserError(f"train.report_to: {n} needs the `{mod}` package: pip install {mod}{extra}")


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, (bool, int, float)):
        out[prefix] = float(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)


# fields that name what a line is about rather than measure it
_NAMING = ("stage", "event", "recipe", "model", "method", "task", "step", "round", "k", "seed", "time")


def scalars(rec: dict[str, Any]) -> tuple[str, int | None, dict[str, float]]:
    """(prefix, step, {tag: value}) for one metrics line."""
    if "stage" in rec:  # a training line: its stage names it (its recipe or model is part of that name)
        name = [str(rec["stage"])]
    else:
        name = [str(rec[k]) for k in ("event", "recipe", "model", "method", "task") if k in rec]
        name += [f"{k}{rec[k]}" for k in ("round", "k", "seed") if k in rec and not isinstance(rec[k], dict)]
    prefix = "/".join(name) or "metrics"
    values: dict[str, float] = {}
    for k, v in rec.items():
        if k not in _NAMING:
            _flatten(k, v, values)
    step = rec.get("step") if isinstance(rec.get("step"), int) and not isinstance(rec.get("step"), bool) else None
    return prefix, step, {f"{prefix}/{k}": v for k, v in values.items()}


_OPEN: dict[tuple[str, tuple[str, ...]], Trackers] = {}


def trackers_for(names: list[str], out: Path, run_name: str, config: dict[str, Any] | None = None) -> Trackers:
    """One ``Trackers`` per run folder and process (a run builds several ``Run`` views of its folder; each
    tracker run is started once)."""
    key = (str(Path(out).resolve()), tuple(names))
    if key not in _OPEN:
        _OPEN[key] = Trackers(names, out, run_name, config)
    return _OPEN[key]


class Trackers:
    """The trackers a run reports to; ``log`` takes metrics lines. Started on first use (so a run that writes
    nothing starts none); ``finish`` closes them (also at interpreter exit)."""

    def __init__(self, names: list[str], out: Path, run_name: str, config: dict[str, Any] | None = None):
        self.names, self.out, self.run_name, self.config = list(names), out, run_name, config or {}
        self.trackers: list[Any] | None = None
        self.counts: dict[str, int] = {}

    def _start(self) -> list[Any]:
        import atexit

        from accelerate import tracking

        root = self.out / "tracking"
        root.mkdir(parents=True, exist_ok=True)
        made = []
        for n in self.names:
            if n == "tensorboard":
                t = tracking.TensorBoardTracker(self.run_name, root / "tensorboard")
            elif n == "wandb":
                os.environ.setdefault("WANDB_MODE", "offline")
                os.environ.setdefault("WANDB_DIR", str(root))
                t = tracking.WandBTracker(self.run_name, project="inweights", dir=str(root))
            elif n == "trackio":
                t = tracking.TrackioTracker(self.run_name)
            else:  # mlflow
                os.environ.setdefault("MLFLOW_TRACKING_URI", (root / "mlruns").resolve().as_uri())
                t = tracking.MLflowTracker(experiment_name="inweights", run_name=self.run_name)
            t.start()
            try:
                t.store_init_configuration(_hparams(self.config))
            except Exception as e:  # noqa: BLE001 - hyperparameters are a convenience; the scalars are what matters
                print(f"note: {n} did not take the config as hyperparameters ({type(e).__name__})", file=sys.stderr)
            made.append(t)
        atexit.register(self.finish)
        return made

    def log(self, rec: dict[str, Any]) -> None:
        if not self.names:
            return
        if self.trackers is None:
            self.trackers = self._start()
        prefix, step, values = scalars(rec)
        if not values:
            return
        if step is None:
            step = self.counts.get(prefix, 0)
            self.counts[prefix] = step + 1
        for t in self.trackers:
            t.log(values, step=step)

    def finish(self) -> None:
        _OPEN.pop((str(Path(self.out).resolve()), tuple(self.names)), None)
        for t in self.trackers or []:
            try:
                t.finish()
            except Exception:  # noqa: BLE001, S110 - closing is best effort at exit
                pass
        self.trackers = [] if self.trackers is not None else None


def _hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The config flattened to ``section.key: value`` with values trackers accept (str, int, float, bool)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, (str, int, float, bool)):
            out[prefix] = v
        elif v is not None:
            out[prefix] = str(v)

    walk("", config)
    return out
