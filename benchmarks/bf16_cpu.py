"""fp32 against bf16 autocast on this CPU, at one thread (what a demo worker has): the GEMM at SmolLM2's shapes, a
full fine-tuning step (4 x 256 tokens, fused AdamW), and evaluation generation (the lean loop with and without gold
drafts, 128 of the SmolLM2 demo's probes, batch 128) on a given model — whether ``bf16_supported``'s choice (bf16
autocast on a CPU with avx512_bf16 or AMX) pays on this machine. One run each (training: two, alternating); no
timing is asserted anywhere.

Usage: python benchmarks/bf16_cpu.py MODEL_DIR (a demo run's trained model, or prepared/prepare_smollm2_programs)
Writes benchmarks/results/bf16_cpu.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def gemm(res: dict) -> None:
    for rows in (64, 1024):
        for k, n in ((576, 576), (576, 1536), (1536, 576), (576, 49152)):
            x, w = torch.randn(rows, k), torch.randn(n, k)
            out = {}
            for dt in ("fp32", "bf16"):
                xx, ww = (x, w) if dt == "fp32" else (x.bfloat16(), w.bfloat16())
                for _ in range(3):
                    xx @ ww.T
                t, it = time.perf_counter(), 0
                while time.perf_counter() - t < 0.5:
                    xx @ ww.T
                    it += 1
                out[dt] = 2 * rows * k * n * it / (time.perf_counter() - t) / 1e9
            print(f"gemm rows {rows} {k}x{n}: fp32 {out['fp32']:.0f} bf16 {out['bf16']:.0f} GFLOP/s", flush=True)
            res[f"gemm_{rows}_{k}x{n}"] = out


def train(res: dict, model_dir: str) -> None:
    from inweights.models.load import load_model

    model, _ = load_model(model_dir)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    ids = torch.randint(100, 40000, (4, 256), generator=torch.Generator().manual_seed(0))
    for dt in ("fp32", "bf16", "fp32", "bf16"):
        ts = []
        for _ in range(4):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt == "bf16"):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            ts.append(time.perf_counter() - t)
        rate = ids.numel() / (sum(ts[1:]) / 3)  # the first step warms up
        print(f"train step {dt}: {[round(x, 2) for x in ts]} -> {rate:.0f} tok/s", flush=True)
        res.setdefault(f"train_{dt}", []).append(rate)


def evaluate(res: dict, model_dir: str) -> None:
    from generation import SMOLLM2_CONFIG, probes_for

    from inweights.eval.draft import draft_ids
    from inweights.eval.generate import generate_ids
    from inweights.models.load import load_model

    model, tok = load_model(model_dir)
    probes = probes_for(128, SMOLLM2_CONFIG)
    prompts = [p["prompt"] for p in probes]
    drafts = [draft_ids(tok, p) for p in probes]
    kinds = [p["cell"] for p in probes]
    outs = {}
    for name, dt in (("drafts", "fp32"), ("drafts", "bf16"), ("plain", "fp32"), ("plain", "bf16")):
        st: dict = {}
        use = name == "drafts"
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt == "bf16"):
            o = generate_ids(model, tok, prompts, max_new_tokens=120, batch_size=128, backend="lean",
                             drafts=drafts if use else None, draft_kinds=kinds if use else None, draft_stats=st)
        sec = time.perf_counter() - t
        ntok = sum(len(c) for _, c in o)
        outs[(name, dt)] = o
        print(f"eval {name} {dt}: {sec:.1f} s, {ntok / sec:.0f} tok/s, drafts {st.get('offered')}/{st.get('accepted')}",
              flush=True)
        res[f"eval_{name}_{dt}"] = {"seconds": sec, "tok_s": ntok / sec}
    same = {"drafts_vs_plain_fp32": sum(a == b for a, b in zip(outs[("drafts", "fp32")], outs[("plain", "fp32")])),
            "fp32_vs_bf16_plain": sum(a == b for a, b in zip(outs[("plain", "fp32")], outs[("plain", "bf16")]))}
    print("identical outputs (of 128):", same)
    res["identical"] = same


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python benchmarks/bf16_cpu.py MODEL_DIR", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE))
    from generation import model_dir_error

    if err := model_dir_error(Path(argv[0])):
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    import transformers

    transformers.logging.set_verbosity_error()
    res: dict = {"model": argv[0], "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    gemm(res)
    train(res, argv[0])
    evaluate(res, argv[0])
    out = HERE / "results" / "bf16_cpu.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
