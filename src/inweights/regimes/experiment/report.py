"""summary.json and report.md: rows = recipe, columns = accuracy per group x mode x format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inweights.core.provenance import bf16_supported
from inweights.domains import DOMAINS
from inweights.domains.capabilities import Acceptance, Representations, supports
from inweights.regimes.experiment.timing import time_lines
from inweights.report.plots import accuracy_plot, loss_plot, reward_plot, sweep_plot
from inweights.report.tables import _cells_order, _pct, described


def near_chance(c: dict[str, Any] | None) -> bool:
    """The cell's 95% CI reaches down to chance (or below a floor of 5 points above it)."""
    return c is None or c["ci95"][0] <= c["chance"] + 0.05


def bars_check_grammars(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The grammar bar: proactive's without_io in-weights acceptance >= 3x the random-string baseline
    and above stage2_only's."""
    lines = []
    for fmt in ("cot", "direct"):
        cell = f"without_io/in_weights/{fmt}"
        pro = rows.get("proactive", {}).get("cells", {}).get(cell)
        if pro is None:
            continue
        base = pro["chance"]
        ratio = pro["acc"] / base if base > 0 else float("inf")
        line = (f"- proactive `{cell}` acceptance {_pct(pro)}% vs random strings {100 * base:.1f}%: "
                f"{ratio:.1f}x, {'meets' if ratio >= 3 else 'below'} the 3x bar")
        o = rows.get("stage2_only", {}).get("cells", {}).get(cell)
        if o is not None:
            above = pro["ci95"][0] > o["acc"]
            line += (f"; stage2_only {_pct(o)}%: proactive is " +
                     ("above it" if above else "above it only within the CI" if pro["acc"] > o["acc"] else "not above it"))
        lines.append(line)
    return lines


PBB_BAR = ("PBB bar: `without_io/in_weights/cot` >= 30% with its 95% CI's lower end above the upper ends of base's "
           "and stage2_only's, and `with_io/in_weights/cot` (held-out inputs) >= 50%")


def bars_check(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The PBB bar (issue 37), for each curriculum run (proactive, retroactive): ``PBB_BAR``."""
    cell = "without_io/in_weights/cot"
    lines = []
    for main in ("proactive", "retroactive"):
        m = rows.get(main, {}).get("cells", {}).get(cell)
        if m is None:
            continue
        ok = m["acc"] >= 0.3
        parts = [f"{_pct(m)}% ({'>=' if ok else '<'} 30%)"]
        for other in ("base", "stage2_only"):
            o = rows.get(other, {}).get("cells", {}).get(cell)
            if o is None:
                ok = False
                parts.append(f"{other} not run")
                continue
            above = m["ci95"][0] > o["ci95"][1]
            ok = ok and above
            parts.append(f"CI lower end {100 * m['ci95'][0]:.1f} {'>' if above else '<='} {other}'s upper end "
                         f"{100 * o['ci95'][1]:.1f}")
        w = rows.get(main, {}).get("cells", {}).get("with_io/in_weights/cot")
        w_ok = w is not None and w["acc"] >= 0.5
        ok = ok and w_ok
        parts.append("with_io held-out " + (f"{_pct(w)}% ({'>=' if w_ok else '<'} 50%)" if w else "not measured"))
        lines.append(f"- {main}: **{'meets' if ok else 'misses'}** the bar — " + "; ".join(parts))
    return ([f"{PBB_BAR}."] + lines) if lines else []


CURVE_COLUMNS = [("without_io/doc_recall", "doc wo"), ("without_io/query_recall", "query wo"),
                 ("without_io/in_weights/cot@val", "in weights wo"), ("with_io/doc_recall", "doc wi"),
                 ("with_io/in_weights/cot@val", "in weights wi"), ("without_io/in_context/cot@val", "in context wo"),
                 ("with_io/in_context/cot@val", "in context wi")]


def curves_section(out: Path, results: dict[str, Any]) -> list[str]:
    """``eval.curve_every``: each stage's curve on validation inputs, as a table of its points and a plot."""
    from inweights.report.plots import curve_plot

    recipes = results.get("recipes", {})
    if not any(st.get("curve") for r in recipes.values() for st in r.get("stages", [])):
        return []
    curve_plot(out, recipes)
    head = ["recipe", "stage", "step"] + [c for _, c in CURVE_COLUMNS]
    md = ["", "## Curves: storage, extraction and skill by step (validation inputs, never test)", "",
          ("`doc`: statements written out after a document's pointer sentence (stored); `query`: the same inside "
           "an in-weights question (extracted); `in weights` / `in context`: CoT accuracy on validation inputs; "
           "`wo` / `wi`: without_io / with_io programs. Steps are within the stage."), "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    seen = set()
    for name, r in recipes.items():
        for st in r.get("stages", []):
            if st["dir"] in seen or not st.get("curve"):
                continue
            seen.add(st["dir"])
            for p in st["curve"]:
                md.append("| " + " | ".join([name, st["name"], str(p["step"])] +
                                            [_frac(p.get(k)) for k, _ in CURVE_COLUMNS]) + " |")
    return md + ["", "![curves](curves.png)"]


SKILL_KEPT = 0.8  # in-context accuracy a trained model must keep for its comparisons to count (issue 37)
# recipes that never train executions of with_io programs, by design: their with_io in-weights accuracy is not a
# rung they failed
NO_EXECUTIONS = ("stage2_only",)


CHANCE_CHECKED = ("without_io/in_context/", "with_io/in_weights/")  # the cells ``meaningfulness`` checks


def meaningfulness(rows: dict[str, dict[str, Any]], instruction: str = "code") -> list[str]:
    """Say when a comparison means nothing because the capability it presumes is near chance, and when a trained
    model kept less than ``SKILL_KEPT`` of the in-context skill (its in-weights numbers are then bounded by it)."""
    notes = []
    for name, r in rows.items():
        c = r["cells"]
        ic = [f for f in ("cot", "direct") if f"without_io/in_context/{f}" in c and near_chance(c[f"without_io/in_context/{f}"])]
        wio = [f for f in ("cot", "direct") if f"with_io/in_weights/{f}" in c and near_chance(c[f"with_io/in_weights/{f}"])]
        parts = []
        if ic:
            parts.append(f"{instruction}-in-prompt accuracy on without_io is near chance ({', '.join(ic)})")
        if wio and not name.startswith("base") and name.partition(":")[0] not in NO_EXECUTIONS:
            parts.append(f"with_io held-out accuracy is near chance ({', '.join(wio)}): the execution skill "
                         "was not learned")
        if parts:
            notes.append(f"- **{name}**: " + "; ".join(parts) + ". Its without_io in-weights numbers in those "
                         "formats cannot show transfer.")
        elif not name.startswith("base"):
            worn = {g: c[f"{g}/in_context/cot"] for g in ("without_io", "with_io")
                    if f"{g}/in_context/cot" in c and c[f"{g}/in_context/cot"]["acc"] < SKILL_KEPT}
            if worn:
                w = c.get("without_io/in_weights/cot")
                shown = ", ".join(f"{g} {_pct(v)}%" for g, v in worn.items())
                notes.append(f"- **{name}** kept less than {100 * SKILL_KEPT:.0f}% of the in-context skill ({shown}): "
                             "training wore the prepared skill down, so its in-weights numbers are bounded by it"
                             + (f" (without_io in weights {_pct(w)}%)" if w else "") + ".")
    return notes


def nothing_near_chance(rows: dict[str, dict[str, Any]]) -> str:
    """The line for a report where ``meaningfulness`` found nothing: "above chance" only where some cell it checks
    was measured (a run whose eval groups made no probes compared nothing)."""
    if any(c.startswith(CHANCE_CHECKED) for r in rows.values() for c in r["cells"]):
        return "- every compared cell is above chance."
    if not any(r["cells"] for r in rows.values()):
        return "- nothing was measured: no probe was made, so nothing here can be compared."
    return "- no cell was checked against chance (none measured without_io in context or with_io in weights)."


def sweep_section(out: Path, cfg, rows) -> tuple[list[str], dict[str, Any] | None]:
    if not cfg.sweep:
        return [], None
    cell = f"{cfg.sweep.group}/in_weights/{cfg.sweep.format}"
    ref = rows.get(cfg.sweep.reference, {}).get("cells", {}).get(cell)
    ks, accs = [], []
    for k in cfg.sweep.demos_k:
        c = rows.get(f"demos_only@k{k}", {}).get("cells", {}).get(cell)
        if c is not None:
            ks.append(k)
            accs.append(c["acc"])
    if ref is None or not ks:
        return [], None
    worth = next((k for k, a in zip(ks, accs) if a >= ref["acc"]), None)
    if near_chance(ref):  # "1 instruction = N examples" means something only above chance
        worth = None
    sweep_plot(out, ks, accs, cfg.sweep.reference, ref["acc"], cell)
    lines = ["", "## Sample efficiency", "",
             f"`{cell}`: {cfg.sweep.reference} = {100 * ref['acc']:.1f}%; demos_only: " +
             ", ".join(f"k={k}: {100 * a:.1f}%" for k, a in zip(ks, accs)) + ".", ""]
    if near_chance(ref):
        lines.append(f"No ratio is read: {cfg.sweep.reference} itself is near chance on this cell, so \"one "
                     "instruction is worth N examples\" cannot be measured here.")
    elif worth is None:
        lines.append(f"No k up to {max(ks)} reached the instruction's accuracy: one instruction is worth "
                     f"more than {max(ks)} examples here.")
    else:
        lines.append(f"**One instruction is worth {worth} examples** (smallest k whose accuracy reaches "
                     f"{cfg.sweep.reference}).")
    lines += ["", "![sample efficiency](sample_efficiency.png)"]
    return lines, {"cell": cell, "reference": ref["acc"], "ks": ks, "accs": accs, "worth": worth}


def skew_section(out: Path, signatures: dict[str, str] | None) -> tuple[list[str], dict[str, Any] | None]:
    """Skewed demonstrations (ablation c): accuracy on the units whose first step is the majority one in the
    skewed pool vs on all other units, per recipe and cell; demos inherit the skew if the first is far higher."""
    if not signatures or not (out / "samples.jsonl").is_file():
        return [], None
    sigs = [s for u, s in sorted(signatures.items())]
    top = max(sorted(set(sigs)), key=sigs.count)
    counts: dict[tuple[str, str], list[int]] = {}
    for line in (out / "samples.jsonl").read_text().splitlines():
        s = json.loads(line)
        if "/in_weights/" not in s["cell"] or s["unit"] not in signatures:
            continue
        k = (s["recipe"], s["cell"])
        c = counts.setdefault(k, [0, 0, 0, 0])  # majority correct, majority n, rest correct, rest n
        i = 0 if signatures[s["unit"]] == top else 2
        c[i] += int(s["correct"])
        c[i + 1] += 1
    from inweights.eval.stats import wilson

    def cell(k, n):
        if not n:
            return "–", None
        lo, hi = wilson(k, n)
        return f"{100 * k / n:.1f} [{100 * lo:.0f}–{100 * hi:.0f}] (n={n})", k / n

    md = ["", "## Skewed demonstrations: majority first step vs the rest", "",
          (f"The skewed pool draws most demonstrations from the units whose first statement is `{top}` "
           f"({sigs.count(top)} of {len(sigs)} units); probes are balanced. Accuracy (%, [95% CI]) on those "
           "units vs all others: demonstrations inherit the skew when the first is far above the second."), "",
          "| recipe | cell | majority first step | other units |", "|---|---|---|---|"]
    out_rows = {}
    for (recipe, c), v in sorted(counts.items()):
        a, fa = cell(v[0], v[1])
        b, fb = cell(v[2], v[3])
        md.append(f"| {recipe} | `{c}` | {a} | {b} |")
        out_rows[f"{recipe} {c}"] = {"majority": fa, "rest": fb, "n_majority": v[1], "n_rest": v[3]}
    return md, {"top": top, "rows": out_rows}


def _rate(x: dict[str, Any] | None) -> str:
    return "–" if not x else f"{100 * x['rate']:.0f}% ({x['k']}/{x['n']})"


def _frac(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def extraction_section(rows: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The ladder, per model: execution on trained vs held-out inputs, recall after the document's pointer
    sentence (stored?) vs inside a question (extracted?), the recital's name and body, the failed rung."""
    diags = {n: r.get("diagnostics") for n, r in rows.items() if r.get("diagnostics")}
    if not diags:
        return [], {}
    any_d = next(iter(diags.values()))
    recite = any_d["cot"] == "recite"
    md = ["", "## Extraction diagnostics: which rung fails", "",
          ("`train`/`held-out`: with_io in-weights CoT accuracy on training vs held-out inputs (a model that "
           "memorised traces is right only on the first). `doc`: share of statements (the `return` line excluded) "
           "written out right after the document's own pointer sentence (in brackets: with the header `def NAME(x):` "
           "given, so the name need not be copied) — the document is *stored*; `query`: the "
           "same share inside an in-weights question — it is *extracted*; the gap is the extraction failure. "
           f"Chance for one statement is {100 * any_d['statement_chance']:.1f}% (1 of "
           f"{round(1 / any_d['statement_chance'])} op/constant pairs)."), ""]
    head = ["model", "with_io train", "with_io held-out", "doc with_io", "query with_io", "doc without_io",
            "query without_io"]
    if recite:
        md[-2] += (" Recital (the CoT re-types the function first): `names asked` — it writes the asked name; "
                   "`body = written name's` — its body is the stored program of the name it wrote, whether or "
                   "not that is the asked one; `right | exact` — accuracy when the recital is exactly the asked program.")
        head += ["names asked (wo)", "body = written name's (wo)", "right given exact recital (wo)"]
    head.append("first failed rung")
    md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summary = {}
    for name, d in diags.items():
        c = rows[name]["cells"]
        wi, wo = d["groups"].get("with_io", {}), d["groups"].get("without_io", {})
        vals = [name, _pct(c.get("with_io/in_weights/cot/train"), ci=False), _pct(c.get("with_io/in_weights/cot"),
                                                                                    ci=False),
                _doc(wi), _frac(wi.get("query_recall")), _doc(wo), _frac(wo.get("query_recall"))]
        if recite:
            vals += [_rate(wo.get("recital_names_asked")), _rate(wo.get("recital_body_of_written_name")),
                     _rate(wo.get("correct_given_exact_recital"))]
        vals.append(f"**{d['rung']['failed']}**")
        md.append("| " + " | ".join(vals) + " |")
        summary[name] = d
    md += [""] + [f"- {n}: {d['rung']['why']}." for n, d in diags.items() if d["rung"]["failed"] != "none"]
    return md, summary


def ladder_section(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The first failed rung of each model whose domain reads no listings back (no storage diagnostics): skill in
    context, extraction (with_io held out), transfer (without_io), each at ``RUNG_LEVEL``."""
    from inweights.eval.extraction import RUNG_LEVEL

    ladders = {n: r["ladder"] for n, r in rows.items() if r.get("ladder")}
    if not ladders:
        return []
    return ["", "## Ladder: which rung fails", "",
            (f"Each rung at {100 * RUNG_LEVEL:.0f}%: the skill in context (without_io, in the prompt), extraction "
             "(with_io held-out questions, in weights), transfer (without_io, in weights). Storage is not measured "
             "apart for this domain (no recital to read back): a stored but unextracted document shows as extraction. "
             "The base and stage2_only never train a question about these units, so extraction is where they are "
             "expected to stop."),
            ""] + [f"- {n}: **{d['failed']}**" + (f" — {d['why']}." if d["failed"] != "none" else " (every rung holds).")
                   for n, d in ladders.items()]


def _doc(g: dict[str, Any]) -> str:
    """Doc-context recall, free and (in brackets) with the header forced."""
    free = _frac(g.get("doc_recall"))
    return free if g.get("doc_forced_recall") is None else f"{free} ({_frac(g['doc_forced_recall'])})"


def gate_text(g: dict[str, Any] | None) -> str:
    """A stage gate's outcome and curve, in one cell."""
    if not g:
        return "–"
    curve = ", ".join(f"{st}: {100 * v:.0f}%" for st, v in g["curve"])
    verdict = (f"`{g['metric']}` ≥ {100 * g['target']:.0f}% reached at step {g['reached_at']}" if g["reached"]
               else f"`{g['metric']}` ≥ {100 * g['target']:.0f}% NOT reached (best {100 * g['best']:.0f}%)")
    return f"{verdict}; curve {curve}"


def verdict_lines(rows: dict[str, dict[str, Any]], cell: str, noun: str = "programs") -> list[str]:
    """The report's opening: what the run shows on ``cell``, one line per comparison PBB is about."""
    from inweights.report.verdict import against_chance, compare

    def c(name):
        return rows.get(name, {}).get("cells", {}).get(cell)

    lines = []
    main = next((r for r in ("proactive", "retroactive") if c(r)), None)
    if main is None:
        return lines
    m = c(main)
    lines.append(against_chance(f"{main} on `{cell}`", main, m["acc"], m["ci95"], m["chance"]))
    pairs = [(main, o) for o in ("stage2_only", "mixture", "stage1_only", "demos_only") if c(o)]
    if main == "proactive" and c("retroactive"):
        pairs.append(("retroactive", "mixture") if c("mixture") else ("retroactive", "proactive"))
    for a, b in pairs:
        lines.append(compare(f"{a} vs {b}", a, c(a)["acc"], c(a)["ci95"], b, c(b)["acc"], c(b)["ci95"],
                             chance=c(a)["chance"]))
    bound = rows.get(main, {}).get("cells", {}).get(cell.replace("/in_weights/", "/in_context/"))
    if bound:
        lines.append(f"- **in-context bound**: {main} answers {100 * bound['acc']:.1f}% with the source in the prompt "
                     f"(the most in-weights execution could reach with this skill).")
    d = rows.get(main, {}).get("diagnostics") or {"rung": rows.get(main, {}).get("ladder")}
    if d.get("rung"):
        r = d["rung"]
        lines.append(f"- **ladder**: first failed rung for {main}: **{r['failed']}**" +
                     (f" — {r['why']}." if r["failed"] != "none" else " (every rung holds)."))
    return lines


def positive_control_lines(pc: dict[str, Any] | None) -> list[str]:
    """The positive control's line (``eval.positive_control``): a model known to have the skill, on these probes."""
    if not pc:
        return []
    parts = [f"{name.split('/')[0]} {_pct(c)}" for name, c in pc["cells"].items()]
    low = [name for name, c in pc["cells"].items() if c["acc"] < 0.8]
    verdict = (f"**low** ({', '.join(n.split('/')[0] for n in low)} under 80%): before reading any cell below, check "
               "the probes, the scorer and the generation budget" if low else "high, as it should be: the probes and "
               "the scorer can show a skill that is there")
    line = (f"**Positive control** — `{pc['prepare']}`'s base reading each unit in its prompt (chain of thought): "
            f"{'; '.join(parts)} — {verdict}.")
    return [line, ""]


def write_report(out: Path, cfg, results: dict[str, Any]) -> dict[str, Any]:
    dom = DOMAINS[cfg.domain.name]
    if supports(dom, Representations):  # one instance in several representations: the curriculum report
        from inweights.regimes.experiment.report_curricula import write_planning_report

        return write_planning_report(out, cfg, results)
    rows: dict[str, dict[str, Any]] = {}
    if "base" in results:
        rows["base"] = results["base"]
    rows.update(results.get("other_bases", {}))
    rows.update(results["recipes"])
    cells = _cells_order(rows)
    grammars = supports(dom, Acceptance)  # generated strings judged by the unit's parser
    noun = dom.unit_noun
    if not grammars:  # the ladder from the cells alone where the domain reads no listings back (documents)
        from inweights.eval.extraction import rung

        rows = {n: r if r.get("diagnostics") else {**r, "ladder": rung(r["cells"], {"groups": {}}, noun,
                                                                         dom.instruction_noun, "use")}
                for n, r in rows.items()}
    loss_plot(out, out / "metrics.jsonl", results.get("recipes"))
    reward = reward_plot(out, out / "metrics.jsonl")
    accuracy_plot(out, rows, [c for c in cells if "/in_weights/" in c])
    md = [f"# {cfg.name}", "", *described(cfg),
          (f"seed {cfg.seed}; {results['counts']['with_io']} with_io and {results['counts']['without_io']} "
          f"without_io {noun}; wall time {results['wall_seconds'] / 60:.1f} min."), ""]
    verdicts = verdict_lines(rows, "without_io/in_weights/cot" if "without_io/in_weights/cot" in cells
                             else next((c for c in cells if c.startswith("without_io/in_weights/")), ""), noun)
    md += positive_control_lines(results.get("positive_control"))
    if verdicts:
        md += ["## Verdict", ""] + verdicts + [""]
    if results.get("time"):
        md += time_lines(results["time"])
    prep = results.get("prepared")
    if prep:
        pdom = DOMAINS.get(prep.get("domain"), dom)
        pnoun = pdom.unit_noun
        # the gate's own format first (a base gated on direct answers has no chain-of-thought number)
        fmts = [f for f in ("cot", "direct") if prep.get(f"in_context_{f}") is not None]
        label = {"cot": "chain-of-thought accuracy", "direct": "direct accuracy"}
        what = (f"{pdom.instruction_noun}-in-prompt acceptance" if supports(pdom, Acceptance)
                else f"{pdom.instruction_noun}-in-prompt {label[fmts[0]]}" if fmts else "")
        first = f" {100 * prep[f'in_context_{fmts[0]}']:.1f}%" if fmts else ""
        rest = "".join(f", {f} {100 * prep[f'in_context_{f}']:.1f}%" for f in fmts[1:])
        md += [(f"Prepared base `{prep['name']}`: {what}{first} "
               f"on {prep['eval_programs']} held-out {pnoun} (gate {100 * prep['gate']:.0f}%, "
               f"{'passed' if prep['passed'] else 'NOT passed'}){rest}; "
               f"{prep['steps']} steps, {prep['tokens'] / 1e6:.1f}M tokens, {prep['train_seconds'] / 60:.1f} min.")]
        b = rows.get("base", {}).get("cells", {}).get("without_io/in_context/cot")
        if b:
            md.append(f"On this experiment's own without_io {noun} the base's in-prompt CoT accuracy is "
                      f"**{_pct(b)}%**.")
        md.append("")
    if grammars:
        vcell = next((c for c in ("without_io/in_weights/cot", "without_io/in_weights/direct") if c in cells), None)
        md += ["## Acceptance (% of generated strings the grammar's parser accepts, [95% CI])", "",
               (f"Columns are group / mode / format. `in_weights`: the grammar's name only; `in_context`: its "
                f"rules in the prompt (upper bound). Sampling temperature {cfg.eval.temperature}. `distinct`: distinct "
                f"accepted strings per probe, `coverage`: share of the grammar's productions used by accepted "
                f"strings (both for `{vcell}`, averaged over grammars) — repeating one memorised string scores "
                f"low on both. `recall`: share of the rules the chain of thought re-types exactly "
                f"(without_io, in weights, CoT)."), ""]
        extra = ["distinct", "coverage", "recall"]
    else:
        vcell = "without_io/in_weights/cot"
        md += ["## Accuracy (%, exact match, [95% CI])", "",
               (f"Columns are group / mode / format. `in_weights`: pointer + input only; `in_context`: the "
                f"{dom.instruction_noun} in the prompt (upper bound). `recall`: share of the {dom.instruction_noun} "
                f"the chain of thought re-types exactly (without_io, in weights; – where the domain has no recall)."),
               ""]
        extra = ["recall"]
    header = ["recipe"] + [f"`{c}`" for c in cells] + extra
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in rows.items():
        v = r["cells"].get(vcell, {}) if vcell else {}
        vals = [v.get("distinct"), v.get("coverage")] if grammars else []
        vals.append(r["cells"].get("without_io/in_weights/cot", {}).get("code_recall"))
        md.append("| " + " | ".join([name] + [_pct(r["cells"].get(c)) for c in cells] +
                                    [f"{100 * x:.0f}%" if x is not None else "–" for x in vals]) + " |")
    chance = next((r["cells"][c]["chance"] for r in rows.values() for c in r["cells"]), None)
    if chance is not None and grammars:
        by_group = {g: next((r["cells"][c]["chance"] for r in rows.values() for c in r["cells"]
                             if c.startswith(g + "/")), None) for g in ("without_io", "with_io")}
        shown = ", ".join(f"{g} {100 * v:.1f}%" for g, v in by_group.items() if v is not None)
        md += ["", ("Random baseline: random strings over each grammar's symbols with its strings' length "
                    f"distribution are accepted {shown} of the time (mean over grammars).")]
    elif chance is not None:
        md += ["", f"Chance (uniform guess among outputs): {100 * chance:.0f}%."]
    bars = bars_check_grammars(rows) if grammars else bars_check(rows)
    if bars:
        md += ["", "## PBB bars", ""] + bars
    notes = meaningfulness(rows, dom.instruction_noun)
    long_cells = sorted({c for r in rows.values() for c, v in r["cells"].items() if v.get("too_long")})
    if long_cells:
        worst = max(v.get("too_long", 0) for r in rows.values() for v in r["cells"].values())
        notes.append(f"- up to {worst} targets per cell are longer than eval.max_new_tokens "
                     f"({cfg.eval.max_new_tokens}) and cannot be answered in: {', '.join(long_cells)}; raise it.")
    md += ["", "## When comparisons mean nothing", ""] + (notes or [nothing_near_chance(rows)])
    ext_lines, _ = extraction_section(rows)
    md += ext_lines + ladder_section(rows)
    md += curves_section(out, results)
    sweep_lines, sweep = sweep_section(out, cfg, rows)
    md += sweep_lines
    skew_lines, skew = skew_section(out, results.get("signatures"))
    md += skew_lines
    md += ["", "## Stages", "", (f"Training ran in {'bf16 autocast' if bf16_supported() and cfg.train.bf16 else 'fp32'}"
                                 f" ({'the hardware has native bf16 kernels' if bf16_supported() else 'no native bf16 kernels here, so no autocast'})."),
           "", "| recipe | stage | steps | tokens | minutes | tokens/s | gate |",
           "|---|---|---|---|---|---|---|"]
    for name, r in results["recipes"].items():
        for s in r["stages"]:
            md.append(f"| {name} | {s['name']} | {s['steps']} | {s['tokens'] / 1e6:.2f}M | {s['seconds'] / 60:.1f} | "
                      f"{s['tok_s']:,.0f} | {gate_text(s.get('gate'))} |")
    md += ["", "Stages with the same key (same starting point, spec and seed) are trained once and shared.",
           "", "![loss](loss.png)", "", "![accuracy](accuracy.png)", ""]
    if reward:
        md += ["![reward per GRPO stage](reward.png)", ""]
    summary = {"name": cfg.name, "seed": cfg.seed, "wall_seconds": results["wall_seconds"],
               "time": results.get("time"), "counts": results["counts"], "prepared": prep,
               "rows": {n: {"cells": r["cells"], "stages": r.get("stages", []), "diagnostics": r.get("diagnostics"),
                            **({"ladder": r["ladder"]} if r.get("ladder") else {}),
                            **({"tokens": r["tokens"]} if r.get("tokens") else {})}
                        for n, r in rows.items()},
               "bars": bars, "notes": notes, "sweep": sweep, "skew": skew, "verdicts": verdicts}
    if results.get("positive_control"):
        pc = results["positive_control"]
        summary["positive_control"] = {"prepare": pc["prepare"], "model": pc["model"], "cells": pc["cells"],
                                       "eval_seconds": pc.get("eval_seconds")}
    from inweights.core.io import atomic_write, write_summary

    summary = write_summary(out / "summary.json", summary)
    atomic_write(out / "report.md", "\n".join(md))
    return summary
