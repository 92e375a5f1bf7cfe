"""Rule distillation: the rules domain, the distill loss, the Alpaca reader, and a whole run end to end."""

import json
import math
import random
import re
import subprocess
import sys

import pytest
import torch

from inweights.config import load_config, validate
from inweights.core.errors import UserError
from inweights.domains.rules import ARITH_EXPR, RulesDomain, apply_rule, eval_expression, load_alpaca_pairs
from inweights.train.distill import default_layers, distill_loss, make_pair_batch


# ------------------------------------------------------------------ the domain
def rules_cfg(**kw):
    return validate({"name": "t", "domain": {"name": "rules", "rules": kw}}).domain.rules


def test_arith_task_is_the_papers():
    d = RulesDomain(rules_cfg(), 0)
    (u,) = d.build()
    assert u.pointer == "@@@" and "a @@@ b = a + b + 1" in u.instruction
    assert all(1 <= a <= 99 and 1 <= b <= 99 for a, b in u.test_inputs)
    assert all(121 <= a <= 1996 and 121 <= b <= 1996 for a, b in u.meta["ood_inputs"])
    assert d.answer_text(u, (12, 30)) == "43" and d.answer_text(u, (1996, 1996)) == "3993"
    assert len(u.test_inputs) == len(u.meta["ood_inputs"]) == 100


def test_rules_apply_real_semantics():
    assert apply_rule({"kind": "operator", "expr": "2 * a - b + 3"}, (10, 4)) == "19"
    assert apply_rule({"kind": "operator", "expr": "max(a, b) - 1"}, (3, 9)) == "8"
    assert apply_rule({"kind": "string", "op": "rotate"}, "abcd") == "bcda"
    assert apply_rule({"kind": "string", "op": "replace", "x": "a", "y": "z"}, "banana") == "bznznz"
    spec = {"kind": "label", "label": "threshold", "t": 50, "labels": ["big", "small"]}
    assert apply_rule(spec, 51) == "big" and apply_rule(spec, 50) == "small"


@pytest.mark.parametrize("expr", ["__import__('os').system('true')", "a ** b", "open('x')", "a.real"])
def test_rule_expressions_never_run_code(expr):
    with pytest.raises(UserError):
        eval_expression(expr, 1, 2)


def test_preparation_never_sees_the_held_out_rule():
    d = RulesDomain(rules_cfg(kinds=["operator"], const_max=1), 3)
    rng = random.Random(0)
    units = [d.fresh_unit(rng) for _ in range(3000)]
    assert not any(u.meta["spec"].get("expr") == ARITH_EXPR or u.pointer == "@@@" for u in units)
    # the family does contain the neighbours (a + b, a + b - 1): only the held-out rule itself is excluded
    assert {"a + b", "a + b - 1"} <= {u.meta["spec"]["expr"] for u in units}


def test_rules_are_seeded():
    a = RulesDomain(rules_cfg(n_random=3), 5).build()
    b = RulesDomain(rules_cfg(n_random=3), 5).build()
    assert [(u.instruction, u.train_inputs) for u in a] == [(u.instruction, u.train_inputs) for u in b]


# ------------------------------------------------------------------ the loss
def _batch():
    # student prompts are shorter than the teacher's (no rule); the answers are shared
    return make_pair_batch([[1, 2], [3, 4, 5]], [[7, 8, 9, 1, 2], [7, 3, 4, 5]], [[10, 11, 12], [13]], pad_id=0)


def test_answer_positions_are_aligned_and_shifted():
    b = _batch()
    s_next = b.s_ids.reshape(-1)[b.s_pos + 1]  # the token each gathered position predicts
    t_next = b.t_ids.reshape(-1)[b.t_pos + 1]
    assert s_next.tolist() == t_next.tolist() == b.targets.tolist() == [10, 11, 12, 13]
    # the first answer token is predicted from the last prompt token
    assert b.s_pos[0].item() == 1 and b.t_pos[0].item() == 4


def test_loss_is_zero_when_student_and_teacher_agree():
    torch.manual_seed(0)
    b = _batch()
    vocab, layers = 20, 4
    s_logits = torch.randn(2, b.s_ids.shape[1], vocab)
    t_logits = torch.randn(2, b.t_ids.shape[1], vocab)
    # copy the student's answer-position logits and hidden states into the teacher's positions
    t_logits.reshape(-1, vocab)[b.t_pos] = s_logits.reshape(-1, vocab)[b.s_pos]
    s_h = [torch.randn(2, b.s_ids.shape[1], 8) for _ in range(layers + 1)]
    t_h = [torch.randn(2, b.t_ids.shape[1], 8) for _ in range(layers + 1)]
    for hs, ht in zip(s_h, t_h):
        ht.reshape(-1, 8)[b.t_pos] = 3.0 * hs.reshape(-1, 8)[b.s_pos]  # same direction, another norm
    out = distill_loss(s_logits, t_logits, b, tau=2.0, beta=5.0, s_hidden=s_h, t_hidden=t_h)
    assert out["loss"].abs().item() < 1e-5
    # and not zero when they differ
    out = distill_loss(s_logits, torch.randn_like(t_logits), b, tau=2.0)
    assert out["loss"].item() > 0.01


def test_gradient_only_on_answer_positions_first_included():
    torch.manual_seed(0)
    b = _batch()
    vocab = 20
    s_logits = torch.randn(2, b.s_ids.shape[1], vocab, requires_grad=True)
    t_logits = torch.randn(2, b.t_ids.shape[1], vocab)
    s_h = [torch.randn(2, b.s_ids.shape[1], 8, requires_grad=True) for _ in range(4)]
    t_h = [torch.randn(2, b.t_ids.shape[1], 8) for _ in range(4)]
    distill_loss(s_logits, t_logits, b, beta=1.0, s_hidden=s_h, t_hidden=t_h, ce_weight=0.5)["loss"].backward()
    with_grad = (s_logits.grad.abs().sum(-1) > 0).reshape(-1).nonzero().flatten().tolist()
    assert with_grad == sorted(b.s_pos.tolist())
    # row 0: prompt [1, 2] + answer [10, 11, 12]: positions 1, 2, 3 predict 10, 11, 12 (1 = first answer token)
    assert with_grad[:3] == [1, 2, 3]
    # hidden states: all but the last layer (index 0 is the embeddings) get gradient, on answer positions only
    assert default_layers(4) == [1, 2]
    assert s_h[0].grad is None and s_h[3].grad is None
    h_grad = (s_h[1].grad.abs().sum(-1) > 0).reshape(-1).nonzero().flatten().tolist()
    assert h_grad == sorted(b.s_pos.tolist())


# ------------------------------------------------------------------ the paper's file format
def _write(path, recs):
    path.write_text(json.dumps(recs))
    return path


def test_alpaca_pairs_are_checked(tmp_path):
    full = [{"instruction": "a @@@ b = a + b + 1", "input": "1 @@@ 2", "output": "4"},
            {"instruction": "a @@@ b = a + b + 1", "input": "2 @@@ 2", "output": "5"}]
    no = [dict(r, instruction="") for r in full]
    f, n = _write(tmp_path / "full.json", full), _write(tmp_path / "no.json", no)
    assert [p["output"] for p in load_alpaca_pairs(f, n)] == ["4", "5"]
    bad = _write(tmp_path / "bad.json", [full[0], {"instruction": "x", "input": "2 @@@ 2"}])
    with pytest.raises(UserError, match=r"record 1: missing field 'output'"):
        load_alpaca_pairs(bad)
    mism = _write(tmp_path / "mism.json", [no[0], dict(no[1], output="6")])
    with pytest.raises(UserError, match=r"mism.json record 1: output differs from its teacher record"):
        load_alpaca_pairs(f, mism)


@pytest.mark.slow
def test_bad_rule_dataset_is_one_line_exit_2(tmp_path):
    full = _write(tmp_path / "full.json", [{"instruction": "r", "input": "q"}])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: c\ndomain:\n  name: rules\n  rules:\n    alpaca_train: {full}\n"
                   f"    alpaca_test: {full}\nmodel: {{preset: tiny, prepared_base: null}}\n")
    p = subprocess.run([sys.executable, "-m", "inweights.cli", "validate", str(cfg)], check=False, capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "record 0: missing field 'output'" in p.stderr
    assert "Traceback" not in p.stderr


def test_rule_recipes_are_checked():
    from inweights.regimes import registry as regimes

    with pytest.raises(UserError, match="unknown rule-distillation recipe 'proactive'"):
        regimes.validate({"name": "t", "domain": {"name": "rules"}, "recipes": ["proactive"]})
    cfg = validate({"name": "t", "domain": {"name": "rules"}})
    assert cfg.recipes[-1] == "rule_distill_enhanced" and cfg.model.prepared_base == "configs/prepare_rules.yaml"


# ------------------------------------------------------------------ a whole run
@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A random-init tiny model (no rule-following skill: this tests the plumbing, not the learning)."""
    from inweights.curriculum import corpus_texts
    from inweights.models import build_tiny, save_model, train_tokenizer

    cfg = load_config("configs/prepare_rules.yaml")
    d = RulesDomain(cfg.domain.rules, 0)
    rng = random.Random(0)
    tok = train_tokenizer(corpus_texts(d, [d.fresh_unit(rng) for _ in range(200)] + d.build(), 0), 320)
    model = build_tiny(cfg.model.tiny.model_copy(update={"hidden_size": 64, "intermediate_size": 128,
                                                         "num_layers": 2, "vocab_size": 320}), tok, 0)
    path = tmp_path_factory.mktemp("base") / "m"
    save_model(model, tok, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False])
def test_rule_distill_run_end_to_end(tiny_base, tmp_path, lora, monkeypatch):
    from inweights.models import load as load_module
    from inweights.regimes.rule_distill import run as rule_distill
    from inweights.regimes.rule_distill.run import run_rule_distill
    from inweights.train.loop import get_accelerator

    built = []  # every model the run builds: on the accelerator's device, as the stage engine places them
    real_copy, real_load = rule_distill.trainable_copy, load_module.load_model
    monkeypatch.setattr(rule_distill, "trainable_copy", lambda *a, **k: built.append(real_copy(*a, **k)) or built[-1])

    def recording_load(*a, **k):
        model, tok = real_load(*a, **k)
        built.append(model)
        return model, tok

    monkeypatch.setattr(load_module, "load_model", recording_load)

    raw = {"name": "rd", "domain": {"name": "rules", "rules": {"n_test": 6}},
           "model": {"path": str(tiny_base), **({"lora": {"r": 4, "alpha": 8}} if lora else {})},
           "distill": {"ks": [2, 4], "seeds": [0, 1], "epochs": 2, "batch_size": 2, "lr": 1e-3, "beta": 1.0,
                       "teacher_examples": 1},
           "eval": {"batch_size": 16}}
    cfg = validate(raw)
    out = tmp_path / "run"
    summary = run_rule_distill(cfg, out, None)
    rows = [json.loads(ln) for ln in (out / "cells.jsonl").read_text().splitlines()]
    assert {r["recipe"] for r in rows} == set(cfg.recipes) and len(rows) == 5 * 2 * 2
    assert all(0 <= r["acc_id"] <= 1 and 0 <= r["acc_ood"] <= 1 for r in rows)
    assert all(1 <= r["best_epoch"] <= 2 for r in rows if r["recipe"] != "in_context")
    assert all(r["final_kl"] >= 0 for r in rows if r["recipe"].startswith("rule_distill"))
    report = (out / "report.md").read_text()
    assert "| rule_distill_enhanced |" in report and (out / "accuracy_vs_k_arith.png").is_file()
    assert "Rung 1 (in-context skill" in report and "FAILED" in report  # a random-init base follows no rule
    assert summary["bars"] and "k=2 rule_distill_enhanced vs sft_without_rule" in summary["bars"][0]
    if lora:  # the same seed gives the same numbers (checked once: the full fine-tuning path differs only there)
        again = run_rule_distill(cfg, tmp_path / "again", None)
        assert again["cells"] == summary["cells"]
    # resumable by cell (runs.Steps, like a PBB run by stage): a run that stopped after half its cells ends with the
    # same ones; a cell whose record has another key (computed from other inputs) is done again
    lines = (out / "cells.jsonl").read_text().splitlines(keepends=True)
    samples_before = (out / "samples.jsonl").read_text()
    cell_steps = sorted((out / "steps").glob("cell_*.json"))
    assert len(cell_steps) == 2 * 2 and all(json.loads(p.read_text())["key"] for p in cell_steps)
    for p in cell_steps[len(cell_steps) // 2:]:
        p.unlink()
    stale = json.loads(cell_steps[0].read_text())
    cell_steps[0].write_text(json.dumps({**stale, "key": "another"}))
    (out / "cells.jsonl").unlink()
    with pytest.raises(UserError, match="already exists"):
        run_rule_distill(cfg, out, None)  # never over a run without --resume
    resumed = run_rule_distill(cfg, out, None, resume=True)
    assert resumed["cells"] == summary["cells"]
    def cells(text):  # each cell once, in order; its seconds aside
        return [{k: v for k, v in json.loads(ln).items() if k != "seconds"} for ln in text if ln.strip()]

    assert cells((out / "cells.jsonl").read_text().splitlines()) == cells(lines)
    assert (out / "samples.jsonl").read_text() == samples_before  # the same generations, each once
    assert built and {next(m.parameters()).device for m in built} == {get_accelerator().device}
    assert json.loads((out / "status.json").read_text())["state"] == "finished"  # status like every run


def test_data_rules_export_is_the_papers_layout_and_deterministic(tmp_path):
    from inweights.cli import main

    args = ["data", "rules", "--set", "distill.ks=[4]", "--set", "distill.seeds=[0]"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.json"))
    assert "arith/train_full_4shot_seed0.json" in files and "arith/test_ood_no.json" in files
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    full = load_alpaca_pairs(tmp_path / "a/arith/train_full_4shot_seed0.json",
                             tmp_path / "a/arith/train_no_4shot_seed0.json")
    assert len(full) == 4 and all("a + b + 1" in p["rule"] and p["student_instruction"] == "" for p in full)
    a, b = (int(v) for v in re.findall(r"\d+", full[0]["input"])[:2])
    assert full[0]["output"] == str(a + b + 1)


def test_prepare_warm_start_resolves_another_base(root, tmp_path):
    from inweights.prepare import init_dir

    cfg = load_config(root / "configs" / "prepare_rules.yaml", ["prepare.init_from=configs/prepare_tiny.yaml"])
    assert init_dir(cfg, root / "configs" / "prepare_rules.yaml") == root / "prepared" / "prepare_tiny"
    cfg.prepare.init_from = "configs/nope.yaml"
    with pytest.raises(UserError, match="prepare.init_from: prepare config not found"):
        init_dir(cfg, tmp_path / "x.yaml")


def test_direct_answers_are_read_as_committed():
    from inweights.regimes.rule_distill.tasks import Task

    t = Task("t", "r", [])
    assert t.read("Answer: leftAnswer:") == "left"  # ran on without the end-of-turn token
    assert t.read("Answer: 122\nAnswer: 7") == "122"
    assert t.read("no answer") is None and t.read("Answer:") is None
    assert Task("t", "r", [], direct=False).read("  free text ") == "free text"


def test_rule_run_entry_points_fail_in_one_line(tmp_path, tiny_base):
    from inweights.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: c\ndomain: {{name: rules}}\nmodel: {{path: {tiny_base}}}\n"
                   f"distill: {{teacher_path: {tmp_path / 'nope'}, ks: [2], seeds: [0]}}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()  # nothing written
    assert main(["eval", str(cfg), "--model", str(tiny_base)]) == 2


def _alpaca_files(tmp_path, k=4):
    """The paper's layout for one rule: k-shot train (full/no), k validation (full/no), test (full/no)."""
    rule = "a @@@ b = a + b + 1"

    def recs(pairs, full):
        return [{"instruction": rule if full else "", "input": f"{a} @@@ {b}", "output": str(a + b + 1)}
                for a, b in pairs]

    out = {}
    for name, pairs in (("train", [(i, i + 1) for i in range(k)]), ("valid", [(i, 2 * i) for i in range(k)]),
                        ("test", [(i, 3) for i in range(5)])):
        for full in (True, False):
            out[f"{name}_{'full' if full else 'no'}"] = _write(tmp_path / f"{name}_{'full' if full else 'no'}.json",
                                                              recs(pairs, full))
    return out


def _rules_cfg(tmp_path, files, ks="[4]", **extra):
    keys = {"alpaca_train": files["train_full"], "alpaca_train_no": files["train_no"],
            "alpaca_test": files["test_no"], **extra}
    body = "".join(f"    {k}: {v}\n" for k, v in keys.items())
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: c\ndomain:\n  name: rules\n  rules:\n{body}distill: {{ks: {ks}, seeds: [0]}}\n"
                   "model: {preset: tiny, prepared_base: null}\n")
    return cfg


def test_a_k_shot_file_runs_k_with_the_papers_validation_files(tmp_path, capsys):
    from inweights.cli import main
    from inweights.config import load_config
    from inweights.regimes.rule_distill.tasks import checked_alpaca_task, split

    files = _alpaca_files(tmp_path, k=4)
    # without validation files, k = 4 from a 4-record file cannot also draw validation examples: validate says so
    cfg = _rules_cfg(tmp_path, files)
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "k = 4 needs at least 5" in err[0] and "alpaca_valid" in err[0]
    cfg = _rules_cfg(tmp_path, files, alpaca_valid=files["valid_full"], alpaca_valid_no=files["valid_no"])
    assert main(["validate", str(cfg)]) == 0
    task = checked_alpaca_task(load_config(cfg))
    train, val = split(task, 4, 0, 0)
    assert sorted(e.student for e in train) == sorted(f"{i} @@@ {i + 1}" for i in range(4))
    assert [e.student for e in val] == [f"{i} @@@ {2 * i}" for i in range(4)]  # the valid file's, not the pool's
    assert all(e.teacher.startswith("a @@@ b") for e in val)


def test_the_student_is_never_tested_with_the_rule_and_the_teacher_sees_each_test_records_rule(tmp_path, capsys):
    from inweights.cli import main
    from inweights.config import load_config
    from inweights.regimes.rule_distill.tasks import checked_alpaca_task

    files = _alpaca_files(tmp_path)
    extra = {"alpaca_valid": files["valid_full"], "alpaca_valid_no": files["valid_no"]}
    cfg = _rules_cfg(tmp_path, {**files, "test_no": files["test_full"]}, **extra)
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test_full.json record 0 holds the rule" in err[0]
    # two rules in the training file: the teacher's test prompts must come from the with-rule test file
    tr = json.loads(files["train_full"].read_text())
    tr[1]["instruction"] = "a @@@ b = a + b + 1 (always)"
    _write(files["train_full"], tr)
    assert main(["validate", str(_rules_cfg(tmp_path, files, **extra))]) == 2
    assert "2 different rules" in capsys.readouterr().err
    te = json.loads(files["test_full"].read_text())
    te[2]["instruction"] = "a @@@ b = a + b + 1 (always)"
    _write(files["test_full"], te)
    task = checked_alpaca_task(load_config(_rules_cfg(tmp_path, files, alpaca_test_full=files["test_full"], **extra)))
    assert [e.teacher.split("\n")[0] for e in task.tests["test"]][1:3] == ["a @@@ b = a + b + 1",
                                                                           "a @@@ b = a + b + 1 (always)"]
    assert all(e.student == f"{i} @@@ 3" for i, e in enumerate(task.tests["test"]))


def test_bad_alpaca_records_are_reported_together_and_the_good_ones_kept(tmp_path, capsys):
    from inweights.cli import main

    files = _alpaca_files(tmp_path, k=6)
    for name in ("train_full", "train_no"):
        recs = json.loads(files[name].read_text())
        del recs[1]["output"]
        recs[3]["input"] = 7
        _write(files[name], recs)
    cfg = _rules_cfg(tmp_path, files, ks="[3]")
    assert main(["validate", str(cfg)]) == 0  # 4 good pairs: k = 3 plus validation examples
    err = capsys.readouterr().err
    assert "4 record(s) rejected" in err and "record 1: missing field 'output'" in err
    assert "record 3: field 'input' is not a string" in err
    assert main(["validate", str(cfg), "--strict"]) == 2
    assert "data.strict is on" in capsys.readouterr().err


def test_rule_distillation_and_the_probes_read_answers_with_one_function():
    """One answer extraction per domain: rule distillation's tasks read a generation as the domain's probes do."""
    from inweights import views
    from inweights.regimes.rule_distill.tasks import generated_tasks

    cfg = validate({"name": "t", "domain": {"name": "rules", "rules": {"n_test": 2}}})
    domain = RulesDomain(cfg.domain.rules, cfg.seed)
    tasks = generated_tasks(cfg, domain, domain.build())
    for text in ("Answer: 12\nAnswer: 7", "x Answer: 3Answer: 4", "none", "Answer: 5"):
        assert {t.read(text) for t in tasks} == {views.extract(domain, text)}


def test_map_rules_apply_real_semantics_and_never_share_a_table_with_preparation():
    import itertools

    from inweights.domains.rules import RulesConfig, RulesDomain, permutation_parity

    d = RulesDomain(RulesConfig(tasks=[], n_random=4, kinds=["map"]), 7)
    held = d.build()
    rng = random.Random(0)
    prep = [d.fresh_unit(rng) for _ in range(200)]
    assert all(permutation_parity(u.meta["spec"]["table"]) == 1 for u in held)
    assert all(permutation_parity(u.meta["spec"]["table"]) == 0 for u in prep)
    assert all(sorted(u.meta["spec"]["table"]) == list("0123456789") for u in held + prep)
    u = held[0]
    table = u.meta["spec"]["table"]
    x = u.test_inputs[0]
    assert 3 <= len(x) <= 4 and len(set(x)) == len(x) and all(6 <= len(o) <= 8 for o in u.meta["ood_inputs"])
    assert d.answer_text(u, x) == " ".join(f"{c}>{table[int(c)]}" for c in x)
    # hypotheses: the digit tables of the family (bijections) that give the k examples' answers, counted by brute force
    for k in (1, 2, 3):
        xs = u.train_inputs[:k]
        seen = sorted({c for x in xs for c in x})
        free = [c for c in "0123456789" if c not in seen]
        images = [c for c in "0123456789" if c not in {table[int(s)] for s in seen}]
        fits = sum(len(set(p)) == len(p) and set(p) <= set(images) for p in itertools.product("0123456789", repeat=len(free)))
        assert d.hypotheses(u, xs) == fits > 1
        covered = sum(set(t) <= set(seen) for t in u.test_inputs) / len(u.test_inputs)
        assert d.covered(u, u.test_inputs, xs) == covered


@pytest.mark.slow
def test_the_transfer_set_recipe_runs_on_fresh_inputs_only(tiny_base, tmp_path):
    from inweights.regimes.rule_distill.run import generated_tasks, run_rule_distill
    from inweights.runs import load_units

    raw = {"name": "rd", "domain": {"name": "rules", "rules": {"tasks": [], "n_random": 1, "kinds": ["map"],
                                                               "n_test": 6}},
           "model": {"path": str(tiny_base), "lora": {"r": 4, "alpha": 8}},
           "recipes": ["in_context", "sft_without_rule", "rule_distill_transfer"],
           "distill": {"ks": [2], "seeds": [0, 1], "epochs": 2, "batch_size": 2, "lr": 1e-3, "transfer_inputs": 8},
           "eval": {"batch_size": 16}}
    cfg = validate(raw)
    task = generated_tasks(cfg, *load_units(cfg))[0]
    fresh = {e.x for e in task.transfer}
    assert len(fresh) == 8 and not fresh & {e.x for e in task.pool + task.tests["id"] + task.tests["ood"]}
    summary = run_rule_distill(cfg, tmp_path / "run", None)
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "cells.jsonl").read_text().splitlines()]
    tr = [r for r in rows if r["recipe"] == "rule_distill_transfer"]
    assert len(tr) == 2 and all(0 <= r["transfer_kept"] <= 8 and 0 <= r["transfer_teacher_acc"] <= 1 for r in tr)
    assert all(r["hypotheses"] >= 1 and 0 <= r["covered_id"] <= 1 for r in rows)
    assert any("rule_distill_transfer vs sft_without_rule" in b for b in summary["bars"])
    from inweights.regimes.registry import validate as validate_run

    with pytest.raises(UserError, match="transfer_inputs"):
        validate_run({**raw, "distill": {**raw["distill"], "transfer_inputs": 0}})


def test_the_base_answers_once_and_an_adapter_is_answered_merged_without_touching_it(tiny_base, monkeypatch):
    from inweights.eval import generate as generate_module
    from inweights.models.load import load_model
    from inweights.regimes.rule_distill import run as rd

    cfg = validate({"name": "rd", "domain": {"name": "rules"}, "model": {"path": str(tiny_base),
                    "lora": {"r": 4, "alpha": 8}}, "distill": {"max_new_tokens": 6}, "eval": {"batch_size": 4}})
    base, tok = load_model(str(tiny_base))
    base = rd.frozen(base)
    calls = []
    monkeypatch.setattr(rd, "generate", lambda m, *a, **k: calls.append(m) or generate_module.generate(m, *a, **k))
    prompts = [[{"role": "user", "content": f"Compute {i} @@@ 3."}] for i in range(5)]
    answers = rd.Answers(base)
    first = answers(base, tok, prompts, cfg)
    assert answers(base, tok, prompts, cfg) == first and len(calls) == 1  # the base's answers are kept
    assert answers(base, tok, prompts[:3], cfg) == first[:3] and len(calls) == 2  # other prompts: answered
    student = rd.trainable_copy(base, cfg, 0)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # an adapter that changes the answers
    before = {n: p.clone() for n, p in student.named_parameters()}
    merged = answers(student, tok, prompts, cfg)
    assert answers(student, tok, prompts, cfg) == merged and len(calls) == 4  # another model's answers: never kept
    assert calls[-1] is not student and not hasattr(calls[-1], "peft_config")  # a merged copy answered
    assert hasattr(student, "peft_config") and all(torch.equal(p, before[n]) for n, p in student.named_parameters())
    reference = generate_module.generate(student, tok, prompts, max_new_tokens=6, batch_size=4)  # unmerged
    assert merged == reference and merged != first


@pytest.mark.slow
def test_rule_distillation_runs_on_programs_the_rule_being_the_source(tmp_path):
    """Any domain's units are rules: a program's source is the teacher's rule, its chain of thought the answer."""
    from inweights.curriculum import corpus_texts
    from inweights.models import build_tiny, save_model, train_tokenizer
    from inweights.regimes.registry import validate as validate_run
    from inweights.regimes.rule_distill.run import generated_tasks, run_rule_distill
    from inweights.runs import load_units

    raw = {"name": "rdp", "regime": "rule_distill",
           "domain": {"name": "programs", "programs": {"n_programs": 4, "without_io_fraction": 0.5, "cond_prob": 0.0}},
           "model": {"path": str(tmp_path / "base"), "lora": {"r": 4, "alpha": 8}},
           "recipes": ["in_context", "sft_without_rule", "rule_distill_base"],
           "distill": {"ks": [2], "seeds": [0], "epochs": 2, "batch_size": 2, "lr": 1e-3, "max_new_tokens": 8},
           "eval": {"batch_size": 8}}
    cfg = validate_run(raw)
    domain, units = load_units(cfg)
    tok = train_tokenizer(corpus_texts(domain, units, 0), 320)
    save_model(build_tiny(cfg.model.tiny.model_copy(update={"hidden_size": 64, "intermediate_size": 128,
                                                            "num_layers": 2, "vocab_size": 320}), tok, 0),
               tok, tmp_path / "base")
    tasks = generated_tasks(cfg, domain, units)
    e = tasks[0].pool[0]
    assert "def " in e.teacher and "def " not in e.student and " -> " in e.answer and e.answer.endswith(e.gold)
    assert set(tasks[0].tests) == {"id"}  # programs have no out-of-distribution inputs
    summary = run_rule_distill(cfg, tmp_path / "run", None)
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "cells.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * len(units) and all("acc_id" in r and "acc_ood" not in r for r in rows)
    assert summary["cells"]
    with pytest.raises(UserError, match="draws none"):
        validate_run({**raw, "recipes": ["rule_distill_transfer"], "distill": {**raw["distill"], "transfer_inputs": 4}})


def test_map_preparation_can_start_with_single_digit_lookups():
    """Map rules let the preparation choose the longest input (drills and warm-up: one-digit lookups); the other
    kinds draw their own, so their preparation streams are unchanged."""
    from inweights.domains.rules import RulesConfig

    d = RulesDomain(RulesConfig(tasks=[], n_random=1, kinds=["map"]), 0)
    assert d.unit_sizes() == (8, 8)
    rng = random.Random(0)
    assert all(len(x) == 1 for x in d.fresh_unit(rng, n_statements=1).train_inputs)
    assert max(len(x) for _ in range(20) for x in d.fresh_unit(rng).train_inputs) > 2
    assert RulesDomain(RulesConfig(kinds=["map", "label"]), 0).unit_sizes() is None


def test_map_rules_with_letter_values_write_each_digit_as_its_letter():
    """``map_values: letters``: the table maps digits to the letters a-j (a bijection, odd for held-out rules, even
    for the preparation's), stated and answered with each letter right after its digit; digit tables unchanged."""
    from inweights.domains.rules import MAP_LETTERS, RulesConfig, permutation_parity

    d = RulesDomain(RulesConfig(tasks=[], n_random=4, kinds=["map"], map_values="letters"), 7)
    held = d.build()
    prep = [d.fresh_unit(random.Random(i)) for i in range(100)]
    assert all(sorted(u.meta["spec"]["table"]) == list(MAP_LETTERS) for u in held + prep)
    assert {permutation_parity(u.meta["spec"]["table"]) for u in held} == {1}
    assert {permutation_parity(u.meta["spec"]["table"]) for u in prep} == {0}
    u = held[0]
    table = u.meta["spec"]["table"]
    assert u.instruction.endswith(": " + " ".join(f"{i}{c}" for i, c in enumerate(table)) + ".")
    x = u.test_inputs[0]
    assert d.answer_text(u, x) == " ".join(f"{c}{table[int(c)]}" for c in x)
    assert d.score(u, x, d.answer_text(u, x)) and not d.score(u, x, d.answer_text(u, x[::-1]))
    assert d.hypotheses(u, u.train_inputs[:1]) == math.factorial(10 - len(set(u.train_inputs[0])))
    digits = RulesDomain(RulesConfig(tasks=[], n_random=4, kinds=["map"]), 7).build()
    assert all("values" not in v.meta["spec"] and ">" in v.instruction for v in digits)
    # digit tables are the ones the code drew before letters existed (values computed with that code, d156345)
    assert [v.meta["spec"]["table"] for v in digits] == ["4820971365", "3751092648", "3765829140", "1492780536"]
    dd = RulesDomain(RulesConfig(tasks=[], n_random=4, kinds=["map"]), 7)
    assert [dd.fresh_unit(random.Random(i)).meta["spec"]["table"] for i in range(3)] == [
        "8912537406", "8627530419", "0734286591"]


def test_map_preparation_tables_can_state_only_some_entries():
    """``map_prepare_entries``: the preparation's training tables state lo..hi entries and ask only about those
    digits; the gate's units (no size) and every held-out rule state all ten."""
    from inweights.domains.rules import RulesConfig

    d = RulesDomain(RulesConfig(tasks=[], n_random=2, kinds=["map"], map_values="letters",
                                map_prepare_entries=(2, 4)), 0)
    rng = random.Random(0)
    for _ in range(50):
        u = d.fresh_unit(rng, n_statements=8)
        keys = u.meta["spec"]["keys"]
        assert 2 <= len(keys) <= 4 and u.instruction.count(" ") - u.instruction.split(":")[0].count(" ") == len(keys)
        assert all(set(x) <= set(keys) for x in u.train_inputs)
        assert d.answer_text(u, u.train_inputs[0]) == " ".join(f"{c}{u.meta['spec']['table'][int(c)]}"
                                                               for c in u.train_inputs[0])
    assert "keys" not in d.fresh_unit(rng).meta["spec"]
    assert all("keys" not in u.meta["spec"] for u in d.build())
    with pytest.raises(ValueError, match="map_prepare_entries"):
        RulesConfig(map_prepare_entries=(0, 4))


def test_map_tables_can_state_the_letter_before_its_digit():
    from inweights.domains.rules import RulesConfig

    d = RulesDomain(RulesConfig(tasks=[], n_random=1, kinds=["map"], map_values="letters",
                                map_order="value_first"), 0)
    u = d.build()[0]
    table = u.meta["spec"]["table"]
    assert u.instruction.endswith(": " + ",".join(f"{c}{i}" for i, c in enumerate(table)) + ".")
    assert d.answer_text(u, "80") == f"8{table[8]} 0{table[0]}"  # answers keep the digit first
    with pytest.raises(ValueError):
        RulesConfig(map_order="sideways")
    with pytest.raises(ValueError, match="value_first needs map_values: letters"):
        RulesConfig(map_order="value_first")


def test_copy_drills_repeat_a_fresh_string_and_leave_the_stream_unchanged_when_off():
    """``prepare.copy_frac``: that share of the preparation's examples asks to repeat 4-16 distinct random
    characters (loss on the answer only); at 0 (the default) the sampler's examples are the ones it gave before."""
    from transformers import AutoTokenizer

    from inweights.config import load_raw
    from inweights.curriculum import TokenCache
    from inweights.domains import make_domain
    from inweights.prepare import PrepareSampler, copy_drill

    tok = AutoTokenizer.from_pretrained("prepared/prepare_tiny")
    r = copy_drill(random.Random(3))
    s = r["messages"][1]["content"]
    assert r["messages"][0]["content"] == "Repeat exactly:\n" + s and 4 <= len(s) <= 16 and len(set(s)) == len(s)

    def stream(drop_key=False, **prep):
        raw = load_raw("configs/prepare_rules_map.yaml")
        if drop_key:
            raw["prepare"].pop("copy_frac")  # the field's default
        raw["prepare"].update(prep)
        cfg = validate(raw)
        sampler = PrepareSampler(cfg, make_domain(cfg), TokenCache(tok))
        rng = random.Random(0)
        return [sampler(rng) for _ in range(40)]

    off, default = stream(copy_frac=0.0), stream(drop_key=True)
    assert off == default and not any("Repeat exactly" in tok.decode(ids) for ids, _ in off)
    on = stream(copy_frac=0.5)
    copies = [tok.decode(ids) for ids, _ in on if "Repeat exactly" in tok.decode(ids)]
    assert 8 <= len(copies) <= 32
    ids, labels = on[next(i for i, (x, _) in enumerate(on) if "Repeat exactly" in tok.decode(x))]
    answer = tok.decode([t for t in labels if t != -100], skip_special_tokens=True)
    assert answer.strip() == tok.decode(ids).split("Repeat exactly:\n")[1].split("<")[0].strip()


def test_copy_accuracy_scores_exact_repeats_of_held_out_drills(monkeypatch):
    from inweights import prepare

    seen = []

    def fake(model, tok, prompts, **kw):
        seen.extend(p[0]["content"] for p in prompts)
        return [" " + p[0]["content"].split("\n")[1] + "\n" if i % 2 else p[0]["content"][::-1]
                for i, p in enumerate(prompts)]

    monkeypatch.setattr(prepare, "generate", fake)
    assert prepare.copy_accuracy(None, None, 10, 4, seed=1) == 0.5
    first = list(seen)
    prepare.copy_accuracy(None, None, 10, 4, seed=1)
    assert seen[10:] == first and all(s.startswith("Repeat exactly:\n") for s in first)


def test_the_verdict_climbs_the_ladder_at_every_k():
    """Rung 1 (the teacher in context), then per k rung 2 (the best distilled student without the rule, against the
    teacher and the share the k examples reveal) and its comparison with SFT on the examples."""
    from types import SimpleNamespace

    from inweights.regimes.rule_distill.report import verdict_lines

    def stat(m, lo, hi):
        return {"mean": m, "std": 0.0, "ci95": [lo, hi]}

    cells = [{"task": "t", "recipe": "in_context", "k": k, "acc_id": stat(1.0, 1, 1), "acc_ood": stat(0.98, 0.98, 0.98)}
             for k in (1, 2)]
    for k, (tr, sft, cov) in {1: (0.9, 0.0, 0.0), 2: (0.1, 0.05, 0.18)}.items():
        cells += [{"task": "t", "recipe": "rule_distill_transfer", "k": k, "acc_id": stat(tr, tr - 0.05, tr + 0.05),
                   "acc_ood": stat(tr, tr - 0.05, tr + 0.05), "covered_id": stat(cov, cov, cov)},
                  {"task": "t", "recipe": "rule_distill_base", "k": k, "acc_id": stat(0.0, 0, 0),
                   "acc_ood": stat(0.0, 0, 0), "covered_id": stat(cov, cov, cov)},
                  {"task": "t", "recipe": "sft_without_rule", "k": k, "acc_id": stat(sft, 0, sft + 0.05),
                   "acc_ood": stat(sft, 0, sft + 0.05)}]
    cfg = SimpleNamespace(distill=SimpleNamespace(ks=[1, 2, 16]))
    lines = verdict_lines(cfg, {"cells": cells, "prepared": {"gate": 0.8}})
    text = "\n".join(lines)
    assert "rung 1** (the base follows the rule in its prompt): 100.0% — holds." in text
    assert "**t k=1, rung 2**" in text and "`rule_distill_transfer` 90.0%" in text and "goes beyond them" in text
    assert "**t k=2, rung 2**" in text and "does not go beyond them" in text
    assert "k=1 ID: rule_distill_transfer vs sft_without_rule" in text and "k=16" not in text


def test_operator_hypotheses_count_the_family_that_random_spec_draws():
    """The operators consistent with k examples, counted against the family as ``random_spec`` draws it (the
    expressions collected from 20,000 draws, evaluated with Python's own arithmetic)."""
    from inweights.domains.rules import RulesConfig, RulesDomain

    d = RulesDomain(RulesConfig(tasks=["arith"], kinds=["operator"]), 0)
    u = d.build()[0]
    assert u.meta["spec"]["expr"] == "a + b + 1"
    rng = random.Random(3)
    family = {d.random_spec(rng)["expr"] for _ in range(20_000)}
    assert len(family) == 152

    def fits(xs):
        return sum(all(eval(e, {"max": max, "min": min}, {"a": a, "b": b}) == a + b + 1 for a, b in xs)
                   for e in family)

    counts = [d.hypotheses(u, u.train_inputs[:k]) for k in (1, 2, 4, 8)]
    assert counts == [fits(u.train_inputs[:k]) for k in (1, 2, 4, 8)]
    assert counts[-1] >= 1 and counts == sorted(counts, reverse=True)
    # equal operands leave many: 5 @@@ 5 = 11 is also 2a + b - 4, max(a, b) + 6, a + b + b - 4, ...
    assert d.hypotheses(u, [(5, 5)]) == fits([(5, 5)]) >= 6 and d.hypotheses(u, [(5, 5), (7, 2)]) == 1
    assert d.covered(u, u.test_inputs, u.train_inputs[:1]) is None
