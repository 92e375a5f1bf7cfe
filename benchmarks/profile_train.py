"""Where one training step's time goes: ``torch.profiler`` over a few steps of ``train_stage`` on the tiny
preset (the demo's rows x length), self CPU time of every op grouped into categories — matmuls (linear layers
and the output layer), attention, softmax + cross-entropy, the optimiser, normalisation and activations, other
element-wise ops, and the rest — for the path before issue 15 (``reference``: full logits, unfused AdamW) and
the current one. The data loader's time is measured apart (``PackedBatches`` alone, same number of batches).

Usage: python benchmarks/profile_train.py [--steps N]  -> a table, and benchmarks/results/profile_train.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mfu import records_for, reference_path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "profile_train.json"

# aten op name fragments -> category (first match wins; forward and backward ops alike)
CATEGORIES = [
    ("optimizer", ("adam", "_foreach", "optimizer")),
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "baddbmm", "bmm")),
    ("softmax + cross-entropy", ("softmax", "nll_loss", "cross_entropy")),
    ("matmul", ("mm", "addmm", "matmul", "linear")),
    ("norm + activation", ("silu", "rsqrt", "pow", "mean", "norm", "sigmoid")),
    ("element-wise", ("mul", "add", "sub", "div", "neg", "cat", "copy_", "to", "fill_", "zero_", "where", "clamp",
                      "index", "masked", "embedding", "cos", "sin", "sum", "exp")),
]


def category(name: str) -> str:
    n = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in n for k in keys):
            return cat
    return "other"


def profile_variant(variant: str, steps: int, rows: int, max_len: int) -> dict:
    from inweights.config import TrainConfig
    from inweights.models.load import load_model
    from inweights.train.data import PackedBatches, tokenize_record
    from inweights.train.loop import bf16_supported, train_stage

    model, tok = load_model(ROOT / "prepared" / "prepare_tiny")
    examples = [tokenize_record(tok, r, "completion") for r in records_for(60)]
    cfg = TrainConfig(batch_size=rows, max_len=max_len, lr=1e-4, bf16=bf16_supported(), log_every=1000)
    warm = 2
    state = {"prof": None}

    def hook(step, m):
        if step == warm:
            state["prof"].__enter__()
        return False

    batches = PackedBatches(lambda rng: examples[rng.randrange(len(examples))], 0, rows, max_len, tok.pad_token_id)
    prof = profile(activities=[ProfilerActivity.CPU])
    state["prof"] = prof
    ctx = reference_path() if variant == "reference" else contextlib.nullcontext()
    with ctx, tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        train_stage(model, batches, warm + steps, cfg, Path(work), save_every=10**9, desc=variant, on_step=hook)
        prof.__exit__(None, None, None)
        wall = time.perf_counter() - t0
    shares: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        shares[category(ev.key)] += ev.self_cpu_time_total / 1e6
    total = sum(shares.values())
    t = time.perf_counter()
    fresh = PackedBatches(lambda rng: examples[rng.randrange(len(examples))], 0, rows, max_len, tok.pad_token_id)
    for _ in range(steps):
        next(fresh)
    data_s = time.perf_counter() - t
    return {"steps": steps, "profiled_seconds": total, "wall_seconds_all_steps": wall, "data_seconds": data_s,
            "categories": {k: {"seconds": v, "share": v / total} for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=512)
    args = ap.parse_args()
    from inweights.train.loop import get_accelerator

    get_accelerator()
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": args.rows, "max_len": args.max_len,
           "variants": {v: profile_variant(v, args.steps, args.rows, args.max_len) for v in ("reference", "current")}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    cats = list(dict.fromkeys(c for v in out["variants"].values() for c in v["categories"]))
    print("| op category | " + " | ".join(f"{v} s/step (share)" for v in out["variants"]) + " |")
    print("|---|" + "---:|" * len(out["variants"]))
    for c in cats:
        cells = []
        for v in out["variants"].values():
            x = v["categories"].get(c, {"seconds": 0.0, "share": 0.0})
            cells.append(f"{x['seconds'] / v['steps']:.3f} ({x['share']:.0%})")
        print(f"| {c} | " + " | ".join(cells) + " |")
    print("| data (PackedBatches alone) | " + " | ".join(
        f"{v['data_seconds'] / v['steps']:.3f}" for v in out["variants"].values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
