import hashlib
import json

import pytest

from inweights.cli import main
from inweights.config import ProgramsConfig
from inweights.domains.programs import ProgramsDomain, check_source

SMALL = ["domain.programs.n_programs=12", "domain.programs.families=[arith, cipher]"]


def _export(tmp_path, name, extra=()):
    out = tmp_path / name
    assert main(["data", "programs", "--out", str(out), *[a for s in SMALL + list(extra) for a in ("--set", s)]]) == 0
    return out


def test_export_is_deterministic_and_manifest_is_true(tmp_path):
    a, b = _export(tmp_path, "a"), _export(tmp_path, "b")
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    manifest = json.loads((a / "manifest.json").read_text())
    for name, info in manifest["files"].items():
        data = (a / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"]
        assert data.count(b"\n") == info["records"]
    assert manifest["counts"] == {"with_io": 9, "without_io": 3}
    c = _export(tmp_path, "c", ["seed=1"])
    assert (c / "units.jsonl").read_bytes() != (a / "units.jsonl").read_bytes()


def test_export_reads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    out = _export(tmp_path, "d")
    ds = datasets.load_dataset("json", data_files=str(out / "train" / "exec_with_io.jsonl"), split="train")
    assert {"messages", "prompt", "completion"} <= set(ds.column_names)
    assert ds[0]["messages"][0]["role"] == "user" and ds[0]["completion"][0]["role"] == "assistant"


def test_export_refuses_non_empty_out(tmp_path, capsys):
    out = _export(tmp_path, "e")
    assert main(["data", "programs", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_units_file_roundtrip_and_corrupt_line(tmp_path, capsys):
    out = _export(tmp_path, "f")
    units = out / "units.jsonl"
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"name: x\ndomain: {{data_file: {units}}}\nmodel: {{prepared_base: null}}\n")
    assert main(["validate", str(cfg)]) == 0
    lines = units.read_text().splitlines()
    lines[3] = lines[3][:-7]  # a truncated JSON line
    units.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["validate", str(cfg)]) == 0  # the loader policy: the others are kept, the bad line reported
    err = capsys.readouterr().err
    assert "1 record(s) rejected" in err and "units.jsonl:4: not valid JSON" in err
    assert main(["validate", str(cfg), "--strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert "units.jsonl:4: not valid JSON" in err and "data.strict is on" in err and err.count("\n") == 0
    assert main(["run", str(cfg), "--strict", "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


def test_units_file_rejects_code_outside_the_grammar(tmp_path, capsys):
    rec = {"id": "u", "pointer": "evil", "group": "with_io", "train_inputs": [1], "test_inputs": [2],
           "source": "def evil(x):\n    a = __import__('os').system('echo hi')\n    return a"}
    f = tmp_path / "units.jsonl"
    f.write_text(json.dumps(rec) + "\n")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"name: x\ndomain: {{data_file: {f}}}\nmodel: {{prepared_base: null}}\n")
    assert main(["validate", str(cfg)]) == 2
    assert "outside the generator's grammar" in capsys.readouterr().err


def test_generated_programs_pass_the_grammar_check():
    d = ProgramsDomain(ProgramsConfig(families=["arith", "cipher"], n_programs=200, ops=["+", "-", "*"]), 3)
    for u in d.build():
        assert check_source(u.instruction)[0] == u.pointer
