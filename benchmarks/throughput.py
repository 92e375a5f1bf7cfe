"""Throughput of inweights' trainer and generator against plain Hugging Face baselines, side by side.

Measured in one run, on the ``tiny`` preset of ``configs/prepare_tiny.yaml``:

1. SFT training tokens/s: ``inweights.train.loop.train_stage`` on ``PackedBatches`` against TRL's
   ``SFTTrainer`` (``packing=True``; once with TRL's default ``bfd`` strategy, which makes the batch
   padding-free, and once with ``wrapped``, whose fixed ``rows x max_len`` batches have the same shape
   as ours). Same initial weights (one state dict copied into each model), same records (in-context
   views of the same units, both answer formats, loss on the completion only), same optimiser-step
   count, same rows per step and row length, same bf16 autocast setting, same thread count.
   Tokens counted: the real (non-pad) tokens in the batches fed to the model; for ours the padding at
   the end of each packed row is processed but not counted. Time: wall clock of the training loop
   between the end of step ``skip`` and the end of the last step (warm steps only; the first ``skip``
   steps, dataloader start-up and trainer construction are excluded). Tokenisation is excluded for
   both (ours: records pre-tokenised before the loop; TRL: its dataset preparation runs in
   ``SFTTrainer.__init__``); packing is inside the timed loop for ours (on the fly) and outside it
   for TRL (done at preparation), collation is inside it for TRL. Each trainer runs ``--repeats``
   times in alternating order (ours, TRL..., then reversed) and its rate is pooled (total tokens /
   total seconds), so that a drift in machine load hits every trainer alike. TRL runs with
   ``gradient_checkpointing=False`` (its default is True; ours does not checkpoint) and its default
   optimiser (fused AdamW).
2. Evaluation generation tokens/s: ``inweights.eval.generate.generate(backend="transformers")`` (length-sorted, left-padded
   batches, KV cache) against a loop calling ``model.generate`` one prompt at a time. Same prompts
   (in-context chain-of-thought prompts), same ``max_new_tokens``, greedy, fp32. Tokens counted: the
   tokens each prompt generates up to and including EOS (read from the ids ``model.generate``
   returns, for both), over the wall time of the whole call including tokenisation and decoding.
   Ours runs before and after the baseline (pooled), after one short warm-up call each.
   The match rate of the two sets of outputs is reported, not asserted (left-padded batched fp32
   arithmetic may flip a near-tie).

The generation benchmark uses the prepared base (``prepared/prepare_tiny``) when it exists, so that
outputs stop at realistic lengths; otherwise a random-init tiny model, which rarely emits EOS, so every
prompt runs to ``max_new_tokens`` (a best case for batching: no row idles after finishing).

Usage: python benchmarks/throughput.py [--steps N] [--gen-prompts N] [--quick]
Prints a Markdown table and writes it, with details, to benchmarks/results/throughput.json.
No timing is asserted; CPU numbers vary with load (the 1-minute load average is recorded, and the
ratios are also given by process CPU time, which other jobs on the machine disturb less).
"""

from __future__ import annotations

import argparse
import copy
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
CONFIG = ROOT / "configs" / "prepare_tiny.yaml"
PREPARED = ROOT / "prepared" / "prepare_tiny"
RESULTS = ROOT / "benchmarks" / "results" / "throughput.json"


# ----------------------------------------------------------------------------------------- helpers
def now() -> tuple[float, float]:
    """(wall clock, this process's CPU time): CPU time is less sensitive to other jobs on a shared machine."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


class StepClock:
    """(wall, CPU) time at the end of every optimiser step."""

    def __init__(self) -> None:
        self.ends: list[tuple[float, float]] = []

    def __call__(self, step: int, model) -> bool:  # inweights' on_step hook
        self.ends.append(now())
        return False


class CountingBatches:
    """Wraps PackedBatches: records the real (non-pad) and total token slots of every batch."""

    def __init__(self, inner, pad_id: int) -> None:
        self.inner, self.pad_id = inner, pad_id
        self.real: list[int] = []
        self.slot_counts: list[int] = []

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.inner)
        self.real.append(int((batch["input_ids"] != self.pad_id).sum()))
        self.slot_counts.append(int(batch["input_ids"].numel()))
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CountingCollator:
    """Wraps TRL's collator: records the real (non-pad) and total token slots of every batch."""

    def __init__(self, inner, pad_id: int) -> None:
        self.inner, self.pad_id = inner, pad_id
        self.real: list[int] = []
        self.slots: list[int] = []

    def __call__(self, examples):
        out = self.inner(examples)
        ids = out["input_ids"]
        # padding-free batches carry no attention_mask and no padding (pad_to_multiple_of is None)
        real = out["attention_mask"].sum() if "attention_mask" in out else ids.numel()
        self.real.append(int(real))
        self.slots.append(int(ids.numel()))
        return out


def warm_rate(
    ends: list[tuple[float, float]], real: list[int], slots: list[int], skip: int
) -> dict[str, Any]:
    """Tokens/s over steps skip+1..n, from the end of step ``skip`` to the end of the last step."""
    n = len(ends)
    if n <= skip or skip < 1:
        raise ValueError(f"need more than skip={skip} >= 1 steps, got {n}")
    seconds = ends[-1][0] - ends[skip - 1][0]
    cpu_seconds = ends[-1][1] - ends[skip - 1][1]
    tokens, slots_n = sum(real[skip:n]), sum(slots[skip:n])
    return {
        "steps_timed": n - skip,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "tokens": tokens,
        "tok_s": tokens / seconds,
        "tok_per_cpu_s": tokens / cpu_seconds,
        "slots": slots_n,
        "slots_tok_s": slots_n / seconds,
        "tokens_per_step": tokens / (n - skip),
        "pad_fraction": 1 - tokens / slots_n,
    }


# ------------------------------------------------------------------------------------------ setup
def setup(args):
    from inweights import views
    from inweights.config import load_config
    from inweights.core.seeds import derive_seed
    from inweights.curriculum import corpus_texts
    from inweights.domains.programs import ProgramsDomain
    from inweights.models import build_tiny, load_model, train_tokenizer

    cfg = load_config(CONFIG)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    domain = ProgramsDomain(cfg.domain.programs, cfg.seed)
    units = domain.build()[: args.units]
    gen_model = None
    if (PREPARED / "config.json").is_file():
        gen_model, tok = load_model(PREPARED)
        model_source = f"prepared base ({PREPARED.relative_to(ROOT)})"
    else:
        tok = train_tokenizer(corpus_texts(domain, units, cfg.seed), cfg.model.tiny.vocab_size)
        model_source = "random-init tiny (no prepared base found)"
    rng = random.Random(derive_seed(cfg.seed, "bench", "records"))
    records = [
        views.in_context(domain, u, x, fmt, rng)
        for u in units
        for x in u.train_inputs
        for fmt in ("direct", "cot")
    ]
    rng.shuffle(records)
    init = build_tiny(cfg.model.tiny, tok, cfg.seed)
    init_state = copy.deepcopy(init.state_dict())
    if gen_model is None:
        gen_model = init
    if torch.cuda.is_available():
        gen_model.to("cuda")
    prng = random.Random(derive_seed(cfg.seed, "bench", "prompts"))
    prompts = []
    for i in range(args.gen_prompts):
        u = units[i % len(units)]
        x = u.test_inputs[(i // len(units)) % len(u.test_inputs)]
        prompts.append(views.in_context(domain, u, x, "cot", prng)["prompt"])
    return cfg, tok, records, init_state, gen_model, model_source, prompts


def fresh_model(cfg, tok, init_state):
    from inweights.models import build_tiny

    m = build_tiny(cfg.model.tiny, tok, cfg.seed)
    m.load_state_dict(init_state)
    return m


# --------------------------------------------------------------------------------------- training
def bench_ours(cfg, tok, records, init_state, steps: int, skip: int, work: Path) -> dict[str, Any]:
    from inweights.core.seeds import derive_seed
    from inweights.curriculum import TokenCache
    from inweights.train.data import PackedBatches
    from inweights.train.loop import train_stage

    cache = TokenCache(tok)
    examples = [cache(r, "completion") for r in records]  # tokenise before the timed loop

    def sample(rng: random.Random):
        return examples[rng.randrange(len(examples))]

    batches = CountingBatches(
        PackedBatches(
            sample,
            derive_seed(cfg.seed, "bench", "stream"),
            cfg.train.batch_size,
            cfg.train.max_len,
            tok.pad_token_id,
        ),
        tok.pad_token_id,
    )
    clock = StepClock()
    model = fresh_model(cfg, tok, init_state)
    res = train_stage(
        model, batches, steps, cfg.train, work / "ours", save_every=10**9, desc="inweights", on_step=clock
    )
    out = warm_rate(clock.ends, batches.real, batches.slot_counts, skip)
    out["final_loss"] = res["history"][-1]["loss"] if res["history"] else None
    out["mean_example_tokens"] = sum(len(e[0]) for e in examples) / len(examples)
    return out


def bench_trl(
    cfg, tok, records, init_state, steps: int, skip: int, work: Path, strategy: str
) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from inweights.train.loop import bf16_supported

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[tuple[float, float]] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(now())

    ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in records])
    t = cfg.train
    sft_args = SFTConfig(
        output_dir=str(work / f"trl_{strategy}"),
        max_steps=steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=t.lr,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": t.min_lr_ratio},
        warmup_steps=int(t.warmup_frac * steps),
        weight_decay=t.weight_decay,
        adam_beta2=0.95,
        max_grad_norm=t.grad_clip,
        bf16=bool(t.bf16 and bf16_supported()),
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,  # TRL defaults to True; ours does not checkpoint
        packing=True,
        packing_strategy=strategy,
        max_length=t.max_len,
        completion_only_loss=True,
        report_to=[],
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=cfg.seed,
    )
    model = fresh_model(cfg, tok, init_state)
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=ds, processing_class=tok)
    counter = CountingCollator(trainer.data_collator, tok.pad_token_id)
    trainer.data_collator = counter
    clock = Clock()
    trainer.add_callback(clock)
    trainer.train()
    if len(clock.ends) != steps:
        raise RuntimeError(f"TRL ran {len(clock.ends)} steps, expected {steps}")
    # a step consumes one batch (no gradient accumulation); batches collated beyond the last step are ignored
    out = warm_rate(clock.ends, counter.real[:steps], counter.slots[:steps], skip)
    out["packed_rows"] = len(trainer.train_dataset)
    out["mean_example_tokens"] = sum(len(x) for x in trainer.train_dataset["input_ids"]) / len(records)
    return out


def pool(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled rate over repeated runs: total tokens / total time."""
    tokens = sum(r["tokens"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    cpu = sum(r["cpu_seconds"] for r in runs)
    slots = sum(r["slots"] for r in runs)
    return {
        "steps_timed": sum(r["steps_timed"] for r in runs),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "tokens": tokens,
        "tok_s": tokens / seconds,
        "tok_per_cpu_s": tokens / cpu,
        "slots_tok_s": slots / seconds,
        "tokens_per_step": tokens / sum(r["steps_timed"] for r in runs),
        "slots": slots,
        "pad_fraction": 1 - tokens / slots,
        "tok_s_per_run": [r["tok_s"] for r in runs],
    }


# ------------------------------------------------------------------------------------- generation
def new_tokens(gen: torch.Tensor, prompt_width: int, eos: int) -> tuple[int, int]:
    """(generated tokens up to and including the first EOS summed over rows, rows without an EOS)."""
    total = no_eos = 0
    for row in gen[:, prompt_width:].tolist():
        total += row.index(eos) + 1 if eos in row else len(row)
        no_eos += eos not in row
    return total, no_eos


class GenerateCounter:
    """Shadows ``model.generate`` to count the tokens every call produces (same counting for both)."""

    def __init__(self, model, eos: int) -> None:
        self.model, self.orig, self.eos = model, model.generate, eos
        self.tokens = self.no_eos = 0

    def __call__(self, *a, **kw):
        out = self.orig(*a, **kw)
        n, no_eos = new_tokens(out, kw["input_ids"].shape[1], self.eos)
        self.tokens += n
        self.no_eos += no_eos
        return out

    def __enter__(self):
        self.model.generate = self
        return self

    def __exit__(self, *exc):
        del self.model.generate


@torch.no_grad()
def per_prompt(model, tok, prompts, max_new_tokens: int) -> list[str]:
    from inweights.train.data import render

    model.eval()
    device = next(model.parameters()).device
    outs = []
    for p in prompts:
        ids = tok(render(tok, p, add_generation_prompt=True), add_special_tokens=False, return_tensors="pt")[
            "input_ids"
        ]
        ids = ids.to(device)
        gen = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            use_cache=True,
        )
        outs.append(tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
    return outs


def bench_generation(model, tok, prompts, max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    from inweights.eval.generate import generate

    model.eval()
    # warm-up: one short call each (allocator, first-call overheads)
    generate(model, tok, prompts[:2], max_new_tokens=4, batch_size=batch_size, backend="transformers")
    per_prompt(model, tok, prompts[:2], 4)

    def timed(fn) -> tuple[list[str], dict[str, Any]]:
        with GenerateCounter(model, tok.eos_token_id) as c:
            t0, c0 = now()
            outs = fn()
            t1, c1 = now()
        return outs, {"seconds": t1 - t0, "cpu_seconds": c1 - c0, "tokens": c.tokens, "no_eos": c.no_eos}

    def batched() -> list[str]:
        return generate(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        backend="transformers")

    # ours before and after the baseline (pooled), so that a drift in machine load hits both alike
    ours, first = timed(batched)
    base, baseline = timed(lambda: per_prompt(model, tok, prompts, max_new_tokens))
    _, second = timed(batched)
    res: dict[str, Any] = {"ours_runs": [first, second], "baseline": baseline}
    res["ours"] = {k: first[k] + second[k] for k in first}
    for k in ("ours", "baseline"):
        res[k]["tok_s"] = res[k]["tokens"] / res[k]["seconds"]
        res[k]["tok_per_cpu_s"] = res[k]["tokens"] / res[k]["cpu_seconds"]
    res["prompts"] = len(prompts)
    res["max_new_tokens"] = max_new_tokens
    res["batch_size"] = batch_size
    res["matches"] = sum(a == b for a, b in zip(ours, base, strict=True))
    res["mean_new_tokens_baseline"] = res["baseline"]["tokens"] / len(prompts)
    return res


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per trainer (default 40)")
    ap.add_argument("--skip", type=int, default=None, help="warm-up steps left out of the timing (default 2)")
    ap.add_argument("--gen-prompts", type=int, default=None, help="prompts for generation (default 128)")
    ap.add_argument("--gen-batch", type=int, default=64, help="batch size of inweights' generator")
    ap.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="default: eval.max_new_tokens with the prepared base, 64 with a random-init model",
    )
    ap.add_argument("--units", type=int, default=None, help="units the records come from (default 150)")
    ap.add_argument("--trl-strategies", default="bfd,wrapped", help="TRL packing strategies to run")
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="training runs per trainer, in alternating order, pooled (default 2; --quick 1)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smoke check: 3 steps, 8 prompts, 16 new tokens")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    q = args.quick
    args.steps = args.steps or (3 if q else 40)
    args.skip = args.skip if args.skip is not None else (1 if q else 2)
    args.gen_prompts = args.gen_prompts or (8 if q else 128)
    args.units = args.units or (40 if q else 150)
    args.repeats = args.repeats or (1 if q else 2)
    strategies = [s for s in args.trl_strategies.split(",") if s]
    if args.steps <= args.skip:
        ap.error("--steps must exceed --skip")

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers
    import trl

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    from inweights.train.loop import bf16_supported

    load0 = os.getloadavg()[0]
    cfg, tok, records, init_state, gen_model, model_source, prompts = setup(args)
    prepared = model_source.startswith("prepared")
    max_new = args.max_new_tokens or (16 if q else (cfg.eval.max_new_tokens if prepared else 64))

    rows, details = [], {}
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], **{s: [] for s in strategies}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for r in range(args.repeats):  # alternate the order (ABC, CBA, ...) so that load drift hits all alike
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for name in order:
                print(f"training [{r + 1}/{args.repeats}]: {name}, {args.steps} steps ...", file=sys.stderr)
                d = work / f"r{r}"
                if name == "ours":
                    runs[name].append(bench_ours(cfg, tok, records, init_state, args.steps, args.skip, d))
                else:
                    runs[name].append(
                        bench_trl(cfg, tok, records, init_state, args.steps, args.skip, d, name)
                    )
    pooled = {
        name: {**pool(rs), "mean_example_tokens": rs[0]["mean_example_tokens"]} for name, rs in runs.items()
    }
    details["train_ours"] = {**pooled["ours"], "runs": runs["ours"]}
    ours = pooled["ours"]
    for s in strategies:
        base = pooled[s]
        details[f"train_trl_{s}"] = {**base, "runs": runs[s]}
        name = f"TRL {trl.__version__} SFTTrainer, packing={s}" + (
            " (padding-free)" if s != "wrapped" else ""
        )
        rows.append(
            {
                "what": "SFT training (warm steps)",
                "baseline": name,
                "ours_tok_s": ours["tok_s"],
                "baseline_tok_s": base["tok_s"],
                "ratio": ours["tok_s"] / base["tok_s"],
                "ratio_cpu_time": ours["tok_per_cpu_s"] / base["tok_per_cpu_s"],
            }
        )
    print(f"generation: {len(prompts)} prompts, max_new_tokens={max_new} ...", file=sys.stderr)
    gen = bench_generation(gen_model, tok, prompts, max_new, args.gen_batch)
    details["generation"] = gen
    rows.append(
        {
            "what": f"eval generation, greedy ({gen['matches']}/{gen['prompts']} outputs identical)",
            "baseline": "model.generate, one prompt at a time",
            "ours_tok_s": gen["ours"]["tok_s"],
            "baseline_tok_s": gen["baseline"]["tok_s"],
            "ratio": gen["ours"]["tok_s"] / gen["baseline"]["tok_s"],
            "ratio_cpu_time": gen["ours"]["tok_per_cpu_s"] / gen["baseline"]["tok_per_cpu_s"],
        }
    )

    meta = {
        "config": str(CONFIG.relative_to(ROOT)),
        "tiny": cfg.model.tiny.model_dump(),
        "rows_per_step": cfg.train.batch_size,
        "max_len": cfg.train.max_len,
        "bf16_autocast": bool(cfg.train.bf16 and bf16_supported()),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "skip": args.skip,
        "repeats": args.repeats,
        "records": len(records),
        "units": args.units,
        "generation_model": model_source,
        "quick": q,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "python": platform.python_version(),
        },
        "loadavg_1m_start": load0,
        "loadavg_1m_end": os.getloadavg()[0],
        "tokens_counted": "training: real (non-pad) tokens fed to the model; "
        "generation: new tokens up to and including EOS",
        "timed": "training: end of step `skip` to end of last step; "
        "generation: whole call, after a warm-up call",
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    table = markdown(rows)
    print(table)
    print()
    for k, v in details.items():
        if k.startswith("train"):
            print(
                f"- {k}: {v['mean_example_tokens']:.1f} tokens/example, "
                f"{v['tokens_per_step']:.0f} real tokens/step, pad {v['pad_fraction']:.1%} of slots, "
                f"{v['slots_tok_s']:.0f} slots/s, {v['steps_timed']} timed steps in {v['seconds']:.1f}s "
                f"({v['cpu_seconds']:.1f} CPU-s, {v['tok_per_cpu_s']:.0f} tokens per CPU-s); tok/s per run "
                + ", ".join(f"{x:.0f}" for x in v["tok_s_per_run"])
            )
    for r in rows:
        print(f"- ratio by CPU time instead of wall time, vs {r['baseline']}: {r['ratio_cpu_time']:.2f}x")
    print(
        f"- generation: {model_source}; {gen['mean_new_tokens_baseline']:.1f} new tokens/prompt; "
        f"{gen['baseline']['no_eos']} prompts hit max_new_tokens; "
        f"ours {gen['ours']['seconds']:.1f}s (2 runs) "
        f"vs per-prompt {gen['baseline']['seconds']:.1f}s; "
        f"outputs identical {gen['matches']}/{gen['prompts']}"
    )
    print(
        f"- load average (1 min) {load0:.2f} at start, {meta['loadavg_1m_end']:.2f} at end; "
        f"threads {meta['threads']}; bf16 autocast {meta['bf16_autocast']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"meta": meta, "rows": rows, "details": details, "table": table}, indent=2) + "\n"
    )
    print(f"wrote {args.out}")
    return 0


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| what | baseline | ours tok/s | baseline tok/s | ratio |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['baseline']} | {r['ours_tok_s']:,.0f} | {r['baseline_tok_s']:,.0f} | "
            f"{r['ratio']:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
