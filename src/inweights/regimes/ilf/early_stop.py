"""Early stopping of a policy fine-tune on held-out validation tasks (``ilf.val_tasks``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from inweights.domains.coding import CodingTask


class EarlyStop:
    """``train_stage``'s step hook: the greedy pass rate on the validation tasks every ``every`` steps (and at the
    last), the best checkpoint's trainable weights in ``best_path`` — the starting point included, so that when no
    trained checkpoint beats it the start is kept (every method alike) —, a stop after ``patience`` measurements
    without improvement. Resumable (its state rides in the training checkpoint)."""

    def __init__(self, run, tok, tasks: list[CodingTask], every: int, steps: int, patience: int,
                 best_path: Path, name: str):
        self.run, self.tok, self.tasks, self.every, self.steps = run, tok, tasks, every, steps
        self.patience, self.best_path, self.name = patience, best_path, name
        self.curve: list[dict[str, Any]] = []
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad = 0

    def start(self, model) -> None:
        """The starting point: on the curve, and the checkpoint to beat — a trained one is kept only when it
        scores strictly higher, so a fine-tune that never helps on validation hands back its start."""
        if not self.curve:
            score = self.run.val_pass(model, self.tok, self.tasks)
            self.curve.append({"step": 0, "val_pass": score})
            self._keep(0, score, model)

    def _keep(self, step: int, score: float, model) -> None:
        self.best, self.best_step, self.bad = score, step, 0
        self.best_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad},
                   self.best_path)

    def __call__(self, step: int, model) -> bool:
        if step % self.every and step != self.steps:
            return False
        score = self.run.val_pass(model, self.tok, self.tasks)
        self.curve.append({"step": step, "val_pass": score})
        self.run.log({"event": "val", "model": self.name, "step": step, "val_pass": score})
        if self.best is None or score > self.best:
            self._keep(step, score, model)
        else:
            self.bad += 1
        return self.bad >= self.patience

    def restore_best(self, model) -> None:
        if self.best_step is not None and self.best_step != self.curve[-1]["step"]:
            model.load_state_dict(torch.load(self.best_path, weights_only=True), strict=False)

    def summary(self) -> dict[str, Any]:
        return {"val_tasks": len(self.tasks), "val_every_steps": self.every, "best_step": self.best_step,
                "best_val_pass": self.best, "kept_start": self.best_step == 0, "curve": self.curve}

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve, "best": self.best, "best_step": self.best_step, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve, self.best, self.best_step, self.bad = state["curve"], state["best"], state["best_step"], state["bad"]
