"""The documents domain: a user's JSONL of documents and questions as PBB units, no Python."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from inweights.config import load_config
from inweights.domains import biographies
from inweights.domains.documents import SHIPPED, DocumentsDomain, correct, normalise
from inweights.runs import load_units

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "inweights.cli"]


def _cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], check=False, capture_output=True, text=True, cwd=cwd, timeout=timeout)


def _cfg(tmp_path: Path, section: dict, **top) -> Path:
    cfg = {"name": "docs", "seed": 0, "domain": {"documents": section}, **top}
    p = tmp_path / "c.yaml"
    p.write_text(json.dumps(cfg))
    return p


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _rec(name: str, n_q: int = 2, **extra) -> dict:
    qs = [{"question": f"What is fact {i} of {name}?", "answer": f"value {i} {name}"} for i in range(n_q)]
    return {"name": name, "text": " ".join(f"Fact {i} of {name} is value {i} {name}." for i in range(n_q)),
            "questions": qs, **extra}


def test_shipped_biographies_are_the_generator_at_seed_0():
    """The shipped example file is what ``python -m inweights.domains.biographies`` writes (no drift)."""
    want = "".join(json.dumps(r) + "\n" for r in biographies.records(60, 0, 5))
    assert (SHIPPED / "biographies.jsonl").read_text() == want
    recs = biographies.records(60, 0, 5)
    assert len({r["name"] for r in recs}) == 60
    # every rendering states every attribute's value; renderings differ
    for r in recs[:10]:
        for q in r["questions"]:
            assert all(q["answer"] in t for t in r["text"]), (r["name"], q)
        assert len(set(r["text"])) > 1
    assert biographies.records(5, 1) != biographies.records(5, 0)


def test_scoring_kinds():
    assert normalise("The  Savannah, GA!") == "savannah ga"
    assert correct({"score": "exact", "answer": "Savannah, GA"}, " Savannah, GA ")
    assert not correct({"score": "exact", "answer": "Savannah, GA"}, "savannah ga")
    assert correct({"score": "normalised", "answer": "Savannah, GA"}, "savannah ga.")
    assert not correct({"score": "normalised", "answer": "Savannah, GA"}, "Savannah")
    num = {"score": "numeric", "answer": "1,250", "value": 1250.0, "tolerance": 0.5}
    assert correct(num, "about 1250.3 dollars") and not correct(num, "1251") and not correct(num, "none")
    assert correct({"score": "regex", "answer": "v2", "pattern": r"v\d+"}, "v17")
    assert not correct({"score": "regex", "answer": "v2", "pattern": r"v\d+"}, "version 17")
    assert correct({"score": "choice", "answer": "Blue", "choices": ["Red", "Blue"]}, "blue")
    assert not correct({"score": "normalised", "answer": "x"}, None)


def test_file_units_groups_and_splits(tmp_path):
    recs = [_rec(f"Doc{i}", n_q=4) for i in range(6)]
    recs[0]["group"] = "without_io"
    recs[1]["group"] = "with_io"
    recs[1]["questions"][3]["split"] = "train"
    f = _write(tmp_path / "d.jsonl", recs)
    cfg = load_config(_cfg(tmp_path, {"file": str(f), "without_io_fraction": 0.5}))
    assert cfg.domain.name == "documents"  # the one section given names the domain
    dom, units = load_units(cfg, quiet=True)
    by = {u.pointer: u for u in units}
    assert by["Doc0"].group == "without_io" and by["Doc0"].train_inputs == () and by["Doc0"].test_inputs == (0, 1, 2, 3)
    assert by["Doc1"].group == "with_io" and 3 in by["Doc1"].train_inputs and len(by["Doc1"].train_inputs) == 2
    assert sum(u.group == "without_io" for u in units) == 1 + 2  # half of the four without a group
    for u in units:
        if u.group == "with_io":
            assert u.train_inputs and u.test_inputs and not set(u.train_inputs) & set(u.test_inputs)
    u = by["Doc1"]
    x = u.test_inputs[0]
    rng = random.Random(0)
    assert dom.question(u, x, rng) == f"What is fact {x} of Doc1?"
    # chain of thought: the document's sentence that holds the answer, then the answer
    assert dom.steps(u, x) == [f"Fact {x} of Doc1 is value {x} Doc1."]
    assert dom.score(u, x, f"value {x} doc1") and not dom.score(u, x, "value 9 Doc1")
    assert dom.document_text(u, rng) == u.instruction


def test_bad_records_reported_together(tmp_path, capsys):
    lines = [_rec("A"), "not json", {"name": "B", "text": "B is b.", "questions": []}, _rec("C"),
             {**_rec("D"), "questions": [{"question": "q?", "answer": "x", "score": "regex", "pattern": "("}]},
             {**_rec("E"), "questions": [{"question": "q?", "answer": "x", "score": "choice", "choices": ["y", "z"]}]},
             _rec("A"), {**_rec("F"), "colour": 1}, _rec("G"), _rec("H")]
    f = _write(tmp_path / "d.jsonl", lines)
    cfg_path = _cfg(tmp_path, {"file": str(f)})
    out = tmp_path / "out"
    out.mkdir()
    _dom, units = load_units(load_config(cfg_path), out_dir=out, quiet=True)
    assert sorted(u.pointer for u in units) == ["A", "C", "G", "H"]
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    reasons = {r["where"].rsplit(":", 1)[1]: r["reason"] for r in rejected}
    assert set(reasons) == {"2", "3", "5", "6", "7", "8"}
    assert "questions" in reasons["3"] and "pattern" in reasons["5"] and "not among its choices" in reasons["6"]
    assert "repeats" in reasons["7"] and "colour" in reasons["8"]
    # --strict: the first bad record is one line, exit 2, no traceback
    from inweights.cli import main

    assert main(["validate", str(cfg_path), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "d.jsonl:2" in err and len(err.strip().splitlines()) == 1


def test_bad_settings_are_one_line(tmp_path, capsys, monkeypatch):
    from inweights.cli import main

    monkeypatch.chdir(tmp_path)
    for section, needle in (({}, "give file"), ({"file": "nowhere.jsonl"}, "nowhere.jsonl not found")):
        assert main(["validate", str(_cfg(tmp_path, section))]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err and err.count("\n") == 1, err
    f = _write(tmp_path / "one.jsonl", [_rec("A", group="with_io"), _rec("B", group="with_io")])
    assert main(["validate", str(_cfg(tmp_path, {"file": str(f)}))]) == 2
    assert "no without_io document" in capsys.readouterr().err


def test_generated_biographies_section(tmp_path):
    cfg = load_config(_cfg(tmp_path, {"biographies": {"people": 10, "renderings": 3}}))
    dom, units = load_units(cfg, quiet=True)
    assert isinstance(dom, DocumentsDomain) and len(units) == 10
    assert sum(u.group == "without_io" for u in units) == 5
    u = units[0]
    assert len(u.meta["renderings"]) == 3 and 0 < dom.chance(u) < 0.1
    for x in u.test_inputs:
        (sentence,) = dom.steps(u, x)  # the one sentence that states the asked attribute
        assert dom.answer_text(u, x) in sentence


@pytest.fixture(scope="module")
def bios_run(tmp_path_factory):
    """The shipped biographies file through `inweights run` (a micro model, a few steps)."""
    tmp = tmp_path_factory.mktemp("bios")
    cfg = {"name": "bios", "seed": 0,
           "domain": {"documents": {"file": "biographies.jsonl", "max_documents": 8}},
           "model": {"preset": "tiny", "prepared_base": None,
                     "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
                              "vocab_size": 320}},
           "train": {"batch_size": 4, "max_len": 256, "lr": 3e-3, "threads": 1},
           "pbb": {"stage1_steps": 3, "stage2_steps": 2},
           "recipes": ["proactive", "stage2_only"], "eval": {"batch_size": 64, "max_new_tokens": 40}}
    p = tmp / "bios.yaml"
    p.write_text(json.dumps(cfg))
    r = _cli("run", str(p), "--out", str(tmp / "run"), "--quiet", cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp / "run"


@pytest.mark.slow
def test_shipped_example_runs_end_to_end(bios_run):
    """A full PBB report on the user's documents: every cell of base and each recipe, by document group."""
    summary = json.loads((bios_run / "summary.json").read_text())
    report = (bios_run / "report.md").read_text()
    assert "4 with_io and 4 without_io documents" in report and "the text in the prompt" in report
    for name in ("base", "proactive", "stage2_only"):
        cells = summary["rows"][name]["cells"]
        assert cells["without_io/in_weights/direct"]["n"] == 4 * 6
        assert cells["with_io/in_weights/direct"]["n"] == 4 * 3
        assert {"without_io/in_context/cot", "with_io/in_context/direct"} <= set(cells)
        # the ladder from the cells (no listings to read back): a micro model cannot even answer in context
        assert summary["rows"][name]["ladder"]["failed"] == "in_context"
    assert "## Ladder: which rung fails" in report and "- base: **in_context** — text-in-prompt CoT accuracy" in report


@pytest.mark.slow
def test_exported_task_scores_a_saved_model_in_lm_eval(bios_run, tmp_path):
    """`inweights export-task` writes lm-eval tasks that lm-eval loads and runs on a run's saved model; their
    prompts are the probes' own chat turns, and the domain scores them (every reference completion right)."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    from inweights.harness import check_scores, task_name

    out = tmp_path / "tasks"
    cells = ["without_io/in_weights/direct", "with_io/in_context/cot"]
    r = _cli("export-task", str(bios_run / "config.yaml"), "--out", str(out),
             *[a for c in cells for a in ("--cell", c)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert check_scores(out) == (24 + 12, 24 + 12)
    model = bios_run / json.loads((bios_run / "models.json").read_text())["proactive"]
    names = [task_name("bios", c) for c in cells]
    res = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(model), "dtype": "float32"}, tasks=names,
                                  task_manager=TaskManager(include_path=str(out)), apply_chat_template=True,
                                  batch_size=8, device="cpu", limit=5, log_samples=True)
    tok = AutoTokenizer.from_pretrained(model)
    for name in names:
        assert res["results"][name]["sample_len"] == 5 and 0 <= res["results"][name]["acc,none"] <= 1
        for s in res["samples"][name]:
            want = tok.apply_chat_template([{"role": "user", "content": s["doc"]["prompt"]}], tokenize=False,
                                           add_generation_prompt=True)
            assert s["arguments"][0][0] == want
    r = _cli("export-task", str(bios_run / "config.yaml"), "--out", str(out), "--cell", "x/y", cwd=tmp_path)
    assert r.returncode == 2 and "not a probe cell" in r.stderr and "Traceback" not in r.stderr


def test_fresh_units_are_biographies_of_people_no_experiment_has(tmp_path):
    """A preparation's documents: generated people whose first names no experiment draws, questions split in two."""
    f = _write(tmp_path / "d.jsonl", [_rec(f"Doc{i}", n_q=2) for i in range(4)])
    dom, units = load_units(load_config(_cfg(tmp_path, {"file": str(f)})), quiet=True)
    rng = random.Random(0)
    fresh = [dom.fresh_unit(rng, "prepare", {u.pointer for u in units}) for _ in range(50)]
    assert all(u.group == "prepare" and len(u.train_inputs) == 3 and len(u.test_inputs) == 3 for u in fresh)
    assert {u.pointer.split()[0] for u in fresh} <= set(biographies.PREPARE_FIRST)
    assert not set(biographies.PREPARE_FIRST) & set(biographies.FIRST)
    u = fresh[0]
    assert dom.score(u, u.test_inputs[0], dom.answer_text(u, u.test_inputs[0]))


def test_biographies_writer_refuses_impossible_counts(capsys):
    assert biographies.main(["--people", "0"]) == 2
    assert biographies.main(["--people", "99999"]) == 2 and "distinct names" in capsys.readouterr().err
    assert biographies.main(["--people", "3", "--seed", "0"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
