"""Thread layout for a 135M model on this CPU: one job with every core against one 1-thread worker per core.

Measured in one run, SmolLM2-135M-Instruct (preset ``smollm2-135m``, fp32), ``inweights.train.loop.train_stage``
on the toolkit's own data (in-context chain-of-thought views of fresh preparation-pool programs, the settings of
``configs/prepare_smollm2_programs.yaml``, 4 packed rows x 256 tokens per step), for LoRA (r 16 / alpha 32 on
every linear layer) and for full fine-tuning:

- ``1 job x N threads``: one process, ``torch.set_num_threads(N)`` (N = the cores given, default all);
- ``N workers x 1 thread``: N processes started at once (spawned), each with ``OMP_NUM_THREADS``,
  ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` = 1 set before torch is imported, and ``torch.set_num_threads(1)``
  / ``set_num_interop_threads(1)`` — nothing oversubscribes; the aggregate rate is the sum of the workers';
- ``1 job x 1 thread``: the single-worker reference.

Each process runs ``--warm`` untimed steps then ``--steps`` timed ones; tokens/s counts every token slot of the
packed rows over the timed steps (wall time between the end of the last warm step and the end of the last step).
Bf16 autocast follows the shipped rule (on only where the hardware runs bf16 natively; the JSON says which).

Usage: python benchmarks/threads_135m.py [--steps N] [--warm N] [--modes lora full] [--bf16 auto|off] [--out F]
Prints a Markdown table and writes it, with details, to benchmarks/results/threads_135m.json. No timing is
asserted anywhere; run it alone on the machine (another job on a core makes every number wrong).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "threads_135m.json"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def worker(mode: str, threads: int, warm: int, steps: int, rows: int, max_len: int, seed: int, bf16: bool, q) -> None:
    """One training process: its thread counts set before torch is imported (spawned, so nothing is inherited)."""
    for v in THREAD_VARS:
        os.environ[v] = str(threads)
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set in this process
        pass
    sys.path.insert(0, str(ROOT / "src"))
    from inweights.config import LoraConfig, TrainConfig, load_config
    from inweights.core.provenance import bf16_supported
    from inweights.curriculum import TokenCache
    from inweights.domains import make_domain
    from inweights.models import load_model
    from inweights.models.presets import smollm2_dir
    from inweights.prepare import PrepareSampler
    from inweights.train.data import PackedBatches
    from inweights.train.loop import train_stage

    cfg = load_config(ROOT / "configs" / "prepare_smollm2_programs.yaml")
    lora = LoraConfig(r=16, alpha=32, target_modules=["all-linear"]) if mode == "lora" else None
    model, tok = load_model(smollm2_dir(), "float32", lora)
    domain = make_domain(cfg)
    sampler = PrepareSampler(cfg, domain, TokenCache(tok))
    sampler.step = 10**9  # past the short-programs warm-up: the full range of program lengths
    batches = PackedBatches(sampler, seed, rows, max_len, tok.pad_token_id)
    tcfg = TrainConfig(batch_size=rows, max_len=max_len, lr=1e-3 if lora else 2e-4, log_every=10**6,
                       save_every=10**6, bf16=bf16)
    marks: list[float] = []

    def on_step(step, _model):
        marks.append(time.perf_counter())
        return False

    with tempfile.TemporaryDirectory() as d:
        res = train_stage(model, batches, warm + steps, tcfg, Path(d), desc=f"{mode}", on_step=on_step,
                          save_every=10**6)
    seconds = marks[-1] - marks[warm - 1] if warm else marks[-1] - marks[0]
    q.put({"mode": mode, "threads": threads, "tokens": steps * rows * max_len, "seconds": seconds,
           "loss_tokens": res["tokens"], "bf16_autocast": bf16 and bf16_supported()})


def run_layout(mode: str, procs: int, threads: int, args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=worker, args=(mode, threads, args.warm, args.steps, args.rows, args.max_len,
                                           1000 + i, args.bf16 == "auto", q)) for i in range(procs)]
    for p in ps:
        p.start()
    outs = [q.get() for _ in ps]
    for p in ps:
        p.join()
        if p.exitcode:
            raise SystemExit(f"a worker failed (exit {p.exitcode})")
    rate = sum(o["tokens"] / o["seconds"] for o in outs)
    return {"mode": mode, "processes": procs, "threads_each": threads, "tokens_per_s": round(rate, 1),
            "per_process": [round(o["tokens"] / o["seconds"], 1) for o in outs],
            "bf16_autocast": outs[0]["bf16_autocast"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warm", type=int, default=2)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    # auto: bf16 autocast where the hardware has native kernels (the shipped rule); off: fp32 throughout
    ap.add_argument("--bf16", default="auto", choices=["auto", "off"])
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    n = args.cores
    results = []
    for mode in args.modes:
        for procs, threads in ((1, n), (n, 1), (1, 1)):
            r = run_layout(mode, procs, threads, args)
            print(json.dumps(r), flush=True)
            results.append(r)
    lines = ["| mode | layout | tokens/s (all processes) | per process | vs 1 job x all threads |",
             "|---|---|---:|---|---:|"]
    for mode in args.modes:
        rows = [r for r in results if r["mode"] == mode]
        ref = next(r for r in rows if r["processes"] == 1 and r["threads_each"] == n)["tokens_per_s"]
        for r in rows:
            lines.append(f"| {mode} | {r['processes']} x {r['threads_each']} thread(s) | {r['tokens_per_s']:,.0f} | "
                         f"{', '.join(f'{x:,.0f}' for x in r['per_process'])} | {r['tokens_per_s'] / ref:.2f}x |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "cpu": cpu, "cores": n, "args": vars(args),
                                   "load_avg_1m_end": os.getloadavg()[0], "results": results, "table": table},
                                  indent=1) + "\n")


if __name__ == "__main__":
    main()
