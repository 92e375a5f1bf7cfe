import json
import random

import pytest
import torch

from inweights.cli import main
from inweights.config import TinyConfig, TrainConfig
from inweights.models import build_tiny, train_tokenizer
from inweights.train.data import IGNORE, PackedBatches, tokenize_record
from inweights.train.loop import train_stage

TEXTS = ["def foo(x):\n    a = (x + 3) % 10\n    return a", "What does foo return for x = 4?", "Answer: 7"] * 20


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, 320)


def _rec(u, a):
    msgs = [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return {"messages": msgs, "prompt": msgs[:1], "completion": msgs[1:]}


def test_loss_mask_covers_the_assistant_turn_exactly(tok):
    rec = _rec("What does foo return for x = 4?", "Answer: 7")
    ids, labels = tokenize_record(tok, rec, "completion")
    trained = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE])
    # the turn's content and the token that ends it; not the template's newline after the turn
    assert trained == "Answer: 7<|end|>"
    prompt_ids = tok(tok.apply_chat_template(rec["prompt"], tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids and all(lab == IGNORE for lab in labels[: len(prompt_ids)])
    ids_all, labels_all = tokenize_record(tok, rec, "all")
    assert labels_all == ids_all and ids_all == ids


def test_loss_mask_with_the_plain_template(tok):
    """A tokenizer without a chat template: plain layout, loss on the answer and EOS only."""
    from inweights.train.data import render

    plain = train_tokenizer(TEXTS, 320)
    plain.chat_template = None
    rec = _rec("What does foo return for x = 4?", "Answer: 7")
    assert render(plain, rec["messages"]) == "### User:\nWhat does foo return for x = 4?\n\n### Assistant:\nAnswer: 7<|end|>"
    ids, labels = tokenize_record(plain, rec, "completion")
    assert plain.decode([i for i, lab in zip(ids, labels) if lab != IGNORE]) == "Answer: 7<|end|>"
    assert plain.decode(ids[: labels.index(next(lab for lab in labels if lab != IGNORE))]).endswith("### Assistant:\n")


def test_packed_first_token_never_counts(tok):
    """The first token of each packed example is never a target (it would be predicted from the
    previous example)."""
    b = PackedBatches(lambda rng: ([1, 2, 3], [1, 2, 3]), 0, rows=1, max_len=9, pad_id=0)
    batch = next(b)
    assert batch["labels"][0].tolist() == [IGNORE, 2, 3] * 3


def test_packing_keeps_examples_whole_and_restarts_positions(tok):
    exs = [([1] * n, [5] * n) for n in (7, 5, 9, 3, 8, 6, 4)]

    def sample(rng):
        return exs[rng.randrange(len(exs))]

    b = PackedBatches(sample, 0, rows=3, max_len=16, pad_id=0)
    batch = next(b)
    for row_ids, row_pos, row_lab in zip(batch["input_ids"], batch["position_ids"], batch["labels"]):
        starts = [i for i, p in enumerate(row_pos.tolist()) if p == 0]
        lengths = [e - s for s, e in zip(starts, starts[1:] + [16])]
        real = [n for n, s in zip(lengths, starts) if row_lab[s].item() != IGNORE]
        assert all(n in (7, 5, 9, 3, 8, 6, 4) for n in real)
    state = b.state_dict()
    nxt = next(b)
    b2 = PackedBatches(sample, 123, rows=3, max_len=16, pad_id=0)
    b2.load_state_dict(json.loads(json.dumps(state)))
    assert torch.equal(next(b2)["input_ids"], nxt["input_ids"])


def _train(tok, tmp, steps, hook=None):
    torch.manual_seed(0)
    model = build_tiny(TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=320), tok, 0)
    recs = [_rec(f"What does foo return for x = {i}?", f"Answer: {(i + 3) % 10}") for i in range(10)]

    def sample(rng):
        return tokenize_record(tok, rng.choice(recs), "completion")

    cfg = TrainConfig(batch_size=4, grad_accum=2, max_len=64, lr=3e-3, bf16=False, log_every=1)
    b = PackedBatches(sample, 1, 4, 64, tok.pad_token_id)
    return train_stage(model, b, steps, cfg, tmp, save_every=4, on_step=hook, desc="t")


class Boom(Exception):
    pass


def test_resume_after_kill_gives_identical_result(tok, tmp_path):
    ref = _train(tok, tmp_path / "ref", 10)

    def kill(step, model):
        if step == 6:
            raise Boom

    with pytest.raises(Boom):
        _train(tok, tmp_path / "killed", 10, hook=kill)
    assert (tmp_path / "killed" / "ckpt" / "progress.json").is_file()
    resumed = _train(tok, tmp_path / "killed", 10)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in ref["history"]]
    for p, q in zip(ref["model"].parameters(), resumed["model"].parameters()):
        assert torch.equal(p, q)
    assert not (tmp_path / "killed" / "ckpt").exists()


SMOKE = ["--set", "recipes=[proactive, stage1_only, stage2_only, mixture, retroactive, demos_only]"]


@pytest.mark.slow
def test_experiment_end_to_end_and_stage_sharing(root, tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(root / "configs/smoke.yaml"), "--out", str(out), *SMOKE]) == 0
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished"
    for f in ("config.yaml", "metrics.jsonl", "samples.jsonl", "summary.json", "report.md", "loss.png", "accuracy.png"):
        assert (out / f).is_file(), f
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    prov = summary["provenance"]  # what the numbers depend on besides the config
    assert prov["packages"]["torch"] and prov["packages"]["inweights"] and prov["cpu"]["cores"] >= 1
    assert prov["torch"]["threads"] >= 1 and isinstance(prov["torch"]["bf16_autocast"], bool)
    assert set(rows) == {"base", "proactive", "stage1_only", "stage2_only", "mixture", "retroactive", "demos_only"}
    assert rows["proactive"]["stages"][0]["dir"] == rows["stage1_only"]["stages"][0]["dir"]  # trained once
    stage_dirs = list((out / "stages").iterdir())
    assert len(stage_dirs) == 7  # 8 recipe stages, one shared
    samples = [json.loads(ln) for ln in (out / "samples.jsonl").open()]
    pc = summary["positive_control"]["cells"]  # smoke's positive control: the prepared tiny base, in context
    assert sum(s["mode"] != "doc_context" for s in samples) == (
        sum(c["n"] for r in rows.values() for c in r["cells"].values()) + sum(c["n"] for c in pc.values()))
    assert all(c["acc"] >= 0.8 for c in pc.values()) and "**Positive control**" in (out / "report.md").read_text()
    assert all(r["diagnostics"]["rung"]["failed"] for r in rows.values())  # every model's ladder is diagnosed
    report = (out / "report.md").read_text()
    assert "| proactive |" in report and "near chance" in report
    # rerunning with --resume reuses everything and gives the same numbers
    assert main(["run", str(root / "configs/smoke.yaml"), "--out", str(out), "--resume", *SMOKE]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["rows"] == summary["rows"]
    # export: each recipe's final full-fine-tuning model copied as a standalone folder
    assert main(["export", str(out), "--recipe", "proactive", "--recipe", "demos_only"]) == 0
    models = json.loads((out / "models.json").read_text())
    for r in ("proactive", "demos_only"):
        assert (out / "export" / r / "model.safetensors").read_bytes() == (out / models[r] / "model.safetensors").read_bytes()
    assert main(["export", str(out), "--recipe", "nope"]) == 2


@pytest.mark.slow
def test_same_seed_same_metrics(root, tmp_path):
    sums = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["run", str(root / "configs/smoke.yaml"), "--out", str(out), "--set", "recipes=[proactive]"]) == 0
        metrics = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
        sums.append([(m.get("step"), m.get("loss")) for m in metrics if "loss" in m])
    assert sums[0] == sums[1]


def test_run_refuses_existing_dir_without_resume(root, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "x").write_text("1")
    assert main(["run", str(root / "configs/smoke.yaml"), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_model_recites_a_document_it_was_trained_on(tmp_path):
    """Learning is real: 150 steps (~10 s on 2 cores) of training on one program's document, then the pointer alone recalls it."""
    from inweights import views
    from inweights.config import ProgramsConfig
    from inweights.curriculum import TokenCache, corpus_texts
    from inweights.domains.programs import ProgramsDomain
    from inweights.eval.generate import generate

    d = ProgramsDomain(ProgramsConfig(n_programs=4, min_statements=3, max_statements=3), 5)
    units = d.build()
    u = units[0]
    tok = train_tokenizer(corpus_texts(d, units, 0), 320)
    torch.manual_seed(0)
    model = build_tiny(TinyConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=320), tok, 0)
    cache = TokenCache(tok)

    def sample(rng):
        return cache(views.decl(d, u, rng), "all")

    cfg = TrainConfig(batch_size=4, max_len=256, lr=3e-3, bf16=False, log_every=50, warmup_frac=0.05)
    res = train_stage(model, PackedBatches(sample, 0, 4, 256, tok.pad_token_id), 150, cfg, tmp_path, save_every=10**6)
    rng = random.Random(1)
    prompts = [views.decl(d, u, rng)["prompt"] for _ in range(3)]
    outs = generate(res["model"], tok, prompts, max_new_tokens=80, batch_size=3)
    assert all(u.instruction in o for o in outs), outs
    # and an untrained model does not
    fresh = build_tiny(TinyConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=320), tok, 1)
    assert not any(u.instruction in o for o in generate(fresh, tok, prompts, max_new_tokens=80, batch_size=3))


@pytest.mark.slow
def test_run_killed_mid_stage_resumes_to_the_same_metrics(root, tmp_path, capsys):
    """kill -9, and Ctrl-C, a real `inweights run` after a mid-stage checkpoint (and a few steps past it), resume
    it, compare with a clean run: the same summary, samples and weights, and a metrics log with no line twice."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from inweights.core.rundir import state_of

    sets = ["--set", "recipes=[proactive]", "--set", "pbb.stage1_steps=60", "--set", "train.save_every=5",
            "--set", "eval.eval_base=false"]
    clean = tmp_path / "clean"
    assert main(["run", str(root / "configs/smoke.yaml"), "--out", str(clean), *sets]) == 0

    def losses(run):
        return [(r["stage"], r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if "loss" in r]

    def past_checkpoint(run):
        """A step logged after the newest checkpoint: what the resume must not log twice."""
        ckpts = list(run.glob("stages/1_*/ckpt/progress.json"))
        if not ckpts or not (run / "metrics.jsonl").is_file():
            return False
        try:
            step = json.loads(ckpts[0].read_text())["step"]
        except (OSError, ValueError):
            return False
        return any(s > step for _, s, _ in losses(run)) if (run / "metrics.jsonl").stat().st_size else False

    for sig in (signal.SIGKILL, signal.SIGINT):
        killed = tmp_path / sig.name
        cmd = [sys.executable, "-m", "inweights.cli", "run", str(root / "configs/smoke.yaml"), "--out", str(killed),
               *sets]
        # SIGINT as a terminal sends it, whatever disposition this test process inherited (a child whose parent
        # ignores SIGINT starts with it ignored, and Python then installs no KeyboardInterrupt handler)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
        deadline = time.time() + 120
        while time.time() < deadline and not past_checkpoint(killed):
            time.sleep(0.01)
        os.killpg(proc.pid, sig)
        proc.wait()
        assert list(killed.glob("stages/1_*/ckpt*/progress.json")), "no mid-stage checkpoint appeared"
        assert not (killed / "summary.json").exists()
        if sig == signal.SIGKILL:  # nobody could write "interrupted": the free run lock says it
            assert json.loads((killed / "status.json").read_text())["state"] == "running"
            assert state_of(killed) == "interrupted (process gone)"
            assert main(["status", str(killed)]) == 0
            assert "interrupted (process gone)" in capsys.readouterr().out
            assert main(["report", str(killed)]) == 2
            assert "interrupted (process gone)" in capsys.readouterr().err
        else:
            assert state_of(killed) == "interrupted"
        assert main(["run", str(root / "configs/smoke.yaml"), "--out", str(killed), "--resume", *sets]) == 0
        assert state_of(killed) == "finished"
        a = json.loads((clean / "summary.json").read_text())["rows"]
        b = json.loads((killed / "summary.json").read_text())["rows"]
        assert {k: v["cells"] for k, v in a.items()} == {k: v["cells"] for k, v in b.items()}
        assert losses(clean) == losses(killed)  # same lines, in order: none logged twice across the interrupt
        assert (clean / "samples.jsonl").read_bytes() == (killed / "samples.jsonl").read_bytes()
        ma, mb = (json.loads((r / "models.json").read_text())["proactive"] for r in (clean, killed))
        assert (clean / ma / "model.safetensors").read_bytes() == (killed / mb / "model.safetensors").read_bytes()
        assert not list(killed.rglob("*.tmp"))


def test_a_second_process_on_the_same_run_directory_is_refused(root, tmp_path, capsys, lock_holder):
    import time

    out = tmp_path / "run"
    with lock_holder(out) as pid:
        assert main(["run", str(root / "configs/smoke.yaml"), "--out", str(out), "--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by pid {pid}" in err[0], err
        assert not (out / "config.yaml").exists()
    time.sleep(0.1)
    from inweights.core.rundir import is_held

    assert not is_held(out)  # released with the process


@pytest.mark.slow
def test_local_model_path_with_lora(root, tmp_path):
    """model.path + model.lora: each stage saves only its adapter (chained to the model it was trained
    on); loading follows the chain; `export --merge` writes a merged model plain transformers loads;
    the base weights outside the adapter stay untouched."""
    from transformers import AutoModelForCausalLM

    from inweights.models import save_model
    from inweights.models.load import load_model

    tok = train_tokenizer(TEXTS, 320)
    base = build_tiny(TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=320), tok, 0)
    save_model(base, tok, tmp_path / "base")
    out = tmp_path / "run"
    args = ["run", str(root / "configs/smoke.yaml"), "--out", str(out), "--set", "model.preset=null",
            "--set", f"model.path={tmp_path / 'base'}", "--set", "model.lora={r: 4, alpha: 8}",
            "--set", "recipes=[proactive]", "--set", "eval.eval_base=false"]
    assert main(args) == 0
    models = json.loads((out / "models.json").read_text())
    final = out / models["proactive"]
    assert (final / "adapter_config.json").is_file() and not (final / "model.safetensors").exists()
    stage1 = next(d for d in (out / "stages").iterdir() if d.name.startswith("1_")) / "model"
    assert json.loads((final / "inweights.json").read_text())["base"] == str(stage1)
    assert json.loads((stage1 / "inweights.json").read_text())["base"] == str((tmp_path / "base").resolve())
    assert main(["export", str(out)]) == 2  # LoRA needs --merge
    assert main(["export", str(out), "--merge", "--out", str(tmp_path / "exp")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "exp" / "proactive")
    chained, _ = load_model(final)
    sd0, sd1, sd2 = base.state_dict(), merged.state_dict(), chained.state_dict()
    assert torch.equal(sd0["model.embed_tokens.weight"], sd1["model.embed_tokens.weight"])
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(sd0[q], sd1[q]) and torch.allclose(sd1[q], sd2[q])
    # the merged stage 1 differs from the final model: both adapters were applied in order
    s1, _ = load_model(stage1)
    assert not torch.allclose(s1.state_dict()[q], sd1[q])


def test_lora_target_module_missing_is_one_line(root, tmp_path, capsys):
    from inweights.models import save_model

    tok = train_tokenizer(TEXTS, 320)
    base = build_tiny(TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=320), tok, 0)
    save_model(base, tok, tmp_path / "base")
    capsys.readouterr()
    out = tmp_path / "run"
    args = ["run", str(root / "configs/smoke.yaml"), "--out", str(out), "--set", "model.preset=null",
            "--set", f"model.path={tmp_path / 'base'}",
            "--set", "model.lora={target_modules: [q_proj, c_attn]}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "c_attn" in err[0] and "q_proj" in err[0] and "all-linear" in err[0]
    assert not out.exists()


def test_packed_examples_do_not_see_each_other(tok):
    """The logits of an example inside a packed row equal its logits alone."""
    from inweights.train.loop import packed_logits

    model = build_tiny(TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=320), tok, 0)
    model.eval()
    a, b = torch.randint(10, len(tok), (1, 20)), torch.randint(10, len(tok), (1, 30))
    row = torch.cat([a, b], 1)
    pos = torch.cat([torch.arange(20), torch.arange(30)])[None]
    with torch.no_grad():
        packed = packed_logits(model, row, pos)
        alone_a, alone_b = model(input_ids=a).logits, model(input_ids=b).logits
    assert torch.allclose(packed[0, :20], alone_a[0], atol=1e-5)
    assert torch.allclose(packed[0, 20:], alone_b[0], atol=1e-5)


@pytest.mark.slow
def test_gated_stage_records_its_curve_and_outcome(root, tmp_path):
    """A stage gate measures on validation inputs every N steps; an unreachable value runs the stage to its
    cap and says so; the gate is part of the stage's key (a changed gate is a new stage)."""
    out = tmp_path / "g"
    sets = ["--set", "recipes=[stage1_only]", "--set", "domain.programs.n_train_inputs=5",
            "--set", "domain.programs.n_val_inputs=1", "--set", "pbb.stage1_steps=5",
            "--set", "pbb.stage1_gate={value: 1.0, every: 2}", "--set", "eval.train_inputs=0"]
    assert main(["run", str(root / "configs/smoke.yaml"), "--out", str(out), *sets]) == 0
    summary = json.loads((out / "summary.json").read_text())
    gate = summary["rows"]["stage1_only"]["stages"][0]["gate"]
    assert gate["metric"] == "with_io/in_weights/cot@val" and not gate["reached"]
    assert [st for st, _ in gate["curve"]] == [2, 4, 5]
    assert "NOT reached" in (out / "report.md").read_text()
    out2 = tmp_path / "g2"
    assert main(["run", str(root / "configs/smoke.yaml"), "--out", str(out2), *sets[:-4],
                 "--set", "eval.train_inputs=0"]) == 0
    assert json.loads((out2 / "summary.json").read_text())["rows"]["stage1_only"]["stages"][0]["dir"] != \
        summary["rows"]["stage1_only"]["stages"][0]["dir"]


def test_gate_without_validation_inputs_is_one_line(root, tmp_path, capsys):
    assert main(["validate", str(root / "configs/smoke.yaml"), "--set", "pbb.stage1_gate={value: 0.5}"]) == 2
    assert "n_val_inputs" in capsys.readouterr().err


@pytest.mark.slow
def test_a_recipe_can_start_from_another_prepared_base(root, tmp_path):
    """`recipe:NAME` starts from the prepared base of configs/NAME.yaml (a control without PBB's stage 1), which
    is evaluated too; its stages are its own."""
    out = tmp_path / "o"
    sets = ["--set", "recipes=[stage2_only, 'stage2_only:prepare_tiny']", "--set", "eval.max_units_per_group=2",
            "--set", "eval.train_inputs=0", "--set", "pbb.stage2_steps=2"]
    assert main(["run", str(root / "configs/smoke.yaml"), "--out", str(out), *sets]) == 0
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert {"base", "base:prepare_tiny", "stage2_only", "stage2_only:prepare_tiny"} <= set(rows)
    assert rows["stage2_only"]["stages"][0]["dir"] != rows["stage2_only:prepare_tiny"]["stages"][0]["dir"]
    assert "| base:prepare_tiny |" in (out / "report.md").read_text()
    assert main(["validate", str(root / "configs/smoke.yaml"), "--set", "recipes=['stage2_only:a/b']"]) == 2


def test_name_tokens_make_every_name_one_token(root, tmp_path):
    """`model.name_tokens`: the run's starting model spells each unit's name as one token (in a question and in
    a document alike), its embedding matrix grown to match; names inside longer words stay in pieces."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "n"
    sets = ["--set", "recipes=[stage2_only]", "--set", "model.name_tokens=true", "--set", "eval.max_units_per_group=2",
            "--set", "eval.train_inputs=0", "--set", "pbb.stage2_steps=2"]
    assert main(["run", str(root / "configs/smoke.yaml"), "--out", str(out), *sets]) == 0
    tok = AutoTokenizer.from_pretrained(out / "base_named")
    model = AutoModelForCausalLM.from_pretrained(out / "base_named")
    plain = AutoTokenizer.from_pretrained(out / "base")
    from inweights.config import load_config
    from inweights.runs import load_units

    _, us = load_units(load_config(out / "config.yaml"))
    assert len(tok) == len(plain) + len({u.pointer for u in us}) == model.get_input_embeddings().weight.shape[0]
    for u in us:
        assert tok.tokenize(f"What does {u.pointer} return?").count(u.pointer) == 1
        assert len(plain.tokenize(u.pointer)) > 1
        assert u.pointer not in tok.tokenize(f"x{u.pointer}y")  # not inside a longer word
        text = f"```python\n{u.instruction}\n```"
        assert tok.decode(tok(text)["input_ids"]) == text
    # the trained stage keeps the grown tokenizer, and the name is one token there too
    stage = next((out / "stages").iterdir()) / "model"
    assert len(AutoTokenizer.from_pretrained(stage)) == len(tok)


def test_training_only_some_embedding_rows_changes_nothing_else(tok, tmp_path):
    """`trainable: names`: only the given rows of the (tied) embedding matrix move; every other weight, and
    every other row, stays bit for bit (no weight decay leaks into them)."""
    model = build_tiny(TinyConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=320), tok, 0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    record = tokenize_record(tok, _rec("What does foo return for x = 4?", "Answer: 7"), "completion")
    rows = sorted(set(record[0][2:4]))  # two tokens of the question

    def sample(rng):
        return record

    cfg = TrainConfig(batch_size=2, max_len=64, lr=1e-2, bf16=False, weight_decay=0.1, warmup_frac=0.0)
    res = train_stage(model, PackedBatches(sample, 0, 2, 64, tok.pad_token_id), 5, cfg, tmp_path,
                      save_every=10**6, trainable_rows=rows)
    after = dict(res["model"].named_parameters())
    emb = "model.embed_tokens.weight"
    for n, p in before.items():
        if n != emb:
            assert torch.equal(p, after[n].detach()), n
    moved = (after[emb].detach() != before[emb]).any(dim=1).nonzero().flatten().tolist()
    assert moved == rows


def test_training_only_the_names_needs_name_tokens_one_line(root, capsys):
    for extra in ([], ["--set", "model.name_tokens=true", "--set", "model.lora={r: 2}"]):
        assert main(["validate", str(root / "configs/smoke.yaml"), "--set", "pbb.stage2_trainable=names", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "names' embeddings" in err[0]
    assert main(["validate", str(root / "configs/smoke.yaml"), "--set", "pbb.stage2_trainable=names",
                 "--set", "model.name_tokens=true"]) == 0


def test_replay_in_every_stage_adds_in_context_examples_everywhere(root):
    """pbb.replay_all_stages: every stage of every PBB recipe trains in-context with_io examples; by default
    only the stage-2 curricula do (stage keys of the default recipes are unchanged)."""
    from inweights.config import load_config
    from inweights.regimes.experiment.pbb import stages_for

    names = ["proactive", "retroactive", "mixture", "stage1_only", "stage2_only", "demos_only@k3"]
    base = load_config(root / "configs/pbb_programs.yaml")
    on = load_config(root / "configs/pbb_programs.yaml", ["pbb.replay_all_stages=true"])
    for name in names:
        default, replayed = stages_for(name, base), stages_for(name, on)
        assert all(any(m.view == "in_context" and m.group == "with_io" for m in s.mixture) for s in replayed), name
        for d, r in zip(default, replayed, strict=True):
            had = any(m.view == "in_context" for m in d.mixture)
            if name != "mixture":  # (mixture's one stage blends both stages' mixtures: it gains stage 1's share)
                assert (d == r) if had else (len(r.mixture) == len(d.mixture) + 1), (name, d.name)
    assert not any(m.view == "in_context" for m in stages_for("proactive", base)[0].mixture)


def test_replay_in_every_stage_without_a_weight_is_one_line(root, capsys):
    sets = ["--set", "pbb.replay_all_stages=true", "--set", "pbb.replay_weight=0"]
    assert main(["validate", str(root / "configs/smoke.yaml"), *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "replay_weight" in err[0]


def test_loss_on_target_positions_only_equals_the_full_logits_loss(tok):
    """step_loss runs the output layer only where labels are targets; its loss and every parameter's gradient
    equal those of cross-entropy over the full logits (the path a wrapped model, e.g. under DDP, still takes),
    for a bare model and for a LoRA model."""
    from inweights.config import LoraConfig
    from inweights.models.load import add_lora
    from inweights.train.loop import _decoder_and_head, packed_logits, step_loss

    def full_loss(m, ids, pos, labels):
        logits = packed_logits(m, ids, pos)[:, :-1].float()
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                                 ignore_index=IGNORE, reduction="sum")

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, len(tok), (2, 40), generator=g)
    pos = torch.cat([torch.arange(25), torch.arange(15)])[None].repeat(2, 1)
    labels = ids.clone()
    labels[:, :12] = IGNORE  # a prompt
    labels[:, 25:30] = IGNORE  # the second example's prompt
    labels[1, 35:] = IGNORE  # padding
    for lora in (None, LoraConfig(r=4, alpha=8, target_modules=["all-linear"])):
        model = build_tiny(TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                      vocab_size=320), tok, 0)
        if lora is not None:
            model = add_lora(model, lora)
        assert _decoder_and_head(model) is not None  # the split path is the one under test
        grads = []
        for fn in (step_loss, full_loss):
            model.zero_grad(set_to_none=True)
            loss = fn(model, ids, pos, labels)
            loss.backward()
            grads.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
        (a, ga), (b, gb) = grads
        assert torch.allclose(a, b, rtol=1e-5), (a, b)
        assert len(ga) == len(gb) and all(torch.allclose(x, y, atol=1e-6, rtol=1e-4) for x, y in zip(ga, gb))

    class Wrapped(torch.nn.Module):  # a wrapper (DDP, FSDP) keeps its own forward: the full-logits path
        def __init__(self, inner):  # like DDP: no .config of its own
            super().__init__()
            self.inner = inner

        def forward(self, **kw):
            return self.inner(**kw)

    assert _decoder_and_head(Wrapped(model)) is None
    with torch.no_grad():
        assert torch.allclose(step_loss(Wrapped(model), ids, pos, labels), full_loss(model, ids, pos, labels))


def test_time_shares_count_a_shared_stage_once():
    """A stage two recipes share is trained once and counted once; shares are of wall time x workers."""
    from inweights.regimes.experiment.timing import time_shares

    s1 = {"dir": "s1_abc", "seconds": 100.0}
    results = {"wall_seconds": 200.0, "base": {"eval_seconds": 10.0},
               "recipes": {"proactive": {"stages": [s1, {"dir": "s2_def", "seconds": 50.0}], "eval_seconds": 20.0},
                           "stage1_only": {"stages": [s1], "eval_seconds": 20.0}}}
    t = time_shares(results, workers=2)
    assert (t["train_seconds"], t["eval_seconds"], t["other_seconds"]) == (150.0, 50.0, 200.0)
    assert (t["train_share"], t["eval_share"], t["other_share"]) == (0.375, 0.125, 0.5)
    # resumed: the work was done and timed by an earlier invocation; no share of this one's wall time
    t = time_shares({**results, "wall_seconds": 9.0}, workers=2)
    assert t["reused"] and "train_share" not in t and t["train_seconds"] == 150.0
    assert "eval_work_share" not in t  # no tokens counted: no work line


def test_time_shares_weigh_evaluation_tokens_against_trained_ones():
    """The work: evaluation's tokens (every model's prompts and outputs, each stage's curve points once, a reused
    point at no cost) against training's (each stage once) x forward-pass equivalents; and evaluation's speed per
    token against a training forward pass. The report's line says which lever the share needs."""
    from inweights.regimes.experiment.timing import time_lines, time_shares

    s1 = {"dir": "s1", "seconds": 100.0, "tokens": 1000,
          "curve": [{"step": 0, "seconds": 0.0, "reused": True, "tokens": 40}, {"step": 2, "seconds": 5.0, "tokens": 50}]}
    s2 = {"dir": "s2", "seconds": 50.0, "tokens": 500, "curve": [{"step": 0, "seconds": 5.0, "tokens": 50}]}
    ev = {"eval_seconds": 20.0, "tokens": {"prompt": 300, "generated": 200}}
    results = {"wall_seconds": 200.0, "base": ev, "recipes": {"a": {"stages": [s1], **ev}, "b": {"stages": [s2], **ev}}}
    t = time_shares(results, workers=2)
    assert t["eval_tokens"] == 3 * 500 + 50 + 50 and t["train_tokens"] == 1500 and t["train_passes"] == 3.0
    assert t["eval_work_share"] == round(1600 / (1600 + 4500), 3)
    # evaluation 1,600 tokens in 70 s against training 4,500 forward-equivalent tokens in 145 s (curve time excluded)
    assert t["eval_speed"] == round((1600 / 70) / (4500 / 145), 2) == 0.74
    assert "faster generation would shrink" in "".join(time_lines(t))
    lora = time_shares(results, workers=2, passes=2.0)
    assert lora["eval_work_share"] == round(1600 / (1600 + 3000), 3) and lora["eval_speed"] > 0.8
    text = "".join(time_lines(lora))
    assert text.startswith("Time (2 workers") and "By work, evaluation is 35%" in text and "its size" in text
    # a count missing anywhere (an earlier version's run) or a GRPO stage: no work line
    assert "eval_work_share" not in time_shares({**results, "base": {"eval_seconds": 20.0}}, workers=2)
    grpo = {**results, "recipes": {"a": {"stages": [{**s1, "loss_kind": "grpo"}], **ev}}}
    assert "eval_work_share" not in time_shares(grpo, workers=2)


@pytest.mark.slow
def test_compiled_stage_trains_like_the_eager_one_and_leaves_the_model_eager(tok, tmp_path):
    """train.compile: same losses as the eager path (float tolerance) on a one-layer model, and the decoder
    runs eagerly again after the stage."""
    from inweights.train.loop import _decoder_and_head

    ex = [tokenize_record(tok, _rec(f"What does f return for x = {i}?", f"Answer: {i + 1}"), "completion")
          for i in range(20)]
    losses = []
    for compile_ in (False, True):
        model = build_tiny(TinyConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=320),
                           tok, 0)  # one layer: compilation time grows with the unrolled graph
        # aot_eager: Dynamo's capture and AOT autograd as in training, without inductor's C++ code generation
        # (~50 s cold in CI); inductor's own numbers are checked by benchmarks/mfu.py (53 steps, max diff 7.7e-05)
        cfg = TrainConfig(batch_size=2, max_len=64, lr=1e-3, log_every=1, compile=compile_, compile_backend="aot_eager")
        batches = PackedBatches(lambda rng: ex[rng.randrange(len(ex))], 0, 2, 64, tok.pad_token_id)
        torch.manual_seed(0)
        res = train_stage(model, batches, 3, cfg, tmp_path / str(compile_), save_every=10**9)
        losses.append([h["loss"] for h in res["history"]])
        assert _decoder_and_head(res["model"])[0]._compiled_call_impl is None
    assert losses[0] == pytest.approx(losses[1], rel=1e-3, abs=1e-4)


@pytest.mark.slow
def test_worker_processes_end_with_the_run(root, tmp_path):
    """`workers: 2` trains in worker processes; when the run's process is killed (SIGKILL: nothing of its own code
    runs), its workers end too rather than go on writing into a folder whose lock is free."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "inweights.cli", "run", str(root / "configs/smoke.yaml"), "--out", str(out),
           "--set", "workers=2", "--set", "pbb.stage1_steps=400", "--set", "recipes=[proactive, mixture]"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children() -> list[int]:
        kids = []
        for st in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = st.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == proc.pid:
                kids.append(int(st.parent.name))
        return kids

    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").is_file():
        time.sleep(0.1)
    workers = children()
    assert workers, "no worker process was started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    while time.time() < deadline and any(alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(alive(p) for p in workers), "a worker outlived the run"


def _distill(tok, tmp, steps, hook=None, teacher="adapter_off"):
    """A distill stage on the engine: a LoRA student against itself with the adapter off reading a longer prompt."""
    from peft import LoraConfig, get_peft_model

    from inweights.train.distill import PairObjective

    torch.manual_seed(0)
    model = build_tiny(TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=320), tok, 0)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS[:3]]
    examples = [(ids[1][: 3 + i % 4], ids[0][: 5 + i % 3] + ids[1][: 3 + i % 4], ids[2][: 1 + i % 3]) for i in range(7)]
    obj = PairObjective(examples, 3, 5, tok.pad_token_id, teacher=teacher, beta=1.0)
    cfg = TrainConfig(batch_size=3, grad_accum=1, lr=3e-3, bf16=False, log_every=1)
    return obj, train_stage(model, obj, steps, cfg, tmp, save_every=4, on_step=hook, desc="d", warmup_steps=1)


def test_a_distill_stage_resumes_after_a_kill_to_the_same_weights(tok, tmp_path):
    """The distill objective is an ordinary stage: its epoch order is part of the checkpoint."""
    obj, ref = _distill(tok, tmp_path / "ref", 9)
    assert obj.steps_per_epoch == 3 and obj.epoch == 3 and obj.pos == 0  # 7 examples in batches of 3, 3 epochs

    def kill(step, model):
        if step == 6:
            raise Boom

    with pytest.raises(Boom):
        _distill(tok, tmp_path / "killed", 9, hook=kill)
    state = json.loads((tmp_path / "killed" / "ckpt" / "progress.json").read_text())["data"]
    assert state == {"epoch": 1, "pos": 3}  # mid-epoch: 4 steps = one epoch of 3 batches + one batch
    _, resumed = _distill(tok, tmp_path / "killed", 9)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in ref["history"]]
    for p, q in zip(ref["model"].parameters(), resumed["model"].parameters()):
        assert torch.equal(p, q)
    assert all(h["loss"] > 0 for h in ref["history"])  # the KL of a student that does not read the longer prompt


def test_the_frozen_teacher_is_computed_once_per_example_and_gives_the_same_stage(tok, tmp_path, monkeypatch):
    """The teacher's side of every example is kept after the first step: the same losses and weights (to float
    rounding: the teacher's rows come from other batches) as running the teacher beside the student every step,
    with one teacher pass per chunk of examples instead of one per step."""
    from inweights.train import distill

    calls = []
    real = distill.forward

    def counting(model, ids, mask, hidden):
        calls.append(ids.shape[0])
        return real(model, ids, mask, hidden)

    monkeypatch.setattr(distill, "forward", counting)
    obj, cached = _distill(tok, tmp_path / "cached", 9)
    n_cached = len(calls)
    calls.clear()
    monkeypatch.setattr(distill.PairObjective, "cache_bytes", 0)
    obj2, plain = _distill(tok, tmp_path / "plain", 9)
    assert obj._teacher_cache and obj2._teacher_cache == []
    assert n_cached == 9 + 3 and len(calls) == 9 + 9  # student passes + the teacher's: 3 chunks of 7 examples, or 9 steps
    assert [h["loss"] for h in cached["history"]] == pytest.approx([h["loss"] for h in plain["history"]], rel=1e-4)
    for p, q in zip(cached["model"].parameters(), plain["model"].parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_pair_objective_visits_every_example_once_per_epoch():
    from inweights.train.distill import PairObjective

    obj = PairObjective([([1], [2], [3])] * 7, 3, 0, 0)
    epochs = [[i for _ in range(3) for i in obj.next_batch()] for _ in range(4)]
    assert all(sorted(e) == list(range(7)) for e in epochs) and len({tuple(e) for e in epochs}) > 1
    again = PairObjective([([1], [2], [3])] * 7, 3, 0, 0)
    for _ in range(4):
        again.next_batch()
    replayed = PairObjective([([1], [2], [3])] * 7, 3, 0, 0)
    replayed.load_state_dict(again.state_dict())
    assert [replayed.next_batch() for _ in range(5)] == [again.next_batch() for _ in range(5)]
