"""Gates: a training run that measures its model every N steps and stops once a measurement reaches a value.

One mechanism for the prepared bases (``prepare.gate``) and for curriculum stages (``StageConfig.gate``):
``train_stage`` calls the gate after every optimiser step; the gate's history (the curve) and whether it was
reached travel with the stage's checkpoints, so a resumed stage keeps them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Gate:
    """``measure(model) -> {name: value}`` every ``every`` steps and at ``last_step``; True (stop) once
    ``measure(...)[key] >= target``."""

    def __init__(self, measure: Callable[[Any], dict[str, float]], key: str, target: float, every: int,
                 last_step: int, log: Callable[[dict[str, Any]], None] | None = None):
        self.measure, self.key, self.target, self.every, self.last_step = measure, key, target, every, last_step
        self.log = log
        self.best = 0.0
        self.history: list[dict[str, Any]] = []

    @property
    def reached(self) -> bool:
        return bool(self.history) and self.history[-1].get(self.key, 0.0) >= self.target

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "history": self.history}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.best, self.history = s["best"], s["history"]

    def __call__(self, step: int, model) -> bool:
        if step % self.every and step != self.last_step:
            return False
        was_training = model.training
        m = self.measure(model)
        model.train(was_training)
        value = m.get(self.key, 0.0)
        self.best = max(self.best, value)
        rec = {"event": "gate_eval", "step": step, **m}
        self.history.append(rec)
        if self.log is not None:
            self.log(rec)
        return value >= self.target

    def record(self) -> dict[str, Any]:
        """What a stage's step record keeps: the target, whether it was reached, at which step, and the curve."""
        first = next((h["step"] for h in self.history if h.get(self.key, 0.0) >= self.target), None)
        return {"metric": self.key, "target": self.target, "reached": first is not None, "reached_at": first,
                "best": self.best, "curve": [(h["step"], h.get(self.key)) for h in self.history]}


class Hooks:
    """Several per-step hooks as one ``on_step``: each runs, the stage stops when any asks to; their states are
    kept together in the stage's checkpoints."""

    def __init__(self, hooks: list[Any]):
        self.hooks = hooks

    def __call__(self, step: int, model) -> bool:
        stops = [h(step, model) for h in self.hooks]  # every hook runs: any() over a generator would stop early
        return any(stops)

    def state_dict(self) -> dict[str, Any]:
        return {"hooks": [h.state_dict() for h in self.hooks]}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        for h, hs in zip(self.hooks, s["hooks"]):
            h.load_state_dict(hs)


class Curve(Gate):
    """A measurement every ``every`` steps that never stops the stage: the curve of a stage (``eval.curve_every``),
    logged as ``{"event": "curve", ...}`` lines."""

    def __init__(self, measure: Callable[[Any], dict[str, float]], every: int, last_step: int,
                 log: Callable[[dict[str, Any]], None] | None = None):
        super().__init__(measure, "", float("inf"), every, last_step, None)
        self.curve_log = log

    def __call__(self, step: int, model) -> bool:
        if step % self.every and step != self.last_step:
            return False
        was_training = model.training
        t0 = time.perf_counter()
        m = self.measure(model)
        model.train(was_training)
        self.add({"event": "curve", "step": step, **m, "seconds": round(time.perf_counter() - t0, 1)})
        return False

    def add(self, rec: dict[str, Any]) -> None:
        """A point into the curve and its log (a step measured again replaces its point)."""
        self.history = [h for h in self.history if h["step"] != rec["step"]]
        self.history.append(rec)
        if self.curve_log is not None:
            self.curve_log(rec)
