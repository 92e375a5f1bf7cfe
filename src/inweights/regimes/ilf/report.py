"""Report of an ILF run: pass@k per method with bootstrap intervals, and what each step kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from inweights.core.io import write_summary
from inweights.report.tables import described

DESCRIPTIONS = {
    "zero_shot": "the starting policy, no further training",
    "sft_gold": "fine-tuned on the gold solutions of every task ILF kept, over all its rounds, at once (all its first round attempted, if it kept none)",
    "sft_refinements_no_feedback": "fine-tuned on refinements written without feedback (OLD CODE -> REFINEMENT)",
    "ilf": "fine-tuned on refinements written from feedback (OLD CODE + FEEDBACK -> REFINEMENT)",
}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def pass_at_k_plot(out: Path, results: dict[str, Any], ks: list[int]) -> Path:
    recipes = list(results["recipes"])
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(recipes), 3.8))
    width = 0.8 / len(ks)
    for j, k in enumerate(ks):
        xs = [i + (j - (len(ks) - 1) / 2) * width for i in range(len(recipes))]
        vals = [100 * results["recipes"][r][f"pass@{k}"] for r in recipes]
        lo = [v - 100 * results["recipes"][r][f"pass@{k}_ci"][0] for v, r in zip(vals, recipes)]
        hi = [100 * results["recipes"][r][f"pass@{k}_ci"][1] - v for v, r in zip(vals, recipes)]
        ax.bar(xs, vals, width=width, yerr=[lo, hi], capsize=3, label=f"pass@{k}")
    ax.set_xticks(range(len(recipes)), recipes, rotation=15, fontsize=8)
    ax.set_ylabel("% of test tasks")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / "pass_at_k.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ci(v: dict[str, Any], key: str = "rate") -> str:
    return f"{_pct(v[key])} [{_pct(v['ci'][0])}–{_pct(v['ci'][1])}]"


def _trained(x: dict[str, Any]) -> str:
    if not x["trained"]:
        return "no (nothing kept)" if not x.get("trained_on") else "no (nothing new kept)"
    return f"yes (from the start, on {x['trained_on']} tasks)" if "trained_on" in x else "yes"


def feedback_check_section(check: dict[str, Any] | None) -> list[str]:
    """Does the feedback carry information the refiner uses (``ILFRun.feedback_check``)?"""
    if not check:
        return []
    md = ["## Does the feedback carry information?", "",
          (f"{check['programs']} failing programs of {check['tasks']} refine-pool tasks the refiners never trained "
           "on, each refined by the feedback refiner with its own feedback (real), with another task's (shuffled), "
           "and by the refiner trained without feedback (none). % of refinements that pass [bootstrap 95% CI over "
           "programs]:"), "",
          "| real | shuffled | none | real − shuffled | real − none |", "|---|---|---|---|---|",
          (f"| {_ci(check['real'])} | {_ci(check['shuffled'])} | {_ci(check['none'])} | "
           f"{_ci(check['real_minus_shuffled'], 'diff')} | {_ci(check['real_minus_none'], 'diff')} |"), ""]
    md.append("Real feedback is clearly better than both (both intervals above 0)." if check["informative"] else
              "**Real feedback is not clearly better** than shuffled or no feedback (an interval reaches 0): "
              "whatever ILF gains here is not from what the feedback says.")
    if check.get("outcomes"):
        from inweights.regimes.ilf.diagnose import OUTCOMES

        md += ["", ("What the refinements did (% of all refinements; each gets the first that applies — passes; "
                    "unchanged: the old program again; broke: a test the old program passed now fails, or nothing "
                    "runs; fixed named: the old program's first failing test, the one test feedback names, now "
                    "passes but another fails; no progress: the rest) and the prompts' length in tokens (mean / max; "
                    "share longer than the context less the tokens generated):"), "",
               "| condition | " + " | ".join(o.replace("_", " ") for o in OUTCOMES) + " | prompt tokens | too long |",
               "|---|" + "---|" * (len(OUTCOMES) + 2)]
        for cond, sh in check["outcomes"].items():
            pt = check["prompt_tokens"][cond]
            md.append(f"| {cond} | " + " | ".join(_pct(sh[o]) for o in OUTCOMES) +
                      f" | {pt['mean']:.0f} / {pt['max']} | {_pct(pt['over_room'])}% over {pt['room']} |")
    if check.get("by_failure"):
        names = {"hidden_only": "only a hidden test fails", "error": "raises or does not run",
                 "wrong_shown": "a shown test fails"}
        md += ["", "Where the feedback helps — % of refinements that pass, by how the old program failed:", "",
               "| how the old program failed | programs | real | shuffled | none |", "|---|---|---|---|---|"]
        md += [f"| {names.get(k, k)} | {v['programs']} | {_pct(v['real'])} | {_pct(v['shuffled'])} | {_pct(v['none'])} |"
               for k, v in check["by_failure"].items()]
    return md + [""]


def finetune_section(finetunes: dict[str, Any]) -> list[str]:
    """Each fine-tuned model's budget and, with early stopping, its validation curve."""
    rows = [(n, f) for n, f in finetunes.items() if n != "init"]
    if not rows:
        return []
    md = ["## Fine-tuning", "",
          ("| model | records | steps trained / planned | epochs planned | replay share | stopped early | best step | "
           "val greedy pass: start → best | val curve (step: %) |"),
          "|---|---|---|---|---|---|---|---|---|"]
    for n, f in rows:
        curve = f.get("curve") or []
        start = f"{_pct(curve[0]['val_pass'])} → {_pct(f['best_val_pass'])}" if curve and f.get("best_val_pass") is not None else ""
        pts = ", ".join(f"{c['step']}: {_pct(c['val_pass'])}" for c in curve)
        md.append(f"| {n} | {f.get('records', '')} | {f.get('steps', '')} / {f.get('planned_steps', '')} | "
                  f"{f.get('epochs', '')} | {f.get('replay', 0)} | {'yes' if f.get('stopped_early') else 'no'} | "
                  f"{f.get('best_step', '') if f.get('best_step') is not None else ''} | {start} | {pts} |")
    return md + [""]


def verdict_lines(results: dict[str, Any], k: int) -> list[str]:
    """The comparisons ILF is about, one line each: ILF against each baseline on test pass@k, and whether the
    refiner uses what the feedback says."""
    from inweights.report.verdict import compare

    rec, key = results["recipes"], f"pass@{k}"
    lines = []
    if "ilf" in rec:
        for other in ("sft_gold", "zero_shot", "sft_refinements_no_feedback"):
            if other in rec:
                lines.append(compare(f"ilf vs {other} (test {key})", "ilf", rec["ilf"][key], rec["ilf"][f"{key}_ci"],
                                     other, rec[other][key], rec[other][f"{key}_ci"]))
    chk = results.get("feedback_check")
    if chk:
        for other, diff in (("shuffled", "real_minus_shuffled"), ("none", "real_minus_none")):
            lines.append(compare(f"refiner: real feedback vs {other}", "real", chk["real"]["rate"], chk["real"]["ci"],
                                 other, chk[other]["rate"], chk[other]["ci"], diff_ci=chk[diff]["ci"]))
    return lines


def write_report(out: Path, cfg, results: dict[str, Any]) -> dict[str, Any]:
    ilf, ks = cfg.ilf, cfg.ilf.ks
    recipes = results["recipes"]
    order_key = f"pass@{ks[0]}"
    ordering = sorted(recipes, key=lambda r: -recipes[r][order_key])
    verdicts = verdict_lines(results, ks[0])
    summary = {**results, "ordering": " > ".join(f"{r} ({_pct(recipes[r][order_key])})" for r in ordering),
               "ordering_cell": f"test {order_key}", "verdicts": verdicts}
    summary = write_summary(out / "summary.json", summary)
    c = cfg.domain.section()
    md = [f"# {cfg.name}", "", *described(cfg),
          (f"ILF on {c.source} coding tasks (pools: " + ", ".join(f"{p} {n}" for p, n in results["pools"].items() if n)
           + f"); feedback from `{results['feedback_provider']}`; {ilf.rounds} round(s)"
           + (" (each round's fine-tune from the starting policy, on every round's kept refinements so far)"
              if ilf.round_start == "base" and ilf.rounds > 1 else "")
           + ("; sft_gold's programs are the same functions written as explicit loops (`ilf.gold_style: loop`, a style"
              " the starting policy never saw)" if ilf.gold_style == "loop" else "")
           + f"; {ilf.n_samples} samples per "
           f"task at temperature {ilf.temperature}, {ilf.refine_samples} refinements per failing program; "
           f"pass@k from {ilf.eval_samples} samples per test task (unbiased estimator, bootstrap 95% interval "
           f"over tasks); wall time {results['wall_seconds'] / 60:.1f} min"
           + (" (this session's: the run was resumed, earlier sessions are not counted)." if results.get("resumed")
              else ".")), "",
          *([(f"Starting policy: the prepared base `{pb['name']}` ({pb['steps']} steps, greedy pass@1 "
              f"{_pct(pb['gate_value'])} on fresh-name tasks of its own functions; weights sha256 "
              f"{(pb.get('weights_sha256') or '')[:12]})."), ""] if (pb := results.get("prepared_base")) else []),
          *([(f"Refiners' start: the refiner base `{rb['name']}` ({rb['steps']} steps on {rb['family']}-family "
              f"refinements of its own functions; on its held-out ones, greedy refinements pass "
              f"{_pct(rb['with_feedback'])}% with their feedback, {_pct(rb['shuffled_feedback'])}% with another's, "
              f"{_pct(rb['without_feedback'])}% without; weights sha256 {(rb.get('weights_sha256') or '')[:12]})."), ""]
            if (rb := results.get("refiner_base")) else []),
          *(["## Verdict", "", *verdicts, ""] if verdicts else []),
          "## pass@k on the test tasks", "",
          "| method | what | " + " | ".join(f"pass@{k} [95% CI]" for k in ks) + " | test verdicts |",
          "|---|---|" + "---|" * len(ks) + "---|"]
    for r, v in recipes.items():
        cells = [f"{_pct(v[f'pass@{k}'])} [{_pct(v[f'pass@{k}_ci'][0])}–{_pct(v[f'pass@{k}_ci'][1])}]" for k in ks]
        st = ", ".join(f"{s} {n}" for s, n in sorted(v["statuses"].items(), key=lambda x: -x[1]))
        md.append(f"| {r} | {DESCRIPTIONS.get(r, '')} | " + " | ".join(cells) + f" | {st} |")
    md += ["", f"Ordering on {summary['ordering_cell']}: {summary['ordering']}.", ""]
    if results["rounds"]:
        md += ["## What each step kept", "",
               ("| method | round | train tasks | solved by a sample | failed (kept) | sent to the refiner | "
                "refinements sampled | passing | tasks kept | policy trained |"),
               "|---|---|---|---|---|---|---|---|---|---|"]
        for method, rounds in results["rounds"].items():
            for i, x in enumerate(rounds, 1):
                md.append(f"| {method} | {i} | {x['tasks']} | {x['policy_pass_any']} | {x['failed_tasks']} | "
                          f"{x['refined']} | {x['refinements']} | {x['passing_refinements']} | {x['kept']} | "
                          f"{_trained(x)} |")
        if "sft_gold_tasks" in results:
            md += ["", f"`sft_gold` trained on the gold solutions of {results['sft_gold_tasks']} tasks."]
        if (pl := results.get("policy_loss")) and "ilf_refinements" in pl:
            md += ["", (f"The starting policy's loss on what each fine-tune trains on (the paper's reason ILF can beat gold:"
                        f" refinements nearer the policy's own distribution): {pl['gold']:.3f} nats/token on the gold "
                        f"programs ({pl['gold_style']} style, {pl['tasks']} tasks), {pl['ilf_refinements']:.3f} on ILF's "
                        f"kept refinements ({pl['ilf_tasks']} tasks).")]
        md.append("")
    md += feedback_check_section(results.get("feedback_check"))
    md += finetune_section(results.get("finetunes", {}))
    plot = pass_at_k_plot(out, results, ks)
    md += [f"![pass@k]({plot.name})", "",
           ("Every program ran in the sandbox; every sample, verdict, feedback text and kept refinement is in "
            "`steps/*.json`.")]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return summary
