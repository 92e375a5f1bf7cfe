"""Training tokens/s and model-FLOPs utilisation (MFU) of ``train_stage``, before and after issue 15's training
changes, side by side in one run, against a matmul peak measured in the same run.

- Peak: the best of ``--peak-repeats`` timings of a square matmul (n = 2048 on a CPU, 8192 on a GPU) in bf16
  and in fp32, FLOPs = 2 n^3 / seconds. Training uses bf16 autocast where the hardware runs it
  (``train.bf16``), so its MFU is against the bf16 peak; the fp32 peak is reported beside it.
- Variants, same model weights, data, seed and steps:
  * ``reference``: the path before issue 15 — output layer and fp32 softmax over every position of the packed
    rows, ``torch.optim.AdamW`` unfused (``step_loss`` and ``_fused_ok`` monkeypatched back to that);
  * ``current``: ``inweights.train.loop.train_stage`` as shipped (output layer on target positions only,
    fused AdamW);
  * ``current+compile`` (``--compile``): the same with the decoder under ``torch.compile`` (its compile time
    is reported apart: the first warm-up step).
- Data: real records (in-context chain-of-thought views of generated programs, rendered with each model's chat
  template, loss on the completion), packed by ``PackedBatches``. ``--warm`` steps first (not timed), then
  ``--steps`` timed steps; tokens/s counts every token slot of the packed rows. MFU = 6 N tokens/s / peak with
  N = all parameters (the tied embedding counted once), the attention term left out, as is usual. The
  ``reference`` path really does the output layer's work on every position; ``current`` skips most of it, so
  its MFU by 6 N counts work it no longer does — the figure is "useful model FLOPs per second", as MFU is
  meant to be.
- Loss agreement: the per-step losses of ``current`` against ``reference`` over the first ``--agree-steps``
  steps (max absolute difference), same seed and data — the bar is "the same loss curve as before".

Usage: python benchmarks/mfu.py [--quick] [--compile]  -> Markdown table, and benchmarks/results/mfu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mfu.json"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_flops(dtype: torch.dtype, n: int, repeats: int) -> float:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(n, n, dtype=dtype, device=dev)
    b = torch.randn(n, n, dtype=dtype, device=dev)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def records_for(n_units: int, seed: int = 0):
    from inweights import views
    from inweights.config import ProgramsConfig
    from inweights.domains.programs import ProgramsDomain

    domain = ProgramsDomain(ProgramsConfig(n_programs=n_units, cond_prob=0.0, ops=["+", "-"]), seed)
    rng = random.Random(seed)
    return [views.in_context(domain, u, x, "cot", rng) for u in domain.build() for x in u.train_inputs]


@contextlib.contextmanager
def reference_path():
    """The training step as it was before issue 15: full logits, unfused AdamW."""
    from inweights.train import loop
    from inweights.train.data import IGNORE

    def full_logits_loss(model, input_ids, position_ids, labels):
        logits = loop.packed_logits(model, input_ids, position_ids)[:, :-1].float()
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                                 ignore_index=IGNORE, reduction="sum")

    saved = loop.step_loss, loop._fused_ok
    loop.step_loss, loop._fused_ok = full_logits_loss, (lambda acc, params: False)
    try:
        yield
    finally:
        loop.step_loss, loop._fused_ok = saved


def bench_train(load, tok, rows: int, max_len: int, warm: int, steps: int, bf16: bool, variant: str) -> dict:
    from inweights.config import TrainConfig
    from inweights.train.data import PackedBatches, tokenize_record
    from inweights.train.loop import _decoder_and_head, get_accelerator, train_stage

    model = load()
    model.to(get_accelerator().device)
    if variant.endswith("+compile"):
        _decoder_and_head(model)[0].compile()
    examples = [tokenize_record(tok, r, "completion") for r in records_for(60)]
    cfg = TrainConfig(batch_size=rows, max_len=max_len, lr=1e-4, bf16=bf16, log_every=1)
    clock: list[float] = []

    def hook(step, m):
        sync()
        clock.append(time.perf_counter())
        return False

    batches = PackedBatches(lambda rng: examples[rng.randrange(len(examples))], 0, rows, max_len, tok.pad_token_id)
    torch.manual_seed(0)
    ctx = reference_path() if variant == "reference" else contextlib.nullcontext()
    with ctx, tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        res = train_stage(model, batches, warm + steps, cfg, Path(work), save_every=10**9, desc=variant, on_step=hook)
    secs = clock[-1] - clock[warm - 1]
    return {"tok_s": steps * rows * max_len / secs, "s_per_step": secs / steps,
            "first_step_s": clock[0] - t0, "losses": [h["loss"] for h in res["history"]],
            "padding": res["padding_fraction"], "rows": rows, "max_len": max_len, "warm": warm, "steps": steps}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run; results not written)")
    ap.add_argument("--compile", action="store_true", help="also time the decoder under torch.compile")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--peak-repeats", type=int, default=10)
    ap.add_argument("--agree-steps", type=int, default=50)
    ap.add_argument("--no-smollm2", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from inweights.config import LoraConfig
    from inweights.models.load import add_lora, load_model
    from inweights.train.loop import bf16_supported, get_accelerator

    get_accelerator()
    gpu = torch.cuda.is_available()
    n = 8192 if gpu else 2048
    peaks = {"bf16": peak_flops(torch.bfloat16, n, args.peak_repeats),
             "fp32": peak_flops(torch.float32, n, args.peak_repeats)}
    bf16 = bf16_supported()
    peak = peaks["bf16"] if bf16 else peaks["fp32"]
    q = args.quick
    agree = 6 if q else args.agree_steps
    cases = [("tiny (prepared base)", ROOT / "prepared" / "prepare_tiny", None, 8, 512, 3, agree)]
    if not args.no_smollm2:
        from inweights.models.presets import smollm2_dir

        smol = smollm2_dir()
        cases += [("SmolLM2-135M full", smol, None, 4, 256, 2, 2 if q else 6),
                  ("SmolLM2-135M LoRA r16 all-linear", smol,
                   LoraConfig(r=16, alpha=32, target_modules=["all-linear"]), 4, 256, 2, 2 if q else 6)]
    variants = ["reference", "current", *(["current+compile"] if args.compile else [])]
    rows = []
    for name, src, lora, r, ml, warm, steps in cases:
        _, tok = load_model(src)

        def load(src=src, lora=lora):
            model = load_model(src)[0]
            return add_lora(model, lora) if lora is not None else model

        probe = load()
        n_params = sum(p.numel() for p in probe.parameters())
        trainable = sum(p.numel() for p in probe.parameters() if p.requires_grad)
        del probe
        row = {"model": name, "params": n_params, "trainable": trainable, "variants": {}}
        for v in variants:
            tr = bench_train(load, tok, r, ml, warm, steps, bf16, v)
            tr["mfu"] = 6 * n_params * tr["tok_s"] / peak
            row["variants"][v] = tr
            print(f"train {name} [{v}]: {tr['tok_s']:,.0f} tok/s, MFU {tr['mfu']:.1%}, first step "
                  f"{tr['first_step_s']:.1f} s", flush=True)
        ref = row["variants"]["reference"]["losses"]
        for v in variants[1:]:
            cur = row["variants"][v]["losses"]
            row["variants"][v]["speedup"] = row["variants"][v]["tok_s"] / row["variants"]["reference"]["tok_s"]
            row["variants"][v]["max_loss_diff"] = max(abs(a - b) for a, b in zip(ref, cur))
            row["variants"][v]["loss_steps_compared"] = min(len(ref), len(cur))
        rows.append(row)
    result = {"peaks_flops": peaks, "peak_used": "bf16" if bf16 else "fp32", "matmul_n": n,
              "device": torch.cuda.get_device_name() if gpu else platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "load_avg_1m": os.getloadavg()[0], "rows": rows, "quick": q}
    if not q:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    p = result["peaks_flops"]
    lines = [(f"peak (matmul n={result['matmul_n']}): bf16 {p['bf16'] / 1e9:,.0f} GFLOP/s, fp32 {p['fp32'] / 1e9:,.0f} "
              f"GFLOP/s; MFU against {result['peak_used']}; {result['threads']} threads"), "",
             "| model | params (trainable) | path | train tok/s | MFU (6N) | vs reference | losses vs reference |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in result["rows"]:
        for v, t in r["variants"].items():
            agree = (f"max diff {t['max_loss_diff']:.1e} over {t['loss_steps_compared']} steps"
                     if "max_loss_diff" in t else "–")
            lines.append(f"| {r['model']} | {r['params'] / 1e6:.1f}M ({r['trainable'] / 1e6:.2f}M) | {v} | "
                         f"{t['tok_s']:,.0f} | {t['mfu']:.1%} | {t.get('speedup', 1.0):.2f}x | {agree} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
