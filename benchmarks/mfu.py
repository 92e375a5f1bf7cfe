"""Training tokens/s and model-FLOPs utilisation (MFU), and generation tokens/s with and without
batching, for the tiny preset and SmolLM2-135M (full fine-tuning and LoRA), on this machine.

- Peak: the best of ``--peak-repeats`` timings of a square matmul (n = 2048 on a CPU, 8192 on a GPU)
  in bf16 and in fp32, FLOPs = 2 n^3 / seconds, measured in this run on this machine. Training uses bf16
  autocast where the hardware runs it (``train.bf16``), so its MFU is against the bf16 peak; the fp32
  peak is reported beside it.
- Training: ``inweights.train.loop.train_stage`` on ``PackedBatches`` of real records (in-context
  chain-of-thought views of generated programs, rendered with each model's chat template, loss on
  the completion), ``--warm`` steps first (not timed), then ``--steps`` timed steps. tokens/s counts every
  token slot of the packed rows (padding is ~2-5%). MFU = 6 N tokens/s / peak with N = all parameters
  (the tied embedding counted once: it is the output matmul); the attention term (12 L d T per token) is
  left out, as is usual. For LoRA the same 6 N is used (the work a full update of the model would be);
  LoRA skips the frozen weights' gradient matmuls, so its real arithmetic is nearer 4 N.
- Generation: ``inweights.eval.generate.generate`` (greedy, KV cache) on chat prompts, batched (all
  prompts in one length-sorted batch list of ``--gen-batch``) against one prompt at a time (batch 1);
  tokens counted up to and including EOS.

Usage: python benchmarks/mfu.py [--quick]  -> Markdown table, and benchmarks/results/mfu.json
"""

from __future__ import annotations

import argparse
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


def records_for(tok, n_units: int, seed: int = 0):
    from inweights import views
    from inweights.config import ProgramsConfig
    from inweights.domains.programs import ProgramsDomain

    domain = ProgramsDomain(ProgramsConfig(n_programs=n_units, cond_prob=0.0, ops=["+", "-"]), seed)
    units = domain.build()
    rng = random.Random(seed)
    recs = [views.in_context(domain, u, x, "cot", rng) for u in units for x in u.train_inputs]
    return recs


def bench_train(model, tok, rows: int, max_len: int, warm: int, steps: int, bf16: bool) -> dict:
    from inweights.config import TrainConfig
    from inweights.train.data import PackedBatches, tokenize_record
    from inweights.train.loop import train_stage

    examples = [tokenize_record(tok, r, "completion") for r in records_for(tok, 60)]
    cfg = TrainConfig(batch_size=rows, max_len=max_len, lr=1e-4, bf16=bf16, log_every=1000)
    clock: list[float] = []

    def hook(step, m):
        sync()
        clock.append(time.perf_counter())
        return False

    batches = PackedBatches(lambda rng: examples[rng.randrange(len(examples))], 0, rows, max_len, tok.pad_token_id)
    with tempfile.TemporaryDirectory() as work:
        res = train_stage(model, batches, warm + steps, cfg, Path(work), save_every=10**9, desc="bench", on_step=hook)
    secs = clock[-1] - clock[warm - 1]
    tokens = steps * rows * max_len
    return {"tok_s": tokens / secs, "s_per_step": secs / steps, "padding": res["padding_fraction"],
            "rows": rows, "max_len": max_len, "steps": steps}


def bench_generate(model, tok, n_prompts: int, batch: int, max_new: int) -> dict:
    from inweights.eval.generate import generate

    prompts = [r["prompt"] for r in records_for(tok, 40, seed=1)][:n_prompts]
    out = {}
    for label, bs, ps in (("batched", batch, prompts), ("batch_1", 1, prompts[: max(2, n_prompts // 8)])):
        generate(model, tok, ps[:1], max_new_tokens=4, batch_size=1)  # warm-up
        sync()
        t = time.perf_counter()
        outs = generate(model, tok, ps, max_new_tokens=max_new, batch_size=bs)
        sync()
        secs = time.perf_counter() - t
        n = sum(min(len(tok(o, add_special_tokens=False)["input_ids"]) + 1, max_new) for o in outs)
        out[label] = {"tok_s": n / secs, "prompts": len(ps), "tokens": n, "seconds": secs}
    out["speedup"] = out["batched"]["tok_s"] / out["batch_1"]["tok_s"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer steps and prompts (a smoke run)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--peak-repeats", type=int, default=10)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from inweights.config import LoraConfig
    from inweights.models.load import add_lora, load_model
    from inweights.models.presets import smollm2_dir
    from inweights.train.loop import bf16_supported, get_accelerator

    get_accelerator()
    gpu = torch.cuda.is_available()
    n = 8192 if gpu else 2048
    peaks = {"bf16": peak_flops(torch.bfloat16, n, args.peak_repeats),
             "fp32": peak_flops(torch.float32, n, args.peak_repeats)}
    bf16 = bf16_supported()
    peak = peaks["bf16"] if bf16 else peaks["fp32"]
    q = args.quick
    tiny_dir = ROOT / "prepared" / "prepare_tiny"
    smol = smollm2_dir()
    cases = [
        ("tiny (prepared base)", tiny_dir, None, 8, 512, 3, 6 if q else 30),
        ("SmolLM2-135M full", smol, None, 4, 256, 2, 2 if q else 6),
        ("SmolLM2-135M LoRA r16 all-linear", smol, LoraConfig(r=16, alpha=32, target_modules=["all-linear"]),
         4, 256, 2, 2 if q else 6),
    ]
    rows = []
    for name, src, lora, r, ml, warm, steps in cases:
        model, tok = load_model(src)
        n_params = sum(p.numel() for p in model.parameters())
        if lora is not None:
            model = add_lora(model, lora)
        model.to(get_accelerator().device)
        tr = bench_train(model, tok, r, ml, warm, steps, bf16)
        row = {"model": name, "params": n_params,
               "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad), **tr,
               "mfu": 6 * n_params * tr["tok_s"] / peak}
        print(f"train {name}: {tr['tok_s']:,.0f} tok/s, MFU {row['mfu']:.1%}", flush=True)
        if lora is None:
            model.eval()
            row["generation"] = bench_generate(model, tok, 16 if q else 64, 64, 48 if q else 96)
            print(f"  generation: batched {row['generation']['batched']['tok_s']:,.0f} tok/s, batch 1 "
                  f"{row['generation']['batch_1']['tok_s']:,.0f} tok/s", flush=True)
        rows.append(row)
        del model
    result = {"peaks_flops": peaks, "peak_used": "bf16" if bf16 else "fp32", "matmul_n": n,
              "device": torch.cuda.get_device_name() if gpu else platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "load_avg_1m": os.getloadavg()[0], "rows": rows, "quick": q}
    if not q:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\npeak (matmul n={n}): bf16 {peaks['bf16'] / 1e9:,.0f} GFLOP/s, fp32 {peaks['fp32'] / 1e9:,.0f} GFLOP/s; "
          f"MFU against {result['peak_used']}")
    print("| model | params (trainable) | train tok/s | MFU (6N) | gen tok/s batched | gen tok/s batch 1 | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        g = r.get("generation")
        gen = (f"{g['batched']['tok_s']:,.0f} | {g['batch_1']['tok_s']:,.0f} | {g['speedup']:.1f}x" if g
               else "– | – | –")
        print(f"| {r['model']} | {r['params'] / 1e6:.1f}M ({r['trainable'] / 1e6:.2f}M) | {r['tok_s']:,.0f} | "
              f"{r['mfu']:.1%} | {gen} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
