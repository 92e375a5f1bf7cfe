"""Curves (``eval.curve_every``): storage, extraction and skill measured on validation inputs during every stage,
kept with the stage, logged, plotted and tabled in the report; never on test inputs."""

import json

from inweights.cli import main


def test_curves_are_measured_on_validation_inputs_and_reported(root, tmp_path):
    out = tmp_path / "run"
    code = main(["run", str(root / "configs/smoke.yaml"), "--out", str(out), "--set", "recipes=[proactive,stage2_only]",
                 "--set", "domain.programs.n_val_inputs=2", "--set", "domain.programs.input_max=15",
                 "--set", "eval.curve_every=2",
                 "--set", "eval.curve_units=2", "--set", "eval.curve_inputs=1"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    s1, s2 = summary["rows"]["proactive"]["stages"]
    # the chain's first stage starts with its step-0 point; then every 2 steps and the last step
    assert [p["step"] for p in s1["curve"]] == [0, 2, 4]
    assert [p["step"] for p in s2["curve"]] == [2, 3]
    point = s1["curve"][-1]
    for key in ("without_io/in_weights/cot@val", "with_io/in_context/cot@val", "without_io/doc_recall",
                "with_io/query_recall"):
        assert 0.0 <= point[key] <= 1.0, key
    # both chains start from the base: its step-0 point is measured once, the other chain reuses it at no cost
    firsts = [s1["curve"][0], summary["rows"]["stage2_only"]["stages"][0]["curve"][0]]
    assert sorted(bool(p.get("reused")) for p in firsts) == [False, True]
    measured, reused = sorted(firsts, key=lambda p: bool(p.get("reused")))
    assert reused["seconds"] == 0.0 and measured["seconds"] > 0.0
    assert {k: v for k, v in reused.items() if k not in ("seconds", "reused")} == \
        {k: v for k, v in measured.items() if k != "seconds"}
    logged = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("event") == "curve" for r in logged) == 3 + 2 + 3  # proactive s1, s2; stage2_only from step 0
    report = (out / "report.md").read_text()
    assert "## Curves" in report and (out / "curves.png").is_file()
    # the work: every measured point and evaluation counts the tokens its probes read and wrote; the time shares
    # add them up (each stage and curve once, the reused point at no cost) against the stages' trained tokens
    assert measured["tokens"] > 0 and all(p["tokens"] > 0 for p in s1["curve"] + s2["curve"])
    t = summary["time"]
    stages = {st["dir"]: st for r in summary["rows"].values() for st in r.get("stages", [])}
    evals = [summary["rows"][n]["tokens"] for n in ("base", "proactive", "stage2_only")]
    assert all(e["prompt"] > 0 and e["generated"] > 0 for e in evals)
    curve = sum(p["tokens"] for st in stages.values() for p in st["curve"] if not p.get("reused"))
    assert t["eval_tokens"] == sum(e["prompt"] + e["generated"] for e in evals) + curve
    assert t["train_tokens"] == sum(st["tokens"] for st in stages.values()) and t["train_passes"] == 3.0
    assert t["eval_work_share"] == round(t["eval_tokens"] / (t["eval_tokens"] + 3 * t["train_tokens"]), 3)
    assert f"By work, evaluation is {t['eval_work_share']:.0%}" in report
    # validation inputs only: no curve probe asks a test input
    from inweights.config import load_config
    from inweights.runs import load_units

    cfg = load_config(out / "config.yaml")
    _, units = load_units(cfg)
    assert all(not set(u.meta["val_inputs"]) & set(u.test_inputs) for u in units)


def test_curves_need_validation_inputs(root, capsys):
    assert main(["validate", str(root / "configs/smoke.yaml"), "--set", "eval.curve_every=2"]) == 2
    assert "n_val_inputs" in capsys.readouterr().err
