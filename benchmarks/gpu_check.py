"""The GPU path, checked in one script: run it on a machine with one CUDA GPU, from the repository root
(it uses the shipped prepared bases), nothing downloaded, ~8 minutes at most.

Parts (each timed, each pass/fail with its error, tokens/s where training runs):

1. ``environment``: torch, CUDA, the GPU's name and memory, bf16 support.
2. ``train_bf16_full`` / ``train_bf16_lora``: the stage engine (``train.loop.train_stage``) on the tiny preset in
   bf16 autocast, full fine-tuning and LoRA; every parameter on the GPU; loss finite; tokens/s.
3. ``pbb_recipe``: one PBB recipe end to end through ``inweights.run`` (the smoke config on the GPU): trained,
   probed, reported; the stage engine says it ran on CUDA.
4. ``distill_step``: rule distillation (KL + hidden states) from the shipped rules base, one k, one seed.
5. ``grpo_step``: a GRPO stage (retroactive_grpo on the smoke config).
6. ``vllm_generate``: the evaluation with ``eval.backend: vllm`` when vLLM is installed (skipped otherwise).

Writes benchmarks/results/gpu_check.json (``--out``) and prints a Markdown table for docs/gpus.md.
``--allow-cpu`` runs the parts that make sense on a CPU (fp32, no vLLM): a dry run of this script itself.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _environment(cuda: bool) -> dict:
    import torch

    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if cuda:
        p = torch.cuda.get_device_properties(0)
        out |= {"gpu": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                "bf16": torch.cuda.is_bf16_supported(), "devices": torch.cuda.device_count()}
    return out


def _train(cuda: bool, lora: bool, steps: int) -> dict:
    import random

    import torch

    from inweights.config import LoraConfig, TinyConfig, TrainConfig
    from inweights.models import build_tiny, train_tokenizer
    from inweights.train.data import PackedBatches
    from inweights.train.loop import get_accelerator, train_stage

    texts = [" ".join(random.Random(i).choice("abcdefgh") for _ in range(40)) for i in range(200)]
    tok = train_tokenizer(texts, 320)
    model = build_tiny(TinyConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=768, vocab_size=320),
                       tok, 0)
    if lora:
        from inweights.models.load import add_lora

        model = add_lora(model, LoraConfig(r=8, alpha=16))
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    def sample(rng):
        x = rng.choice(ids)
        return x, list(x)

    batches = PackedBatches(sample, 0, rows=8, max_len=256,
                            pad_id=tok.pad_token_id or 0)
    cfg = TrainConfig(batch_size=8, max_len=256, lr=1e-3, bf16=cuda, log_every=5)
    with tempfile.TemporaryDirectory() as d:
        res = train_stage(model, batches, steps, cfg, Path(d), desc="gpu_check", progress=False)
    dev = {str(p.device.type) for p in res["model"].parameters()}
    want = get_accelerator().device.type
    loss = res["history"][-1]["loss"]
    ok = dev == {want} and math.isfinite(loss) and (not cuda or want == "cuda")
    trainable = sum(p.numel() for p in res["model"].parameters() if p.requires_grad)
    return {"ok": ok, "tok_s": round(res["tok_s"]), "steps": res["steps"], "final_loss": round(loss, 4),
            "devices": sorted(dev), "trainable_params": trainable, "bf16": cfg.bf16 and torch.cuda.is_available()}


def _run(config, out: Path, **kw) -> dict:
    import inweights

    res = inweights.run(config, out=out, **kw)
    return {"state": res.state, "summary": res.summary}


def _engine(out: Path) -> list[str]:
    return sorted({json.loads((out / "steps" / f"{d.name}.json").read_text())["record"].get("engine", "?")
                   for d in out.glob("stages/*")})


def _pbb(cuda: bool, tmp: Path) -> dict:
    r = _run("smoke", tmp / "pbb", overrides=["recipes=[proactive]"])
    eng = _engine(tmp / "pbb")
    cell = r["summary"]["rows"]["proactive"]["cells"]["without_io/in_weights/cot"]
    return {"ok": r["state"] == "finished" and bool(eng), "engine": eng, "without_io_cot": cell["acc"],
            "stage_tok_s": [s["tok_s"] for s in r["summary"]["rows"]["proactive"]["stages"]]}


def _distill(cuda: bool, tmp: Path) -> dict:
    raw = {"name": "gpu_check_distill", "domain": {"name": "rules", "rules": {"n_test": 8}},
           "model": {"prepared_base": str(ROOT / "configs" / "prepare_rules.yaml"), "lora": {"r": 8, "alpha": 16}},
           "recipes": ["rule_distill_base"],
           "distill": {"ks": [4], "seeds": [0], "epochs": 2, "batch_size": 4, "lr": 1e-3}, "eval": {"batch_size": 32}}
    r = _run(raw, tmp / "distill")
    return {"ok": r["state"] == "finished", "cells": len(r["summary"].get("cells", []))}


def _grpo(cuda: bool, tmp: Path) -> dict:
    r = _run("smoke", tmp / "grpo", overrides=["recipes=[retroactive_grpo]", "pbb.rl_steps=2",
                                               "grpo={group_size: 2, prompts_per_step: 2, max_completion_length: 8}"])
    stages = r["summary"]["rows"]["retroactive_grpo"]["stages"]
    return {"ok": r["state"] == "finished" and len(stages) == 2, "engine": _engine(tmp / "grpo")}


def _vllm(cuda: bool, tmp: Path) -> dict:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return {"ok": None, "skipped": "vllm is not installed (pip install 'inweights[vllm]')"}
    if not cuda:
        return {"ok": None, "skipped": "vLLM needs a GPU"}
    r = _run("smoke", tmp / "vllm", overrides=["recipes=[proactive]", "eval.backend=vllm"])
    return {"ok": r["state"] == "finished"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    ap.add_argument("--steps", type=int, default=60, help="training steps per bf16 part")
    ap.add_argument("--allow-cpu", action="store_true", help="dry run on a CPU (fp32, no vLLM)")
    ap.add_argument("--only", nargs="*", help="run only these parts")
    args = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); --allow-cpu for a dry run",
              file=sys.stderr)
        return 2
    from inweights.core.progress import set_mode

    set_mode("none")
    parts = {"environment": lambda tmp: {"ok": True, **_environment(cuda)},
             "train_bf16_full": lambda tmp: _train(cuda, False, args.steps),
             "train_bf16_lora": lambda tmp: _train(cuda, True, args.steps),
             "pbb_recipe": lambda tmp: _pbb(cuda, tmp), "distill_step": lambda tmp: _distill(cuda, tmp),
             "grpo_step": lambda tmp: _grpo(cuda, tmp), "vllm_generate": lambda tmp: _vllm(cuda, tmp)}
    results = {}
    with tempfile.TemporaryDirectory() as d:
        for name, fn in parts.items():
            if args.only and name not in args.only:
                continue
            t0 = time.perf_counter()
            try:
                res = fn(Path(d))
            except Exception as e:  # noqa: BLE001 - every part reports, whatever fails
                res = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500], "trace": traceback.format_exc()[-1500:]}
            res["seconds"] = round(time.perf_counter() - t0, 1)
            results[name] = res
            print(f"{name}: {'skipped' if res['ok'] is None else 'ok' if res['ok'] else 'FAILED'} "
                  f"({res['seconds']} s)", flush=True)
    from inweights.core.provenance import provenance

    record = {"cuda": cuda, "parts": results, "provenance": provenance()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print("\n| part | result | seconds | tokens/s |\n|---|---|---|---|")
    for name, r in results.items():
        verdict = "skipped" if r["ok"] is None else "pass" if r["ok"] else f"FAIL: {r.get('error', '')[:80]}"
        print(f"| {name} | {verdict} | {r['seconds']} | {r.get('tok_s', '')} |")
    return 0 if all(r["ok"] is not False for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
