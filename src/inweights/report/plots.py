"""PNG plots: loss per stage, reward per GRPO stage, accuracy per recipe, the sample-efficiency sweep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


KIND_TITLES = {"documents": "documents (loss on every token)", "answers": "answers (loss on the completion)",
               "documents + answers": "documents + answers mixed", None: "training loss"}


def loss_plot(out: Path, metrics_path: Path, recipes: dict[str, dict[str, Any]] | None = None) -> Path | None:
    """Training loss on a global step axis: each recipe's stages one after another (a stage shared by several
    recipes drawn in each), one panel per loss kind (``experiment.loss_kind``), log scale. Without ``recipes``
    (a run's stage lists), one panel with every stage from step 0."""
    by_key: dict[str, list[tuple[int, float]]] = {}
    by_stage: dict[str, list[tuple[int, float]]] = {}
    if not metrics_path.is_file():
        return None
    for line in metrics_path.read_text().splitlines():
        r = json.loads(line)
        if "loss" in r and "stage" in r and r.get("objective") != "grpo":  # GRPO losses: see reward.png
            by_stage.setdefault(r["stage"], []).append((r["step"], r["loss"]))
            if r.get("stage_key"):
                by_key.setdefault(r["stage_key"], []).append((r["step"], r["loss"]))
    if not by_stage:
        return None
    # (panel kind, line label) -> points on the global axis
    lines: dict[tuple[str | None, str], list[tuple[int, float]]] = {}
    bounds: dict[str, list[int]] = {}
    if recipes and by_key:
        for name, r in recipes.items():
            offset = 0
            for st in r.get("stages", []):
                pts = by_key.get(st.get("key", ""), [])
                if pts and st.get("loss_kind") != "grpo":
                    lines.setdefault((st.get("loss_kind"), name), []).extend((offset + s, v) for s, v in pts)
                offset += int(st.get("steps", 0))
                bounds.setdefault(name, []).append(offset)
        xlabel = "global step (each recipe's stages in order)"
    if not lines:
        lines = {(None, name): pts for name, pts in by_stage.items()}
        xlabel = "step within stage"
    kinds = list(dict.fromkeys(k for k, _ in lines))
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.5), squeeze=False)
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(dict.fromkeys(n for _, n in lines))}
    for ax, kind in zip(axes[0], kinds):
        for (k, name), pts in sorted(lines.items(), key=lambda kv: kv[0][1]):
            if k != kind:
                continue
            pts = sorted(dict(pts).items())
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, lw=1.3, color=colors[name])
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss (log)")
        ax.set_title(KIND_TITLES.get(kind, kind), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    return _save(fig, out / "loss.png")


def reward_plot(out: Path, metrics_path: Path) -> Path | None:
    curves: dict[str, list[tuple[int, float]]] = {}
    if not metrics_path.is_file():
        return None
    for line in metrics_path.read_text().splitlines():
        r = json.loads(line)
        if r.get("objective") == "grpo":
            curves.setdefault(r["stage"], []).append((r["step"], r["reward_mean"]))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, pts in sorted(curves.items()):
        pts = sorted(dict(pts).items())
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        w = max(1, len(ys) // 10)  # a running mean over ~10% of the stage: per-step rewards are noisy
        sm = [sum(ys[max(0, i - w + 1): i + 1]) / len(ys[max(0, i - w + 1): i + 1]) for i in range(len(ys))]
        ax.plot(xs, sm, label=name, lw=1.4)
    ax.set_xlabel("GRPO step within stage")
    ax.set_ylabel("mean reward (running mean)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Reward per GRPO stage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, out / "reward.png")


def accuracy_plot(out: Path, rows: dict[str, dict[str, Any]], cells: list[str]) -> Path | None:
    if not rows or not cells:
        return None
    names = list(rows)
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(names) * len(cells) / 3), 4.8))
    width = 0.8 / len(cells)
    cmap = plt.get_cmap("tab10")
    bound_drawn = False
    for j, cell in enumerate(cells):
        xs, ys, lo, hi = [], [], [], []
        for i, n in enumerate(names):
            c = rows[n]["cells"].get(cell)
            if c is None:
                continue
            xs.append(i + (j - (len(cells) - 1) / 2) * width)
            ys.append(100 * c["acc"])
            # clamped: at 0% or 100% the interval's end can miss the estimate by a rounding error
            lo.append(max(0.0, 100 * (c["acc"] - c["ci95"][0])))
            hi.append(max(0.0, 100 * (c["ci95"][1] - c["acc"])))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=cell, color=cmap(j % 10))
        # the in-context bound: the same recipe asked with the instruction in its prompt
        bound_cell = cell.replace("/in_weights/", "/in_context/")
        for x, n in zip(xs, [n for n in names if rows[n]["cells"].get(cell) is not None]):
            b = rows[n]["cells"].get(bound_cell) if bound_cell != cell else None
            if b is not None:
                ax.hlines(100 * b["acc"], x - width / 2, x + width / 2, colors="black", lw=1.6,
                          label="in context (same model)" if not bound_drawn else None)
                bound_drawn = True
    chances = {round(rows[n]["cells"][c]["chance"], 6) for n in names for c in cells
               if rows[n]["cells"].get(c) and rows[n]["cells"][c].get("chance") is not None}
    if len(chances) == 1:
        ax.axhline(100 * chances.pop(), color="grey", ls="--", lw=1, label="chance")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy per recipe (95% CI); black ticks: the same model with the instruction in context")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out / "accuracy.png")


def sweep_plot(out: Path, ks: list[int], accs: list[float], ref_name: str, ref_acc: float, cell: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [100 * a for a in accs], "o-", label="demos_only")
    ax.axhline(100 * ref_acc, color="C3", ls="--", label=f"{ref_name} (instruction)")
    ax.set_xscale("log")
    ax.set_xlabel("execution examples per program (k)")
    ax.set_ylabel(f"{cell} accuracy (%)")
    ax.set_title("One instruction vs k examples")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, out / "sample_efficiency.png")


CURVE_PANELS = [
    ("stored: document recall after its pointer sentence", ("without_io/doc_recall", "with_io/doc_recall")),
    ("extracted: statements recalled inside a question", ("without_io/query_recall", "with_io/query_recall")),
    ("in weights: CoT accuracy (validation inputs)", ("without_io/in_weights/cot@val", "with_io/in_weights/cot@val")),
    ("the skill: in-context CoT accuracy (validation inputs)",
     ("with_io/in_context/cot@val", "without_io/in_context/cot@val")),
]


def curve_plot(out: Path, recipes: dict[str, dict[str, Any]]) -> Path | None:
    """``eval.curve_every``: storage, extraction, in-weights and in-context accuracy on validation inputs against
    the global step (each recipe's stages in order), one panel each; solid lines without_io, dashed with_io."""
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for name, r in recipes.items():
        offset = 0
        for st in r.get("stages", []):
            for point in st.get("curve", []):
                for _, keys in CURVE_PANELS:
                    for k in keys:
                        if point.get(k) is not None:
                            series.setdefault((name, k), []).append((offset + point["step"], point[k]))
            offset += int(st.get("steps", 0))
    if not series:
        return None
    fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(5.2 * len(CURVE_PANELS), 4.2), squeeze=False)
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(recipes)}
    for ax, (title, keys) in zip(axes[0], CURVE_PANELS):
        for (name, k), pts in series.items():
            if k not in keys:
                continue
            pts = sorted(dict(pts).items())
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", ms=2.5, lw=1.2, color=colors[name],
                    ls="-" if k.startswith("without_io") else "--", label=f"{name} ({k.split('/')[0]})")
        ax.set_ylim(-2, 102)
        ax.set_xlabel("global step (each recipe's stages in order)")
        ax.set_ylabel("%")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    return _save(fig, out / "curves.png")
