"""The planning report's own sections: NL accuracy per recipe (ordering), reward curves per GRPO stage, and
the analogy analysis (docs/papers.md §3): does a test instance's similarity to its closest training instance
predict correctness better than the number of related training instances?"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from inweights.report.tables import described


def correlation(xs: list[float], ys: list[float]) -> dict[str, Any]:
    """Pearson r (point-biserial when ys is 0/1) with a 95% CI from Fisher's z; r None when either side is
    constant (nothing to correlate)."""
    n = len(xs)
    if n < 4 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return {"r": None, "n": n, "ci95": None}
    r = statistics.correlation(xs, ys)
    r_c = max(min(r, 0.999999), -0.999999)
    z, se = math.atanh(r_c), 1 / math.sqrt(n - 3)
    return {"r": r, "n": n, "ci95": [math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)]}


def curricula_ladder(rows: dict[str, Any], nl: str | None, graph: str | None) -> dict[str, Any] | None:
    """The rungs a transfer claim stands on, each measured: (1) the base's asymmetry -- symbols read well, language
    less; (2) training on NL raises NL (nl_only above the base, intervals apart): the positive control that the
    training instances can teach NL at all; (3) transfer: the symbolic-first curriculum above NL alone. A comparison
    is read only off rungs that hold."""
    def cell(name, c):
        return rows.get(name, {}).get("cells", {}).get(c) if c else None

    base_nl, base_graph = cell("base", nl), cell("base", graph)
    if not base_nl:
        return None
    def pct(x):
        return f"{100 * x['acc']:.1f}% [{100 * x['ci95'][0]:.0f}–{100 * x['ci95'][1]:.0f}]"

    rungs = []
    if base_graph:
        rungs.append({"rung": "1. the base's asymmetry", "holds": base_graph["ci95"][0] > base_nl["ci95"][1],
                      "what": f"base graph {pct(base_graph)} vs NL {pct(base_nl)}"})
    nl_only, two = cell("nl_only", nl), cell("two_stage", nl)
    if nl_only:
        rungs.append({"rung": "2. training on NL raises NL", "holds": nl_only["ci95"][0] > base_nl["ci95"][1],
                      "what": f"nl_only {pct(nl_only)} vs base {pct(base_nl)}"})
    if nl_only and two:
        rungs.append({"rung": "3. transfer: symbolic first beats NL alone", "holds": two["ci95"][0] > nl_only["ci95"][1],
                      "what": f"two_stage {pct(two)} vs nl_only {pct(nl_only)}"})
    failed = next((r for r in rungs if not r["holds"]), None)
    if failed is None:
        verdict = "Every rung holds."
    else:
        verdict = f"First failed rung: **{failed['rung']}**" + (
            "; the comparisons above it cannot be read as transfer (or its absence)." if failed is not rungs[-1] else ".")
    return {"rungs": rungs, "first_failed": failed["rung"] if failed else None, "verdict": verdict}


def _part(line: str) -> str:
    """A reference trace line's part: its header word (``Durations``, ``Edges``: reading the problem) or
    ``solving`` (a step's line, the end, the answer)."""
    head, colon, _ = line.partition(":")
    return head.strip() if colon and head.strip() and not any(ch.isdigit() for ch in head) else "solving"


def trace_section(samples_path: Path, traces: dict[str, dict[str, list[str]]]) -> tuple[list[str], dict]:
    """Per recipe x cell: the share of outputs whose chain of thought first departs from the reference in each part
    (reading the problem -- the rewrite's Durations / Edges lines -- or solving it), or never does."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    parts: list[str] = []
    if samples_path.is_file() and traces:
        for line in samples_path.read_text().splitlines():
            s = json.loads(line)
            ref = traces.get(s["unit"], {}).get(s.get("input"))
            if not ref or s.get("format") != "cot":
                continue
            got = [ln.strip() for ln in s["output"].splitlines() if ln.strip()]
            wrong = next((_part(r) for i, r in enumerate(ref) if i >= len(got) or got[i] != r.strip()), "none")
            for p in (*(_part(r) for r in ref), wrong):
                if p not in parts and p != "none":
                    parts.append(p)
            k = counts.setdefault((s["recipe"], s["cell"]), {"n": 0, "correct": 0})
            k["n"] += 1
            k["correct"] += bool(s["correct"])
            k[wrong] = k.get(wrong, 0) + 1
    if not counts:
        return [], {}
    cols = [*parts, "none"]
    md = ["", "## Where the chain of thought first goes wrong", "",
          ("Each chain-of-thought output against the reference trace, line by line: the share (%) whose first "
           "differing line is in each part — reading the problem (the rewrite's header lines) or solving it (a "
           "step's line, the end) — or none (every line as the reference's). A wrong reading can still end in the "
           "right answer by luck, and the reverse."), "",
          "| recipe | cell | n | " + " | ".join(f"first wrong: {c}" if c != "none" else "every line right"
                                                for c in cols) + " | correct |",
          "|" + "---|" * (len(cols) + 4)]
    out: dict[str, Any] = {}
    for (recipe, cell), k in counts.items():
        md.append(f"| {recipe} | `{cell}` | {k['n']} | "
                  + " | ".join(f"{100 * k.get(c, 0) / k['n']:.0f}" for c in cols) + f" | {100 * k['correct'] / k['n']:.0f} |")
        out.setdefault(recipe, {})[cell] = k
    return md, out


def analogy_section(samples_path: Path, analogy: dict[str, dict[str, float]], cell: str) -> tuple[list[str], dict]:
    by_recipe: dict[str, list[tuple[float, float, float]]] = {}
    probed: set[str] = set()  # the cell's own instances (test or validation)
    if samples_path.is_file():
        for line in samples_path.read_text().splitlines():
            s = json.loads(line)
            if s.get("cell") == cell and s["unit"] in analogy:
                probed.add(s["unit"])
                a = analogy[s["unit"]]
                by_recipe.setdefault(s["recipe"], []).append((a["closest"], a["related"], float(s["correct"])))
    out: dict[str, Any] = {}
    md = ["", "## Analogy analysis", "",
          (f"Per probed instance ({cell}): similarity to its closest training instance (0.4 x duration-histogram "
           "Jaccard + 0.6 x Weisfeiler-Lehman subtree kernel, 3 iterations) and the number of related training "
           "instances (similarity >= planning.related_threshold); each one's correlation (point-biserial r, "
           "[95% CI]) with correctness. `–`: no variation to correlate (e.g. every answer wrong)."), "",
          "| recipe | accuracy | r(closest similarity) | r(related count) |", "|---|---|---|---|"]

    def show(c):
        if c["r"] is None:
            return "–"
        return f"{c['r']:+.2f} [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]"

    for recipe, pts in by_recipe.items():
        sim = correlation([p[0] for p in pts], [p[2] for p in pts])
        rel = correlation([p[1] for p in pts], [p[2] for p in pts])
        acc = sum(p[2] for p in pts) / len(pts)
        out[recipe] = {"closest": sim, "related": rel, "accuracy": acc, "n": len(pts)}
        md.append(f"| {recipe} | {100 * acc:.1f}% | {show(sim)} | {show(rel)} |")
    closest = [a["closest"] for u, a in analogy.items() if u in probed]
    related = [a["related"] for u, a in analogy.items() if u in probed]
    if closest:
        md += ["", (f"Probed instances: closest similarity mean {statistics.mean(closest):.2f} "
                    f"(min {min(closest):.2f}, max {max(closest):.2f}); related training instances mean "
                    f"{statistics.mean(related):.1f} (max {max(related)}).")]
    return md, out


def ordering(rows: dict[str, dict[str, Any]], cell: str) -> str:
    """Recipes by accuracy on ``cell``, ties (same count correct) joined by '='."""
    got = [(name, r["cells"][cell]) for name, r in rows.items() if cell in r["cells"] and name != "base"]
    got.sort(key=lambda x: -x[1]["correct"])
    text = ""
    for i, (name, c) in enumerate(got):
        if i:
            text += " = " if c["correct"] == got[i - 1][1]["correct"] else " > "
        text += f"{name} {100 * c['acc']:.1f}%"
    return text


def grpo_section(metrics_path: Path) -> tuple[list[str], dict[str, Any]]:
    """Per GRPO stage, from the run's metrics: mean reward over its first and last 10% of steps, the share of groups
    whose rewards all agreed (no signal), draws per step (dynamic sampling), the last KL, and an SFT warm-up's floor
    measurement where one was configured."""
    steps: dict[str, list[dict[str, Any]]] = {}
    floors: dict[str, dict[str, Any]] = {}
    if metrics_path.is_file():
        for line in metrics_path.read_text().splitlines():
            r = json.loads(line)
            if r.get("objective") == "grpo":
                steps.setdefault(r["stage"], []).append(r)
            elif r.get("event") == "grpo_floor":
                floors[r["stage"]] = r
    if not steps:
        return [], {}
    md = ["", "## GRPO stages", "",
          ("Reward: mean over every sampled completion, first / last 10% of the stage's steps. Zero-variance: the share "
           "of drawn groups whose rewards all agreed (GRPO learns nothing from them; with dynamic sampling they are "
           "replaced by fresh draws). Warm-up: the starting policy's greedy reward on the stage's training prompts "
           "and whether it was under the floor (then SFT steps came first)."), "",
           "| stage | steps | reward first → last | zero-variance groups | draws/step | KL (last) | warm-up |",
           "|---|---|---|---|---|---|---|"]
    out: dict[str, Any] = {}
    for name, rs in sorted(steps.items()):
        rs = sorted({r["step"]: r for r in rs}.values(), key=lambda r: r["step"])
        k = max(1, len(rs) // 10)
        first = statistics.mean(r["reward_mean"] for r in rs[:k])
        last = statistics.mean(r["reward_mean"] for r in rs[-k:])
        zero = statistics.mean(r.get("zero_std_groups", 0.0) for r in rs)
        draws = statistics.mean(r.get("draws", 1) for r in rs)
        f = floors.get(name)
        warm = "–" if f is None else (f"{100 * f['reward_greedy']:.0f}% < {100 * f['floor']:.0f}%: {f['steps']} SFT steps"
                                      if f["ran"] else f"{100 * f['reward_greedy']:.0f}% ≥ {100 * f['floor']:.0f}%: none")
        out[name] = {"steps": len(rs), "reward_first": first, "reward_last": last, "zero_std_groups": zero,
                     "draws": draws, "kl_last": rs[-1]["kl"], "warmup": f}
        md.append(f"| {name} | {len(rs)} | {100 * first:.0f}% → {100 * last:.0f}% | {100 * zero:.0f}% | {draws:.2f} | "
                  f"{rs[-1]['kl']:.3f} | {warm} |")
    return md, out


def write_planning_report(out: Path, cfg, results: dict[str, Any]) -> dict[str, Any]:
    from inweights.core.io import atomic_write, write_summary
    from inweights.report.plots import accuracy_plot, loss_plot, reward_plot
    from inweights.report.tables import _cells_order, _pct

    rows: dict[str, dict[str, Any]] = {}
    if "base" in results:
        rows["base"] = results["base"]
    rows.update(results["recipes"])
    cells = _cells_order(rows)
    loss_plot(out, out / "metrics.jsonl", results.get("recipes"))
    reward = reward_plot(out, out / "metrics.jsonl")
    accuracy_plot(out, rows, cells)
    counts = results["counts"]
    t = cfg.two_stage
    md = [f"# {cfg.name}", "", *described(cfg),
          (f"seed {cfg.seed}; {counts.get('train', 0)} training and {counts.get('test', 0)} test instances; "
           f"symbolic representation `{t.symbolic}`; default objective `{t.objective}`; wall time "
           f"{results['wall_seconds'] / 60:.1f} min."), ""]
    prep = results.get("prepared")
    if prep:
        md += [(f"Prepared base `{prep['name']}`: chain-of-thought accuracy {100 * prep['in_context_cot']:.1f}% on "
                f"{prep['eval_programs']} held-out instances in its own representations (gate "
                f"{100 * prep['gate']:.0f}%, {'passed' if prep['passed'] else 'NOT passed'}); {prep['steps']} steps, "
                f"{prep['tokens'] / 1e6:.1f}M tokens, {prep['train_seconds'] / 60:.1f} min."), ""]
    nl = next((c for c in cells if c.endswith("/nl") and "/cot/" in c), next((c for c in cells if c.endswith("/nl")), None))
    verdicts = []
    if nl:  # the paper's comparison: the symbolic-first curriculum against NL alone, and the base
        from inweights.report.verdict import compare

        def c(n):
            return rows.get(n, {}).get("cells", {}).get(nl)

        for a, b in (("two_stage", "nl_only"), ("two_stage", "base"), ("two_stage@sft", "nl_only@sft")):
            if c(a) and c(b):
                verdicts.append(compare(f"{a} vs {b} on `{nl}`", a, c(a)["acc"], c(a)["ci95"], b, c(b)["acc"],
                                        c(b)["ci95"]))
        if verdicts:
            md += ["## Verdict", "", *verdicts, ""]
    ladder = curricula_ladder(rows, nl, next((c for c in cells if c.endswith("/graph") and "/cot/" in c), None))
    if ladder:
        md += ["## Ladder", "", *[f"- {r['rung']}: {r['what']} — **{'holds' if r['holds'] else 'fails'}**"
                                  for r in ladder["rungs"]], "", ladder["verdict"], ""]
    md += ["## Accuracy on held-out test instances (%, exact minutes, [95% CI])", "",
           ("Columns are group / mode / format / representation; every test instance is probed once per "
            "representation listed in planning.eval_representations. `base`: the starting model."), ""]
    header = ["recipe"] + [f"`{c}`" for c in cells]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in rows.items():
        md.append("| " + " | ".join([name] + [_pct(r["cells"].get(c)) for c in cells]) + " |")
    if nl:
        md += ["", f"Measured ordering on `{nl}`: {ordering(rows, nl)}."]
    analogy_md, analogy = analogy_section(out / "samples.jsonl", results.get("analogy", {}), nl or "")
    md += analogy_md
    trace_md, trace_parts = trace_section(out / "samples.jsonl", results.get("traces", {}))
    md += trace_md
    grpo_md, grpo = grpo_section(out / "metrics.jsonl")
    md += grpo_md
    md += ["", "## Stages", "", "| recipe | stage | steps | tokens | minutes | tokens/s |", "|---|---|---|---|---|---|"]
    for name, r in results["recipes"].items():
        for s in r["stages"]:
            md.append(f"| {name} | {s['name']} | {s['steps']} | {s['tokens'] / 1e6:.2f}M | {s['seconds'] / 60:.1f} | "
                      f"{s['tok_s']:,.0f} |")
    md += ["", "Stages with the same key (same starting point, spec and seed) are trained once and shared.", ""]
    if reward:
        md += ["![reward](reward.png)", ""]
    md += ["![loss](loss.png)", "", "![accuracy](accuracy.png)", ""]
    summary = {"name": cfg.name, "seed": cfg.seed, "wall_seconds": results["wall_seconds"], "counts": counts,
               "prepared": prep, "rows": {n: {"cells": r["cells"], "stages": r.get("stages", [])} for n, r in rows.items()},
               "ordering_cell": nl, "ordering": ordering(rows, nl) if nl else None, "analogy": analogy, "grpo": grpo, "verdicts": verdicts,
               "first_wrong": trace_parts, "ladder": ladder}
    summary = write_summary(out / "summary.json", summary)
    atomic_write(out / "report.md", "\n".join(md))
    return summary
