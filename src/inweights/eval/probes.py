"""Probes: each group x {in_weights, in_context} x {direct, cot} on held-out inputs, scored by the
domain's own semantics; plus code recall (does the chain of thought re-type the true statements or rules?)."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from inweights import views
from inweights.config import EvalConfig
from inweights.core.seeds import derive_seed
from inweights.domains.base import Unit
from inweights.domains.capabilities import Acceptance, Listings, Representations, supports
from inweights.eval.generate import generate
from inweights.eval.stats import wilson


def cell_name(group: str, mode: str, fmt: str) -> str:
    return f"{group}/{mode}/{fmt}"


def build_probes(domain, units: list[Unit], cfg: EvalConfig, seed: int) -> list[dict[str, Any]]:
    probes = []
    for group in cfg.groups:
        chosen = [u for u in units if u.group == group][: cfg.max_units_per_group]
        for mode in cfg.modes:
            for fmt in cfg.formats:
                for u in chosen:
                    for x in u.test_inputs:
                        rng = random.Random(derive_seed(seed, "probe", u.id, x, mode, fmt))
                        view = "exec" if mode == "in_weights" else "in_context"
                        rec = views.execution(domain, u, x, fmt, rng, view=view)
                        cell = cell_name(group, mode, fmt)
                        if supports(domain, Representations):
                            cell += f"/{x}"  # planning: one cell per representation (nl, graph, code)
                        rec.update(mode=mode, cell=cell)
                        probes.append(rec)
    if not supports(domain, Listings):
        return probes
    # extraction diagnostics (eval/extraction.py): training inputs of with_io units, and document recall
    # after the document's own pointer sentence
    if cfg.train_inputs and "with_io" in cfg.groups and "in_weights" in cfg.modes and "cot" in cfg.formats:
        for u in [u for u in units if u.group == "with_io"][: cfg.max_units_per_group]:
            for x in u.train_inputs[: cfg.train_inputs]:
                rng = random.Random(derive_seed(seed, "probe", u.id, x, "train_input"))
                rec = views.execution(domain, u, x, "cot", rng)
                rec.update(mode="in_weights", cell="with_io/in_weights/cot/train")
                probes.append(rec)
    if cfg.doc_context:
        for group in cfg.groups:
            for u in [u for u in units if u.group == group][: cfg.max_units_per_group]:
                rng = random.Random(derive_seed(seed, "probe", u.id, "doc_context"))
                rec = views.decl(domain, u, rng)
                rec.update(mode="doc_context", cell=f"{group}/doc_context", format="doc", input=None, answer=None)
                probes.append(rec)
                # the same sentence with the document's header forced (``def NAME(x):``): storage of the body,
                # whether or not the model can copy the name into the header itself
                forced = views.decl_forced_header(domain, u, rec["prompt"][0]["content"])
                if forced is not None:
                    forced.update(mode="doc_context", cell=f"{group}/doc_forced", format="doc", input=None,
                                  answer=None)
                    probes.append(forced)
    return probes


def evaluate(model, tokenizer, domain, units: list[Unit], cfg: EvalConfig, seed: int, progress=None,
             generate_fn=None, counts: dict[str, int] | None = None):
    """(cells, samples): accuracy with 95% CI per cell, and every sample. ``counts``: the default generation's
    tokens read and written (``generate``'s ``counts``; a ``generate_fn`` counts its own).

    ``generate_fn(prompts, records) -> outputs`` replaces the default generation (another backend, or generation
    sharded across processes); ``records``: the probes, whose gold completions the lean loop may verify as drafts
    before decoding (``eval/draft.py``: the outputs are greedy decoding's either way)."""
    from inweights.eval.draft import draft_ids

    by_id = {u.id: u for u in units}
    probes = build_probes(domain, units, cfg, seed)
    if generate_fn is None:
        def generate_fn(prompts, records):
            drafts = [draft_ids(tokenizer, r) for r in records] if cfg.temperature == 0 else None
            return generate(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens,
                            batch_size=cfg.batch_size, progress=progress, temperature=cfg.temperature,
                            top_p=cfg.top_p, seed=seed, drafts=drafts, draft_kinds=[r["cell"] for r in records],
                            counts=counts)
    outs = generate_fn([p["prompt"] for p in probes], probes)
    samples = []
    accepted: dict[tuple[str, str], list[str]] = defaultdict(list)
    cell_units: dict[str, set[str]] = defaultdict(set)
    stats: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"n": 0, "correct": 0, "recall": 0.0, "recalled": 0, "chance": 0.0, "too_long": 0})
    for p, out in zip(probes, outs):
        u = by_id[p["unit"]]
        if p["mode"] == "doc_context":  # scored by the diagnostics, not a cell
            forced = p["prompt"][-1]["content"] if p["prompt"][-1]["role"] == "assistant" else ""
            samples.append({"cell": p["cell"], "unit": u.id, "pointer": u.pointer, "input": None, "format": "doc",
                            "mode": "doc_context", "prompt": p["prompt"][0]["content"], "output": forced + out,
                            "pred": None, "answer": p["completion"][0]["content"], "correct": None})
            continue
        pred = views.extract(domain, out)
        ok = domain.score(u, p["input"], pred)
        s = {"cell": p["cell"], "unit": u.id, "pointer": u.pointer, "input": p["input"], "format": p["format"],
             "mode": p["mode"], "prompt": p["prompt"][0]["content"], "output": out, "pred": pred,
             "answer": p["answer"], "correct": ok}
        if p["format"] == "cot" and (r := domain.recall(u, out)) is not None:
            s["code_recall"] = r
        cell_units[p["cell"]].add(u.id)
        if ok and supports(domain, Acceptance):
            accepted[(p["cell"], u.id)].append(pred.strip())
        samples.append(s)
        st = stats[p["cell"]]
        st["n"] += 1
        st["correct"] += int(ok)
        st["recall"] += s.get("code_recall", 0.0)
        st["recalled"] += int("code_recall" in s)
        st["chance"] += domain.chance(u)
        # a target longer than the generation budget cannot be produced: count it, the report warns
        target_len = len(tokenizer(p["completion"][0]["content"], add_special_tokens=False)["input_ids"]) + 1
        st["too_long"] += int(target_len > cfg.max_new_tokens)
    cells = {}
    for name, st in stats.items():
        lo, hi = wilson(st["correct"], st["n"])
        cell = {"n": st["n"], "correct": st["correct"], "acc": st["correct"] / st["n"], "ci95": [lo, hi],
                "chance": st["chance"] / st["n"], "too_long": st["too_long"]}
        if st["recalled"]:
            cell["code_recall"] = st["recall"] / st["recalled"]
        if supports(domain, Acceptance):
            cell.update(variety(domain, [by_id[i] for i in sorted(cell_units[name])], name, accepted))
        cells[name] = cell
    return cells, samples



def variety(domain, units: list[Unit], cell: str, accepted: dict[tuple[str, str], list[str]]) -> dict[str, float]:
    """For generation tasks, so that repeating one memorised string does not score well: per unit, the
    distinct accepted strings per probe, and rule coverage (the share of the grammar's productions used
    by the accepted strings' derivations); both averaged over the cell's units."""
    distinct, coverage = [], []
    for u in units:
        got = accepted.get((cell, u.id), [])
        distinct.append(len(set(got)) / max(len(u.test_inputs), 1))
        used = set().union(*(domain.productions_used(u, t) for t in set(got))) if got else set()
        coverage.append(len(used) / u.meta["productions"])
    n = max(len(units), 1)
    return {"distinct": sum(distinct) / n, "coverage": sum(coverage) / n}
