"""The MBPP domain (issue 19's proof that a new domain is one file): pointer = problem statement, document = gold
solution, execution = the values of the test calls, computed by the gold solution in the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inweights import views
from inweights.cli import main
from inweights.config import load_config, validate
from inweights.core import rejects
from inweights.domains import make_domain

ROOT = Path(__file__).resolve().parent.parent

TASKS = [
    {"task_id": 1, "text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b",
     "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]},
    {"task_id": 2, "text": "Write a function to check if a number is even.",
     "code": "def is_even(n):\n    return n % 2 == 0",
     "test_list": ["assert is_even(2) == True", "assert is_even(3) == False", "assert is_even(0) == True"]},
    # a set's text follows string hashing: those values are dropped, and with them this task (one value left)
    {"task_id": 3, "text": "Write a function to find the common letters.",
     "code": "def common(a, b):\n    return set(a) & set(b)",
     "test_list": ["assert common('ab', 'bc') == {'b'}", "assert common('xy', 'yz') == {'y'}",
                   "assert len(common('a', 'a')) == 1"]},
    # a gold solution that fails its own tests teaches nothing: dropped
    {"task_id": 4, "text": "Write a function to double a number.", "code": "def double(x):\n    return x * 3",
     "test_list": ["assert double(1) == 2", "assert double(2) == 4"]},
    {"task_id": 5, "text": "Write a function to reverse a list.", "code": "def rev(xs):\n    return xs[::-1]",
     "test_list": ["assert rev([1, 2]) == [2, 1]", "assert rev([]) == []", "assert rev([3]) == [3]"]},
]


@pytest.fixture
def mbpp_file(tmp_path):
    p = tmp_path / "mbpp.jsonl"
    p.write_text("".join(json.dumps(t) + "\n" for t in TASKS))
    return p


def test_units_are_problems_with_values_computed_in_the_sandbox(mbpp_file):
    cfg = validate({"name": "m", "domain": {"name": "mbpp", "mbpp": {"path": str(mbpp_file), "workers": 2}},
                    "model": {"prepared_base": None}})
    domain = make_domain(cfg)
    with rejects.collecting():
        units = domain.build()
    by_id = {u.id: u for u in units}
    assert sorted(by_id) == ["mbpp/1", "mbpp/2", "mbpp/5"]
    add = by_id["mbpp/1"]
    assert add.pointer == "Write a function to add two numbers." and add.instruction.startswith("def add(a, b):")
    assert len(add.train_inputs) == 2 and len(add.test_inputs) == 1
    assert {x: domain.answer_text(add, x) for x in add.train_inputs + add.test_inputs} == {
        "add(1, 2)": "3", "add(-1, 1)": "0", "add(2, 2)": "4"}
    assert domain.answer_text(by_id["mbpp/5"], "rev([1, 2])") == "[2, 1]"
    assert domain.score(by_id["mbpp/5"], "rev([1, 2])", "[2,1]") and not domain.score(add, "add(1, 2)", "3.0")
    assert domain.chance(by_id["mbpp/2"]) == 0.5 and domain.chance(add) == 0.0
    # the views: the document is the gold solution under the statement; a question never shows the code
    rec = views.execution(domain, add, "add(1, 2)", "direct", __import__("random").Random(0))
    assert "def add" not in rec["prompt"][0]["content"] and "add(1, 2)" in rec["prompt"][0]["content"]
    assert rec["completion"][0]["content"] == "Answer: 3"
    assert {u.group for u in units} == {"with_io", "without_io"}


def test_a_pbb_run_on_mbpp_end_to_end(mbpp_file, tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text(f"""
name: mbpp_smoke
domain:
  name: mbpp
  mbpp: {{path: {mbpp_file}, workers: 2}}
model:
  preset: tiny
  tiny: {{hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, vocab_size: 320}}
train: {{batch_size: 4, max_len: 256, lr: 3.0e-3, log_every: 2, threads: 1}}
pbb: {{stage1_steps: 2, stage2_steps: 2}}
recipes: [proactive]
eval: {{batch_size: 32, max_new_tokens: 8, formats: [direct], eval_base: false}}
""")
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["counts"].values()) == 3
    assert "problems" in (out / "report.md").read_text()


def test_the_gpu_config_validates():
    cfg = load_config(ROOT / "configs" / "gpu" / "pbb_mbpp_qwen2.5-0.5b_full.yaml")
    assert cfg.domain.name == "mbpp" and cfg.eval.formats == ["direct"]


def test_a_missing_path_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("name: m\ndomain: {name: mbpp}\nmodel: {prepared_base: null}\nrecipes: [proactive]\n")
    assert main(["validate", str(cfg)]) == 2
    assert "domain.mbpp.path: give an MBPP-format JSONL" in capsys.readouterr().err
