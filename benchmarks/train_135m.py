"""SmolLM2-135M training: inweights' trainer against TRL's ``SFTTrainer``, and both against the GEMM rate, in one run.

Measured side by side (issue 44), for LoRA (r 16 / alpha 32 on every linear layer, the prepared SmolLM2 bases'
adapter) and for full fine-tuning:

- ``ours``: ``inweights.train.loop.train_stage`` on ``PackedBatches`` (rows x max_len packed rows, loss on the
  completion only, logits only where a loss is taken);
- ``trl``: TRL ``SFTTrainer``, ``packing=True`` with its default ``bfd`` strategy (padding-free rows), the same
  records, rows per step, row length, LR schedule, AdamW betas, clipping, bf16 setting and thread count; LoRA via
  its ``peft_config`` (the same r, alpha, dropout and targets); ``gradient_checkpointing=False`` (ours does not
  checkpoint).

The records are the in-context chain-of-thought and direct views of ``configs/pbb_programs_smollm2.yaml``'s
programs (the SmolLM2 PBB demo's own kind of text), tokenised before either timed loop. Rates are real (non-pad)
training tokens per second of wall time over the warm steps (the first ``--skip`` steps excluded), the trainers
alternating ``--repeats`` times and pooled, as ``benchmarks/throughput.py`` does for the tiny preset.

The **GEMM rate** is measured in the same run at the model's own shapes: every linear layer's matrix (q/k/v/o,
gate/up/down, the tied output layer) multiplied by a ``rows x max_len``-token activation, forward only, in fp32
and in bf16 (operands already cast, so the rate is the GEMM's alone); FLOP-weighted GFLOP/s. **MFU** divides the
model FLOPs of the tokens a trainer trained by its time and by that rate. FLOPs per token, counted the conventional
way for every trainer alike (the output layer on every position, as a dense trainer computes it — ours computes it
on target positions only, so its executed FLOPs are fewer): full fine-tuning 6 N (forward 2 N, backward 4 N) plus
attention (12 x layers x hidden x the mean attended length); LoRA 4 N (a frozen matrix gets no weight gradient:
forward 2 N and input gradients 2 N) plus 6 x the adapter's parameters, plus the same attention term. N: the
linear layers' weights (the output layer counted once). Under bf16 autocast the bf16 rate is the one to divide by.

Usage: python benchmarks/train_135m.py [--steps N] [--skip N] [--repeats N] [--modes lora full] [--threads N]
Writes benchmarks/results/train_135m.json and prints a Markdown table. No timing is asserted anywhere; run it alone.
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
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "train_135m.json"
CONFIG = ROOT / "configs" / "pbb_programs_smollm2.yaml"

from throughput import CountingBatches, CountingCollator, StepClock, now, pool, warm_rate


def records_for(tok, seed: int) -> list[dict[str, Any]]:
    from inweights import views
    from inweights.config import load_config
    from inweights.domains.programs import ProgramsDomain

    cfg = load_config(CONFIG)
    domain = ProgramsDomain(cfg.domain.programs, cfg.seed)
    rng = random.Random(seed)
    recs = [views.in_context(domain, u, x, fmt, rng) for u in domain.build() for x in u.train_inputs
            for fmt in ("direct", "cot")]
    rng.shuffle(recs)
    return recs


def lora_config():
    from inweights.config import LoraConfig

    return LoraConfig(r=16, alpha=32, target_modules=["all-linear"])


def fresh(mode: str):
    from inweights.models import load_model
    from inweights.models.presets import smollm2_dir

    return load_model(smollm2_dir(), "float32", lora_config() if mode == "lora" else None)


def train_config(args, mode: str):
    from inweights.config import TrainConfig

    return TrainConfig(batch_size=args.rows, max_len=args.max_len, lr=1e-3 if mode == "lora" else 2e-4,
                       warmup_frac=0.1, log_every=10**6, save_every=10**6)


def bench_ours(mode: str, records, args, work: Path) -> dict[str, Any]:
    from inweights.curriculum import TokenCache
    from inweights.train.data import PackedBatches
    from inweights.train.loop import train_stage

    model, tok = fresh(mode)
    cache = TokenCache(tok)
    examples = [cache(r, "completion") for r in records]
    batches = CountingBatches(PackedBatches(lambda rng: examples[rng.randrange(len(examples))], 7, args.rows,
                                            args.max_len, tok.pad_token_id), tok.pad_token_id)
    clock = StepClock()
    train_stage(model, batches, args.steps, train_config(args, mode), work / f"ours_{mode}", save_every=10**9,
                desc=f"ours {mode}", on_step=clock)
    out = warm_rate(clock.ends, batches.real, batches.slot_counts, args.skip)
    out["mean_example_tokens"] = sum(len(e[0]) for e in examples) / len(examples)
    return out


def bench_trl(mode: str, records, args, work: Path) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from inweights.train.loop import bf16_supported

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[tuple[float, float]] = []

        def on_step_end(self, a, state, control, **kwargs):
            self.ends.append(now())

    t = train_config(args, mode)
    peft_config = None
    if mode == "lora":
        from peft import LoraConfig as PeftLora

        lc = lora_config()
        peft_config = PeftLora(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules="all-linear",
                               task_type="CAUSAL_LM")
    sft = SFTConfig(output_dir=str(work / f"trl_{mode}"), max_steps=args.steps, per_device_train_batch_size=args.rows,
                    gradient_accumulation_steps=1, learning_rate=t.lr, lr_scheduler_type="cosine_with_min_lr",
                    lr_scheduler_kwargs={"min_lr_rate": t.min_lr_ratio}, warmup_steps=int(t.warmup_frac * args.steps),
                    weight_decay=t.weight_decay, adam_beta2=0.95, max_grad_norm=t.grad_clip,
                    bf16=bool(t.bf16 and bf16_supported()), use_cpu=not torch.cuda.is_available(),
                    gradient_checkpointing=False, packing=True, max_length=args.max_len, completion_only_loss=True,
                    report_to=[], eval_strategy="no", save_strategy="no", logging_strategy="no", disable_tqdm=True,
                    dataloader_num_workers=0, seed=0)
    model, tok = fresh("full")  # TRL wraps the base with peft_config itself
    ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in records])
    trainer = SFTTrainer(model=model, args=sft, train_dataset=ds, processing_class=tok, peft_config=peft_config)
    counter = CountingCollator(trainer.data_collator, tok.pad_token_id)
    trainer.data_collator = counter
    clock = Clock()
    trainer.add_callback(clock)
    trainer.train()
    if len(clock.ends) != args.steps:
        raise RuntimeError(f"TRL ran {len(clock.ends)} steps, expected {args.steps}")
    out = warm_rate(clock.ends, counter.real[: args.steps], counter.slots[: args.steps], args.skip)
    out["mean_example_tokens"] = sum(len(x) for x in trainer.train_dataset["input_ids"]) / len(records)
    return out


def shapes(conf) -> list[tuple[int, int, int]]:
    """(in, out, count) of every linear layer's matrix; the tied output layer once."""
    h, i = conf.hidden_size, conf.intermediate_size
    hd = getattr(conf, "head_dim", None) or h // conf.num_attention_heads
    kv = conf.num_key_value_heads * hd
    n = conf.num_hidden_layers
    return [(h, conf.num_attention_heads * hd, 2 * n), (h, kv, 2 * n), (h, i, 2 * n), (i, h, n), (h, conf.vocab_size, 1)]


@torch.no_grad()
def gemm_rates(conf, tokens: int, reps: int = 3) -> dict[str, float]:
    """FLOP-weighted forward GEMM GFLOP/s over the model's linear shapes at ``tokens`` rows, fp32 and bf16."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        flops = secs = 0.0
        for k, n, count in shapes(conf):
            # operands already in the dtype: the GEMM alone, not autocast's casts around it
            x, w = torch.randn(tokens, k).to(dtype), (torch.randn(n, k) / k**0.5).to(dtype)
            torch.nn.functional.linear(x, w)  # warm
            t = time.perf_counter()
            for _ in range(reps):
                torch.nn.functional.linear(x, w)
            dt = (time.perf_counter() - t) / reps
            flops += 2 * tokens * k * n * count
            secs += dt * count
        out[name] = flops / secs / 1e9
    return out


def flops_per_token(conf, mode: str, attended: float) -> float:
    n = sum(k * m * c for k, m, c in shapes(conf))
    attn = 12 * conf.num_hidden_layers * conf.hidden_size * attended
    if mode == "full":
        return 6 * n + attn
    r = lora_config().r
    adapters = sum((k + m) * r * c for k, m, c in shapes(conf)[:-1])  # all-linear: not the output layer
    return 4 * n + 6 * adapters + attn


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--skip", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    from inweights.core.provenance import bf16_supported

    load0 = os.getloadavg()[0]
    model, tok = fresh("full")
    conf = model.config
    del model
    records = records_for(tok, 0)
    rates = gemm_rates(conf, args.rows * args.max_len)
    results: dict[str, Any] = {}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for mode in args.modes:
            runs: dict[str, list] = {"ours": [], "trl": []}
            for r in range(args.repeats):
                for who in (("ours", "trl") if r % 2 == 0 else ("trl", "ours")):
                    print(f"{mode}: {who} [{r + 1}/{args.repeats}] ...", file=sys.stderr, flush=True)
                    fn = bench_ours if who == "ours" else bench_trl
                    runs[who].append(fn(mode, records, args, Path(d)))
            res = {who: {**pool(v), "mean_example_tokens": v[0]["mean_example_tokens"]} for who, v in runs.items()}
            attended = res["ours"]["mean_example_tokens"] / 2
            fpt = flops_per_token(conf, mode, attended)
            for r_ in res.values():
                gflops = r_["tok_s"] * fpt / 1e9
                r_.update(model_gflops=gflops, mfu_fp32=gflops / rates["fp32"], mfu_bf16=gflops / rates["bf16"])
            results[mode] = {**res, "flops_per_token": fpt}
            rows.append({"mode": mode, "ours_tok_s": res["ours"]["tok_s"], "trl_tok_s": res["trl"]["tok_s"],
                         "ratio": res["ours"]["tok_s"] / res["trl"]["tok_s"],
                         "ratio_cpu_time": res["ours"]["tok_per_cpu_s"] / res["trl"]["tok_per_cpu_s"],
                         "ours_mfu_fp32": res["ours"]["mfu_fp32"], "trl_mfu_fp32": res["trl"]["mfu_fp32"],
                         "ours_mfu_bf16": res["ours"]["mfu_bf16"], "trl_mfu_bf16": res["trl"]["mfu_bf16"]})
    bf16 = bf16_supported()
    head = (f"GEMM at the model's shapes ({args.rows * args.max_len} rows, {args.threads} threads): fp32 "
            f"{rates['fp32']:.0f} GFLOP/s, bf16 {rates['bf16']:.0f} GFLOP/s; training in "
            f"{'bf16 autocast' if bf16 else 'fp32'}")
    cols = ("| SmolLM2-135M | ours tok/s | TRL `SFTTrainer` tok/s | ratio | ours MFU vs fp32 GEMM | "
            "TRL MFU vs fp32 GEMM | ours MFU vs bf16 GEMM |")
    lines = [head, "", cols, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['ours_tok_s']:,.0f} | {r['trl_tok_s']:,.0f} | **{r['ratio']:.2f}×** | "
                     f"{r['ours_mfu_fp32']:.0%} | {r['trl_mfu_fp32']:.0%} | {r['ours_mfu_bf16']:.0%} |")
    table = "\n".join(lines)
    print(table)
    import trl

    meta = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": args.threads, "bf16_autocast": bf16,
            "args": {k: str(v) for k, v in vars(args).items()}, "gemm_gflops": rates,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "trl": trl.__version__, "python": platform.python_version()},
            "loadavg_1m_start": load0, "loadavg_1m_end": os.getloadavg()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows, "details": results, "table": table}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
