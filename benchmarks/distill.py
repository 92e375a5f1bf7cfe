"""Rule distillation's two hot paths against the way they ran before, side by side in one run.

On the real cell of ``configs/rule_distill_map_smollm2.yaml`` (its first held-out table, k = 1, seed 0: the
prepared SmolLM2 base, a LoRA r 16 student on q/k/v/o, the k gold examples plus the teacher's answers to the
transfer inputs, batch 4, fp32, 2 threads):

- ``distill stage``: ``train.distill.PairObjective`` with the frozen teacher's answer-position logits and hidden
  states computed once and kept (the default) against the baseline that runs the teacher beside the student every
  step (``PairObjective.cache_bytes = 0``, the code before). Both train from the same adapter initialisation for
  ``--epochs`` epochs; time per step, and the largest difference of the losses and of the final weights (the two
  differ only by float rounding: the kept rows come from other batches).
- ``student answers``: the cell's 100 test prompts (50 ID, 50 OOD) answered by the trained student through
  ``rule_distill.run.Answers`` (a merged copy, so the lean decoder drives it) against the baseline of
  ``generate`` on the PEFT model (transformers' ``generate``, which the lean decoder does not drive); the number
  of identical outputs is reported.

Each pair runs alternately ``--repeats`` times and is pooled. Writes benchmarks/results/distill.json and prints a
Markdown table. No timing is asserted anywhere.

Usage: python benchmarks/distill.py [--epochs N] [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "rule_distill_map_smollm2.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "distill.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from inweights.config import load_config
    from inweights.eval.generate import generate
    from inweights.models.load import load_model
    from inweights.regimes.rule_distill import run as rd
    from inweights.regimes.rule_distill.tasks import Example, generated_tasks, split
    from inweights.runs import load_units
    from inweights.train.distill import PairObjective

    cfg = load_config(CONFIG)
    cfg = cfg.model_copy(update={"distill": cfg.distill.model_copy(update={"epochs": args.epochs})})
    task = generated_tasks(cfg, *load_units(cfg))[0]
    base_path, _ = rd.base_model_path(cfg, CONFIG)
    base, tok = load_model(base_path)
    base = rd.frozen(base)
    enc = rd.Encoder(tok)
    train_ex, val_ex = split(task, 1, 0, cfg.seed)
    answers = rd.Answers(base)
    outs = answers(base, tok, [[{"role": "user", "content": e.teacher}] for e in task.transfer], cfg)
    labelled = [Example(e.student, e.teacher, o.strip(), e.gold, e.x) for e, o in zip(task.transfer, outs)
                if task.read(o) is not None]
    examples = train_ex + labelled

    def stage(cache: bool):
        PairObjective.cache_bytes = (2 << 30) if cache else 0
        model = rd.trainable_copy(base, cfg, 1)
        t0 = time.perf_counter()
        res = rd.train(model, enc, examples, val_ex, cfg, 2, side="student", teacher="adapter_off")
        seconds = time.perf_counter() - t0
        steps = -(-len(examples) // cfg.distill.batch_size) * args.epochs
        return model, res, seconds, steps

    runs: dict[str, list] = {"cached": [], "every_step": []}
    for _ in range(args.repeats):
        for name, kept in runs.items():
            kept.append(stage(name == "cached"))
    PairObjective.cache_bytes = 2 << 30
    (m_c, r_c, _, steps), (m_p, r_p, _, _) = runs["cached"][-1], runs["every_step"][-1]
    loss_diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(r_c["history"], r_p["history"]))
    weight_diff = max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(m_c.parameters(), m_p.parameters()))
    s_c = sum(s for *_, s, _ in runs["cached"]) / args.repeats
    s_p = sum(s for *_, s, _ in runs["every_step"]) / args.repeats

    prompts = [[{"role": "user", "content": e.student}] for exs in task.tests.values() for e in exs]
    student = m_c
    gen: dict[str, list[float]] = {"merged": [], "peft": []}
    texts: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for name, times in gen.items():
            t0 = time.perf_counter()
            if name == "merged":
                texts[name] = rd.Answers()(student, tok, prompts, cfg)
            else:
                texts[name] = generate(student, tok, prompts, max_new_tokens=cfg.distill.max_new_tokens,
                                       batch_size=cfg.eval.batch_size)
            times.append(time.perf_counter() - t0)
    g_m, g_p = (sum(gen[n]) / args.repeats for n in ("merged", "peft"))
    same = sum(a == b for a, b in zip(texts["merged"], texts["peft"]))

    result = {
        "config": str(CONFIG.relative_to(ROOT)), "cell": {"task": task.name, "k": 1, "seed": 0},
        "examples": len(examples), "epochs": args.epochs, "steps": steps, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "dtype": "float32",
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "distill_stage": {"cached_s_per_step": s_c / steps, "every_step_s_per_step": s_p / steps,
                          "ratio": s_p / s_c, "max_loss_diff": loss_diff, "max_weight_diff": weight_diff},
        "student_answers": {"prompts": len(prompts), "merged_s": g_m, "peft_s": g_p, "ratio": g_p / g_m,
                            "identical": same},
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("| what | baseline | ours | baseline | ratio |")
    print("|---|---|---:|---:|---:|")
    print(f"| distill stage ({len(examples)} examples, {steps} steps), s/step | teacher beside the student every step "
          f"| {s_c / steps:.3f} | {s_p / steps:.3f} | **{s_p / s_c:.2f}x** |")
    print(f"| student answers ({len(prompts)} prompts), s | `generate` on the PEFT model | {g_m:.1f} | {g_p:.1f} "
          f"| **{g_p / g_m:.2f}x** ({same}/{len(prompts)} identical) |")
    print(f"max loss difference {loss_diff:.2e}, max weight difference {weight_diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
