"""Where an experiment's time went (training, evaluation, the rest), and how its evaluation's share compares with
the share its work alone gives: the tokens evaluation reads and writes against the tokens training runs through
its forward and backward passes. The two together say which lever a share needs — an evaluation as fast per token
as training's forward pass has the share its size gives it, and only a smaller evaluation (or a longer training)
moves it; a slower one would gain from faster generation."""

from __future__ import annotations

from typing import Any


def time_shares(results: dict[str, Any], workers: int, passes: float = 3.0) -> dict[str, Any]:
    """Where a run's time went: training (every stage once, shared stages counted once), evaluation (every
    evaluated model) and the rest (set-up, data, loading, idle workers), as worker-seconds and as shares of
    wall time x workers. Stages or evaluations reused from an earlier run count the seconds they took then.

    With token counts on every evaluation and curve point (``tokens``) and no GRPO stage (whose rollouts are
    generation inside training), also the work: ``eval_tokens`` (prompt and generated tokens of every probe),
    ``train_tokens`` (every stage's tokens once) and ``eval_work_share`` = eval / (eval + ``passes`` x train),
    ``passes`` the forward-pass equivalents of a trained token (3: forward, input and weight gradients; 2 under LoRA,
    whose frozen matrices take no weight gradients); ``eval_speed`` = evaluation's tokens per second over training's
    forward-equivalent tokens per second (1: as fast per token as a training forward pass)."""
    stages: dict[str, float] = {}
    stage_tokens: dict[str, float | None] = {}
    curves: dict[str, float] = {}  # measured inside a stage (eval.curve_every): evaluation, not training
    curve_tokens: dict[str, int | None] = {}
    grpo = False
    for rec in results["recipes"].values():
        for st in rec.get("stages", []):
            pts = st.get("curve", [])
            curves[st["dir"]] = sum(p.get("seconds", 0.0) for p in pts)
            # a reused point (the base's step 0, measured by another chain) cost this chain nothing
            counted = [p.get("tokens") for p in pts if not p.get("reused")]
            curve_tokens[st["dir"]] = None if None in counted else sum(counted)
            # the step-0 point is measured before the stage's clock starts
            stages[st["dir"]] = st["seconds"] - sum(p.get("seconds", 0.0) for p in pts if p["step"] > 0)
            stage_tokens[st["dir"]] = st.get("tokens")
            grpo |= st.get("loss_kind") == "grpo"
    models = [results.get("base") or {}, *results.get("other_bases", {}).values(), *results["recipes"].values()]
    models = [m for m in models if m]
    evals = [m.get("eval_seconds", 0.0) for m in models] + list(curves.values())
    capacity = max(results["wall_seconds"] * max(workers, 1), 1e-9)
    train, ev = sum(stages.values()), sum(evals)
    out = {"workers": workers, "wall_seconds": results["wall_seconds"], "train_seconds": round(train, 1),
           "eval_seconds": round(ev, 1), "other_seconds": round(max(capacity - train - ev, 0.0), 1)}
    counts = [(m.get("tokens") or {}).get("prompt") for m in models] + list(curve_tokens.values())
    counts += [(m.get("tokens") or {}).get("generated") for m in models]
    if not grpo and stage_tokens and None not in counts and None not in stage_tokens.values():
        e_tok, t_tok = sum(counts), sum(stage_tokens.values())
        out |= {"eval_tokens": int(e_tok), "train_tokens": int(t_tok), "train_passes": passes,
                "eval_work_share": round(e_tok / max(e_tok + passes * t_tok, 1e-9), 3)}
        if ev > 0 and train > 0 and t_tok > 0:
            out["eval_speed"] = round((e_tok / ev) / (passes * t_tok / train), 2)
    if train + ev > capacity * 1.02:  # a resumed run: most of the work was done (and timed) by an earlier invocation
        return out | {"reused": True}
    out |= {f"{k}_share": round(out[f"{k}_seconds"] / capacity, 3) for k in ("train", "eval", "other")}
    return out


def time_lines(t: dict[str, Any]) -> list[str]:
    """The report's paragraph on time (``time_shares``), with the work line where the tokens were counted."""
    w = f"{t['workers']} worker{'s' * (t['workers'] > 1)}"
    if t.get("reused"):  # resumed: this invocation's wall time is not the run's
        md = [(f"Time: resumed — this invocation took {t['wall_seconds'] / 60:.1f} min and reused work timed by an "
               f"earlier one: training {t['train_seconds'] / 60:.1f} and evaluation {t['eval_seconds'] / 60:.1f} "
               f"worker-minutes in all ({w}).")]
    else:
        md = [(f"Time ({w}, wall time x workers = 100%): training {t['train_share']:.0%} "
               f"({t['train_seconds'] / 60:.1f} min), evaluation {t['eval_share']:.0%} "
               f"({t['eval_seconds'] / 60:.1f} min), the rest (set-up, data, loading, idle workers) "
               f"{t['other_share']:.0%}.")]
    if t.get("eval_work_share") is not None:
        line = (f"By work, evaluation is {t['eval_work_share']:.0%}: its probes read and wrote "
                f"{t['eval_tokens'] / 1e6:.2f}M tokens against training's {t['train_tokens'] / 1e6:.2f}M tokens "
                f"at ~{t['train_passes']:g} forward passes each")
        if t.get("eval_speed") is not None:
            s = t["eval_speed"]
            line += (f"; per token, evaluation ran at {s:.2f}x training's forward pass — "
                     + ("so its share is its size: a smaller evaluation, not a faster one, would shrink it."
                        if s >= 0.8 else "faster generation would shrink its share towards the work's."))
        md[0] += " " + line + ("" if line.endswith(".") else ".")
    return md + [""]
