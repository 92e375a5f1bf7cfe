"""Report of a rule-distillation run: accuracy vs k per recipe, in and out of distribution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from inweights.report.tables import described

SPLIT_NAMES = {"id": "in distribution", "ood": "out of distribution", "test": "test"}


def _cell(c: dict[str, Any], key: str) -> str:
    v = c.get(key)
    if v is None:
        return "–"
    return f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}"


def accuracy_vs_k_plot(out: Path, summary: dict[str, Any], task: str) -> Path:
    cells = [c for c in summary["cells"] if c["task"] == task]
    splits = sorted({key[4:] for c in cells for key in c if key.startswith("acc_")})
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4.2), squeeze=False)
    for ax, sp in zip(axes[0], splits):
        for recipe in sorted({c["recipe"] for c in cells}):
            pts = sorted((c["k"], c[f"acc_{sp}"]) for c in cells if c["recipe"] == recipe and f"acc_{sp}" in c)
            ks = [p[0] for p in pts]
            m = [100 * p[1]["mean"] for p in pts]
            s = [100 * p[1]["std"] for p in pts]
            ax.errorbar(ks, m, yerr=s, marker="o", capsize=3, label=recipe, lw=1.4)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (training examples)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(f"{task}: {SPLIT_NAMES.get(sp, sp)}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = out / f"accuracy_vs_k_{task}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


DISTILLED = ("rule_distill_enhanced", "rule_distill_base", "rule_distill_transfer")


def verdict_lines(cfg, summary: dict[str, Any]) -> list[str]:
    """Per task, the ladder: rung 1 (the base follows the rule in its prompt); then at every k of the bar (<= 8)
    rung 2 (the rule in the weights: the best distilled student, tested without the rule, against the teacher and
    against what memorising the k examples' pairs can reach, where the domain counts it) and the comparison with
    SFT on the examples, split by split, by its mean and 95% CI over seeds."""
    from inweights.report.verdict import compare

    cells = {(c["task"], c["recipe"], c["k"]): c for c in summary["cells"]}
    gate = (summary.get("prepared") or {}).get("gate", 0.8)
    lines = []
    ks = [k for k in cfg.distill.ks if k <= 8] or [min(cfg.distill.ks)]
    for task in sorted({c["task"] for c in summary["cells"]}):
        ic = [c["acc_id"]["mean"] for c in summary["cells"] if c["task"] == task and c["recipe"] == "in_context"
              and "acc_id" in c]
        teacher = sum(ic) / len(ic) if ic else None
        if teacher is not None:
            lines.append(f"- **{task}, rung 1** (the base follows the rule in its prompt): {100 * teacher:.1f}% — "
                         + ("holds." if teacher >= gate else f"**fails** (gate {100 * gate:.0f}%): no comparison below "
                                                             "can show what distillation adds."))
        for k in ks:
            s = cells.get((task, "sft_without_rule", k))
            have = [cells[(task, r, k)] for r in DISTILLED if (task, r, k) in cells and "acc_id" in cells[(task, r, k)]]
            if not (have and s):
                continue
            best = max(have, key=lambda c: (c["acc_id"]["mean"] + c.get("acc_ood", c["acc_id"])["mean"]))
            recipe = best["recipe"]
            cov = best.get("covered_id")
            rung2 = (f"- **{task} k={k}, rung 2** (the rule in the weights, no rule in the prompt): best distilled "
                     f"`{recipe}` {100 * best['acc_id']['mean']:.1f}% in distribution")
            if teacher is not None:
                rung2 += f" of the teacher's {100 * teacher:.1f}%"
            if cov is not None:
                beyond = best["acc_id"]["mean"] > cov["mean"] + 0.05
                rung2 += (f"; the k examples fully reveal {100 * cov['mean']:.1f}% of the test items (what memorising "
                          f"their pairs can reach) — " + ("the student goes beyond them." if beyond
                                                          else "the student does not go beyond them."))
            lines.append(rung2)
            for sp in ("ood", "id"):
                if f"acc_{sp}" in best and f"acc_{sp}" in s:
                    a, b = best[f"acc_{sp}"], s[f"acc_{sp}"]
                    lines.append(compare(f"{task} k={k} {sp.upper()}: {recipe} vs sft_without_rule", recipe,
                                         a["mean"], a["ci95"], "sft_without_rule", b["mean"], b["ci95"]))
    return lines


def write_report(cfg, out: Path, summary: dict[str, Any]) -> Path:
    dc = cfg.distill
    md = [f"# {cfg.name}", "", *described(cfg),
          (f"Rule distillation: k in {dc.ks}, seeds {dc.seeds}, {dc.epochs} epochs, batch {dc.batch_size}, "
          f"lr {dc.lr}, tau {dc.tau}, beta {dc.beta}, ce_weight {dc.ce_weight}, "
          f"{'LoRA r=' + str(cfg.model.lora.r) if cfg.model.lora else 'all weights'}; "
          f"wall time {summary['wall_seconds'] / 60:.1f} min."), ""]
    verdicts = verdict_lines(cfg, summary)
    if verdicts:
        md += ["## Verdict", "", *verdicts, ""]
    prep = summary.get("prepared")
    if prep:
        acc = prep.get("in_context", prep.get("in_context_cot"))
        md += [(f"Base: prepared `{prep['name']}`, rule-in-prompt accuracy {100 * acc:.1f}% on "
               f"{prep['eval_programs']} held-out invented rules (gate {100 * prep['gate']:.0f}%, "
               f"{'passed' if prep['passed'] else 'NOT passed'})."), ""]
    md += [("Accuracy (%), mean ± std over seeds; every trained recipe is tested without the rule in its "
           "prompt; `in_context` is the base reading the rule."), ""]
    for t in summary["tasks"]:
        task = t["name"]
        cells = [c for c in summary["cells"] if c["task"] == task]
        ks = sorted({c["k"] for c in cells})
        splits = sorted({key[4:] for c in cells for key in c if key.startswith("acc_")})
        md += [f"## {task}", "", f"Rule: `{t['rule']}`; tests: "
               + ", ".join(f"{n} {SPLIT_NAMES.get(s, s)}" for s, n in t["tests"].items()) + ".", ""]
        ic = [c["acc_id"]["mean"] for c in cells if c["recipe"] == "in_context" and "acc_id" in c]
        if ic:  # the ladder's first rung: a teacher must follow the rule before distilling it means anything
            acc, gate = sum(ic) / len(ic), (prep or {}).get("gate", 0.8)
            md += [f"Rung 1 (in-context skill: the base reading the rule): {100 * acc:.1f}% in distribution — "
                   + ("held." if acc >= gate else f"FAILED (below {100 * gate:.0f}%): no teacher follows the rule, so "
                      "no comparison below can show what distillation adds."), ""]
        for sp in splits:
            md += [f"**{SPLIT_NAMES.get(sp, sp)}**", "",
                   "| recipe | " + " | ".join(f"k={k}" for k in ks) + " |",
                   "|---|" + "---|" * len(ks)]
            for recipe in cfg.recipes:
                by_k = {c["k"]: c for c in cells if c["recipe"] == recipe}
                if by_k:
                    md.append(f"| {recipe} | " + " | ".join(_cell(by_k[k], f"acc_{sp}") if k in by_k else "–"
                                                          for k in ks) + " |")
            enh = {c["k"]: c for c in cells if c["recipe"] == "rule_distill_enhanced"}
            if enh:
                md.append("| (enhanced teacher, rule in prompt) | " + " | ".join(
                    _cell(enh[k], f"teacher_acc_{sp}") if k in enh else "–" for k in ks) + " |")
            md.append("")
        plot = accuracy_vs_k_plot(out, summary, task)
        md += [f"![accuracy vs k]({plot.name})", ""]
    if summary.get("bars"):
        md += ["## Bars", ""] + [f"- {b}" for b in summary["bars"]] + [""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
