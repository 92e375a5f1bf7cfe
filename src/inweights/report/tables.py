"""Table helpers shared by the reports (PBB's and the planning curricula's): cell formatting and column order."""

from __future__ import annotations

from typing import Any


def _pct(c: dict[str, Any] | None, ci: bool = True) -> str:
    if c is None:
        return "–"
    s = f"{100 * c['acc']:.1f}"
    if ci:
        s += f" [{100 * c['ci95'][0]:.0f}–{100 * c['ci95'][1]:.0f}]"
    return s


def _cells_order(rows: dict[str, dict[str, Any]]) -> list[str]:
    order = []
    for r in rows.values():
        for k in r["cells"]:
            if k not in order:
                order.append(k)
    rank = {"without_io": 0, "with_io": 1, "in_weights": 0, "in_context": 1, "cot": 0, "direct": 1}
    return sorted(order, key=lambda k: tuple(rank.get(p, 9) for p in k.split("/")))


# ---------------------------------------------------------------------------- tables from summary.json
def markdown_table(summary: dict[str, Any], cells: list[str] | None = None) -> str:
    """A run's main results table, from its summary.json alone (``inweights report RUN --markdown-table``):
    accuracy per recipe x cell with 95% CIs (PBB, planning), pass@k per method (ILF), or accuracy per recipe x
    k x split (rule distillation). Docs paste it between ``<!-- table: FILE -->`` markers, and a test
    regenerates every marked table from its source file, so a documented number cannot drift from its run."""
    if "rows" in summary:
        rows = summary["rows"]
        cols = cells or [c for c in _cells_order(rows) if not c.endswith("/train")]
        head = ["recipe", *[f"`{c}`" for c in cols]]
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join([n, *[_pct(r["cells"].get(c)) for c in cols]]) + " |" for n, r in rows.items()]
        return "\n".join(out)
    if "recipes" in summary and any(k.startswith("pass@") for v in summary["recipes"].values() for k in v):
        ks = sorted({int(k.split("@")[1]) for v in summary["recipes"].values() for k in v
                     if k.startswith("pass@") and not k.endswith("_ci")})
        head = ["method", *[f"pass@{k} [95% CI]" for k in ks]]
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n, v in summary["recipes"].items():
            out.append("| " + " | ".join([n, *[f"{100 * v[f'pass@{k}']:.1f} [{100 * v[f'pass@{k}_ci'][0]:.1f}–"
                                               f"{100 * v[f'pass@{k}_ci'][1]:.1f}]" for k in ks]]) + " |")
        return "\n".join(out)
    if isinstance(summary.get("cells"), list):  # rule distillation: one cell per task x recipe x k
        cells_ = summary["cells"]
        splits = sorted({k[len("acc_"):] for c in cells_ for k in c if k.startswith("acc_")})
        ks = sorted({c["k"] for c in cells_})
        tasks = sorted({c["task"] for c in cells_})
        cols = [(s, k) for s in splits for k in ks]
        head = ["recipe", *[f"{s} k={k}" for s, k in cols]]
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        by = {(c["task"], c["recipe"], c["k"]): c for c in cells_}
        for t in tasks:
            for r in dict.fromkeys(c["recipe"] for c in cells_ if c["task"] == t):
                name = r if len(tasks) == 1 else f"{t}: {r}"
                out.append("| " + " | ".join([name, *[_mean_std(by.get((t, r, k), {}).get(f"acc_{s}"))
                                                     for s, k in cols]]) + " |")
        return "\n".join(out)
    raise ValueError("this summary.json has no results table (no rows, recipes with pass@k, or table)")


def pooled_table(summaries: list[dict[str, Any]], cells: list[str] | None = None) -> str:
    """Several seeds' runs of one config as one table: per recipe x cell, the pooled accuracy (every seed's
    instances together, Wilson 95% CI) and each seed's own after it, ``76.0 [70–81] (76 / 76 / 79)``.
    Docs mark it ``<!-- table: a.json,b.json -->``; the runs must be one config's, with distinct seeds, recipes
    and cells (else ValueError)."""
    if len(summaries) == 1:
        return markdown_table(summaries[0], cells)
    from inweights.eval.stats import wilson

    names = {s.get("name") for s in summaries}
    if len(names) > 1:
        raise ValueError(f"the runs are of different configs ({', '.join(sorted(map(str, names)))}): pool seeds of one")
    seeds = [s.get("seed") for s in summaries if s.get("seed") is not None]
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"a seed is given twice ({', '.join(map(str, seeds))}): pooling it would count its instances twice")
    if "rows" not in summaries[0] and "recipes" in summaries[0]:
        return _pooled_pass_table(summaries)
    rows = [s["rows"] for s in summaries]
    if any(list(r) != list(rows[0]) for r in rows):
        raise ValueError("the runs do not have the same recipes")
    cols = cells or [c for c in _cells_order(rows[0]) if not c.endswith("/train")]
    head = ["recipe", *[f"`{c}` pooled (seed by seed)" for c in cols]]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in rows[0]:
        shown = [name]
        for c in cols:
            each = [r[name]["cells"][c] for r in rows]
            n, k = sum(e["n"] for e in each), sum(e["correct"] for e in each)
            lo, hi = wilson(k, n)
            shown.append(f"{100 * k / n:.1f} [{100 * lo:.0f}–{100 * hi:.0f}] ("
                         + " / ".join(f"{100 * e['acc']:.0f}" for e in each) + ")")
        out.append("| " + " | ".join(shown) + " |")
    return "\n".join(out)


def _pooled_pass_table(summaries: list[dict[str, Any]]) -> str:
    """ILF's runs of several seeds: per method, pass@k over every seed's test tasks together (the unbiased estimator
    per task, a bootstrap 95% interval over tasks) and each seed's own after it; then, for ILF, the paired
    differences against each other method on the same tasks."""
    from inweights.core.seeds import derive_seed
    from inweights.eval.stats import bootstrap_ci, pass_at_k

    recipes = [s["recipes"] for s in summaries]
    if any(list(r) != list(recipes[0]) for r in recipes):
        raise ValueError("the runs do not have the same methods")
    if any("per_task" not in v for r in recipes for v in r.values()):
        raise ValueError("a run's summary has no per-task counts (written before they were kept): resume it to rewrite it")
    ks = sorted({int(k.split("@")[1]) for v in recipes[0].values() for k in v if k.startswith("pass@") and "_" not in k})
    per = {(m, k): [pass_at_k(n, c, k) for r in recipes for n, c in r[m]["per_task"]] for m in recipes[0] for k in ks}

    def cell(vals: list[float], tag: str) -> str:
        lo, hi = bootstrap_ci(vals, derive_seed("pooled", tag))
        return f"{100 * sum(vals) / len(vals):.1f} [{100 * lo:.1f}–{100 * hi:.1f}]"

    head = ["method", *[f"pass@{k} pooled [95% CI] (seed by seed)" for k in ks]]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in recipes[0]:
        out.append("| " + " | ".join([m, *[cell(per[m, k], f"{m}@{k}") + " (" + " / ".join(
            f"{100 * r[m][f'pass@{k}']:.1f}" for r in recipes) + ")" for k in ks]]) + " |")
    if "ilf" in recipes[0]:
        for m in [x for x in recipes[0] if x != "ilf"]:
            out.append("| " + " | ".join([f"ilf − {m} (paired)", *[cell([a - b for a, b in zip(per["ilf", k], per[m, k])],
                                                                         f"ilf-{m}@{k}") for k in ks]]) + " |")
    return "\n".join(out)


def _mean_std(x: Any) -> str:
    if not isinstance(x, dict) or x.get("mean") is None:
        return "–"
    return f"{100 * x['mean']:.1f}" + (f" ± {100 * x['std']:.1f}" if x.get("std") else "")


TABLE_MARK = "<!-- table: "
TABLE_END = "<!-- /table -->"


def marked_tables(text: str) -> list[tuple[str, str, list[str]]]:
    """(source file, table text, options) for every ``<!-- table: FILE [cells=a,b] -->`` ... ``<!-- /table -->``
    block of a markdown document."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        ln = lines[i].strip()
        if ln.startswith(TABLE_MARK) and ln.endswith("-->"):
            spec = ln[len(TABLE_MARK):-3].split()
            j = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == TABLE_END), None)
            if j is None:
                raise ValueError(f"line {i + 1}: table marker without {TABLE_END}")
            found.append((spec[0], "\n".join(x for x in lines[i + 1:j] if x.strip()), spec[1:]))
            i = j
        i += 1
    return found


def table_options(opts: list[str]) -> list[str] | None:
    """``cells=a,b`` -> the cells to show (None: all)."""
    for o in opts:
        if o.startswith("cells="):
            return o[len("cells="):].split(",")
    return None


def described(cfg) -> list[str]:
    """A report's first lines after its title: the config's ``description`` (what the run is for), if it has one."""
    text = " ".join((getattr(cfg, "description", None) or "").split())
    return [f"> {text}", ""] if text else []
