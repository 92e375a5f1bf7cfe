"""ILF: feedback providers (tests, people's files, an OpenAI-compatible endpoint) and the recipe end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from inweights.core.errors import UserError
from inweights.feedback import OpenAIFeedback, TestsFeedback, describe_verdict, read_feedback_file
from inweights.regimes.ilf.tasks import refine_prompt
from inweights.sandbox import run_program

SMOKE = {
    "name": "ilf_smoke", "seed": 0,
    "domain": {"name": "coding", "coding": {"n_prepare": 40, "n_refine": 8, "n_train": 8, "n_test": 4, "n_tests": 2}},
    "model": {"preset": "tiny", "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2,
                                         "intermediate_size": 64, "vocab_size": 320}},
    "train": {"batch_size": 4, "max_len": 256, "lr": 3.0e-3, "log_every": 2, "threads": 1},
    "ilf": {"n_samples": 2, "refine_samples": 2, "pretrain_steps": 3, "refiner_steps": 2, "policy_steps": 2,
            "eval_samples": 2, "ks": [1, 2], "max_new_tokens": 24, "workers": 2, "val_tasks": 2,
            "check_tasks": 2},
    "eval": {"batch_size": 64},
}


def _request(code, tests):
    v = run_program(code, tests).to_dict()
    return {"task_id": "gen/f", "text": "Return x plus one.", "tests": tests, "program": code, "verdict": v}


# ------------------------------------------------------------------------------------------ providers
@pytest.mark.slow
def test_tests_feedback_says_what_was_observed():
    wrong = _request("def f(x):\n    return x + 2\n", ["assert f(1) == 2", "assert f(3) == 4"])
    assert TestsFeedback()([wrong]) == [("The code is wrong: f(1) returned 3, but it should return 2. "
                                         "0 of 2 tests passed.")]
    err = _request("def f(x):\n    return x + y\n", ["assert f(1) == 2"])
    assert describe_verdict(err["verdict"]) == ("The code raises NameError in the test `assert f(1) == 2`: "
                                                "name 'y' is not defined.")
    syn = _request("def f(x) return x", ["assert f(1) == 2"])
    assert describe_verdict(syn["verdict"]).startswith("The code raises SyntaxError when it is defined")
    loop = _request("def f(x):\n    while True:\n        pass\n", ["assert f(1) == 2"])
    assert "does not finish" in describe_verdict(loop["verdict"])


def test_feedback_file_records_are_checked(tmp_path):
    p = tmp_path / "fb.jsonl"
    p.write_text(json.dumps({"task_id": "gen/f", "program": "x", "feedback": "Add one, not two."}) + "\n"
                 + json.dumps({"task_id": "gen/f", "program": "y"}) + "\n")
    with pytest.raises(UserError, match=r"fb.jsonl:2: field 'feedback' must be a string"):
        read_feedback_file(p)  # outside a loader policy: the first bad record is the error
    from inweights.core import rejects

    with rejects.collecting() as found:  # under the policy: the good record kept, the bad one reported
        assert list(read_feedback_file(p).values()) == ["Add one, not two."]
    assert [(i.where.rsplit("/", 1)[1], i.action) for i in found] == [("fb.jsonl:2", "rejected")]
    p.write_text(json.dumps({"task_id": "gen/zzz", "program": "x", "feedback": "f"}) + "\n")
    with pytest.raises(UserError, match=r"fb.jsonl:1: task_id gen/zzz is not one of this run's tasks"):
        read_feedback_file(p, {"gen/f"})
    p.write_text("{oops\n")
    with pytest.raises(UserError, match=r"fb.jsonl:1: not valid JSON"):
        read_feedback_file(p)


class _Stub(BaseHTTPRequestHandler):
    seen: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        flaky = body["model"] == "flaky" and sum(s["body"]["model"] == "flaky" for s in _Stub.seen) == 1
        if body["model"] == "broken" or flaky:  # broken: always 500; flaky: one rate limit, then answers
            self.send_response(429 if flaky else 500)
            self.send_header("retry-after-ms", "1")  # the client's backoff honours it: a fast test
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": " Add one instead of two. "}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Stub.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_compatible_endpoint(stub_server, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "sk-test")
    req = _request("def f(x):\n    return x + 2\n", ["assert f(1) == 2"])
    out = OpenAIFeedback(stub_server, "stub-model", api_key_env="STUB_KEY", timeout=5)([req])
    assert out == ["Add one instead of two."]
    (call,) = _Stub.seen
    assert call["path"] == "/v1/chat/completions" and call["auth"] == "Bearer sk-test"
    assert call["body"]["model"] == "stub-model" and call["body"]["messages"][0]["role"] == "system"
    assert "f(1) returned 3" in call["body"]["messages"][1]["content"]
    with pytest.raises(UserError, match="HTTP 500"):
        OpenAIFeedback(stub_server, "broken", timeout=5, max_retries=2)([req])
    assert sum(s["body"]["model"] == "broken" for s in _Stub.seen) == 3  # the first try and two retries
    with pytest.raises(UserError, match="unreachable"):
        OpenAIFeedback("http://127.0.0.1:9/v1", "m", timeout=2, max_retries=0)([req])


def test_feedback_endpoint_retries_and_caches(stub_server, tmp_path):
    """A rate limit is retried, not fatal; every answer is cached in the run folder as it arrives, so a resumed
    run (a new provider on the same cache) asks for nothing twice."""
    req = _request("def f(x):\n    return x + 2\n", ["assert f(1) == 2"])
    other = _request("def f(x):\n    return x * 2\n", ["assert f(1) == 2"])
    cache = tmp_path / "feedback" / "openai_cache.jsonl"
    assert OpenAIFeedback(stub_server, "flaky", timeout=5, cache=cache)([req]) == ["Add one instead of two."]
    assert [s["body"]["model"] for s in _Stub.seen] == ["flaky", "flaky"]  # 429, then the answer
    again = OpenAIFeedback(stub_server, "flaky", timeout=5, cache=cache)
    assert again([req, other]) == ["Add one instead of two."] * 2
    assert len(_Stub.seen) == 3  # only the new program was asked
    assert len(cache.read_text().splitlines()) == 2


def test_refine_prompt_layout():
    from inweights.domains.coding import generated_tasks

    t = generated_tasks(1, 0, "train")[0]
    text = refine_prompt(t, "def f(): pass", "It returns nothing.")
    assert text.index("OLD CODE:\n") < text.index("FEEDBACK:\nIt returns nothing.") < text.index("REFINEMENT:")
    assert "FEEDBACK" not in refine_prompt(t, "def f(): pass", None)


# ------------------------------------------------------------------------------------------ the recipe
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "inweights.cli", *args], check=False, capture_output=True,
                          text=True, timeout=600)


def _cli_here(*args):
    """The CLI in this process (no interpreter start-up and imports per call: ~7 s each on the CI machine)."""
    import contextlib
    import io

    from inweights.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())


@pytest.mark.slow
def test_ilf_run_end_to_end_is_deterministic(tmp_path, monkeypatch):
    from inweights import models
    from inweights.train.loop import get_accelerator

    built = []  # every model the run loads: on the accelerator's device, as the stage engine places them
    real = models.load_model

    def recording(*a, **k):
        model, tok = real(*a, **k)
        built.append(model)
        return model, tok

    monkeypatch.setattr(models, "load_model", recording)
    cfg = tmp_path / "ilf.yaml"
    cfg.write_text(yaml.safe_dump(SMOKE))
    for out in ("a", "b"):
        proc = _cli_here("run", str(cfg), "--out", str(tmp_path / out))
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(built) >= 8  # per run: the starting policy, the refiners, the fine-tuned policies
    assert {next(m.parameters()).device for m in built} == {get_accelerator().device}
    a, b = (json.loads((tmp_path / o / "summary.json").read_text()) for o in "ab")
    assert set(a["recipes"]) == {"zero_shot", "sft_gold", "sft_refinements_no_feedback", "ilf"}
    for r in a["recipes"]:
        assert a["recipes"][r]["pass@1"] == b["recipes"][r]["pass@1"]
        assert a["recipes"][r]["samples"] == 4 * 2
    for step in ("policy_r1", "ilf_r1_refinements", "refine_pool_feedback", "eval_ilf"):
        sa, sb = (json.loads((tmp_path / o / "steps" / f"{step}.json").read_text())["record"] for o in "ab")
        sa.pop("seconds", None), sb.pop("seconds", None)
        assert sa == sb, step
    report = (tmp_path / "a" / "report.md").read_text()
    assert "| ilf | 1 | 6 |" in report and "pass@2" in report
    # the starting policy's loss on gold SFT's programs (a random-init micro model: near ln(vocab))
    assert a["policy_loss"] == b["policy_loss"] and a["policy_loss"]["tasks"] == a["sft_gold_tasks"]
    assert 1 < a["policy_loss"]["gold"] < 2 * math.log(320)
    # the feedback check: held-out refine tasks, three conditions, the shuffled feedback always another task's
    check = a["feedback_check"]
    assert set(check) >= {"real", "shuffled", "none", "real_minus_shuffled", "real_minus_none", "informative"}
    held = json.loads((tmp_path / "a" / "tasks.json").read_text())["refine"][-2:]
    fb = json.loads((tmp_path / "a" / "steps" / "refine_pool_feedback.json").read_text())["record"]
    own = {}
    for r, f in zip(fb["requests"], fb["feedback"]):
        own.setdefault(r["task_id"], set()).add(f)
    step = json.loads((tmp_path / "a" / "steps" / "feedback_check.json").read_text())["record"]
    items = [(r["task_id"], f) for r, f in zip(fb["requests"], fb["feedback"]) if r["task_id"] in held]
    assert step["programs"] == len(items) and len(step["conditions"]["real"]) == len(items)
    assert all(g in set().union(*(own[t] for t in held if t != tid)) for (tid, _), g in zip(items, step["shuffled_feedback"]))
    assert "Does the feedback carry information?" in report and "## Fine-tuning" in report
    # what each refinement did, per condition, and the prompts' lengths (the feedback makes them longer)
    assert set(check["outcomes"]) == {"real", "shuffled", "none"}
    assert all(abs(sum(sh.values()) - 1) < 1e-9 for sh in check["outcomes"].values())
    assert all(abs(check["outcomes"][c]["passes"] - check[c]["rate"]) < 1e-9 for c in ("real", "shuffled", "none"))
    assert check["prompt_tokens"]["real"]["mean"] > check["prompt_tokens"]["none"]["mean"] > 0
    assert "| real | " in report and "broke passing" in report
    # the rates by how the old program failed add up to the overall ones
    parts = check["by_failure"]
    assert sum(p["programs"] for p in parts.values()) == check["programs"] and "how the old program failed" in report
    for c in ("real", "shuffled", "none"):
        assert abs(sum(p[c] * p["programs"] for p in parts.values()) / check["programs"] - check[c]["rate"]) < 1e-9
    # every policy fine-tune measured the validation tasks from its start; none trained on them or on check tasks
    tunes = a["finetunes"]
    policies = [n for n in tunes if n not in ("policy_base", "refiner_feedback", "refiner_no_feedback")]
    assert "sft_gold" in policies and all(tunes[n]["curve"][0]["step"] == 0 for n in policies)
    assert "curve" not in tunes["refiner_feedback"] and "curve" not in tunes["policy_base"]
    val = json.loads((tmp_path / "a" / "tasks.json").read_text())["train"][-2:]
    sampled = {t["task_id"] for t in json.loads((tmp_path / "a" / "steps" / "policy_r1.json").read_text())["record"]["tasks"]}
    assert sampled and not sampled & set(val)
    assert json.loads((tmp_path / "a" / "status.json").read_text())["state"] == "finished"


def test_coding_prepared_base_is_built_once_and_every_run_starts_from_it(tmp_path):
    import copy

    (tmp_path / "configs").mkdir()
    prep = copy.deepcopy(SMOKE)
    prep.update(name="prep_coding", kind="prepare", prepare={"max_steps": 3, "eval_programs": 4, "gate": 0.5})
    prep["model"]["prepared_base"] = None
    (tmp_path / "configs" / "prep.yaml").write_text(yaml.safe_dump(prep))
    proc = _cli_here("prepare", str(tmp_path / "configs" / "prep.yaml"))
    assert proc.returncode == 1 and "fresh_tasks pass@1 (greedy) 0.0% (gate 50%, NOT passed)" in proc.stdout
    rec = json.loads((tmp_path / "prepared" / "prep_coding" / "prepare.json").read_text())
    assert rec["domain"] == "coding" and rec["steps"] == 3 and rec["eval_programs"] == 4 and rec["prepare_tasks"] == 40
    exp = copy.deepcopy(SMOKE)
    exp["model"]["prepared_base"] = "configs/prep.yaml"
    exp["ilf"]["pretrain_steps"] = 0
    exp["recipes"] = ["zero_shot"]
    (tmp_path / "configs" / "ilf.yaml").write_text(yaml.safe_dump(exp))
    proc = _cli_here("run", str(tmp_path / "configs" / "ilf.yaml"), "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["prepared_base"]["weights_sha256"] == rec["weights_sha256"]
    assert not (tmp_path / "run" / "models" / "policy_base").exists()  # nothing trained again
    # zero-shot with the feedback check on: both refiners and the check (the refiner rung alone), no rounds
    assert "feedback_check" in summary and not summary["rounds"]
    assert {d.name for d in (tmp_path / "run" / "models").iterdir()} == {"refiner_feedback", "refiner_no_feedback"}
    assert "Starting policy: the prepared base `prep_coding` (3 steps" in (tmp_path / "run" / "report.md").read_text()
    # a config that asks for both a prepared starting policy and one trained in the run is refused in one line
    exp["ilf"]["pretrain_steps"] = 5
    (tmp_path / "configs" / "ilf.yaml").write_text(yaml.safe_dump(exp))
    proc = _cli("validate", str(tmp_path / "configs" / "ilf.yaml"))
    assert proc.returncode == 2 and "set one of them" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_bugs_change_one_part_and_the_edge_ones_only_feedback_can_fix():
    import random

    from inweights.domains.coding import generated_code, generated_tasks
    from inweights.domains.coding_bugs import KINDS, bug_kinds, buggy, buggy_spec

    rng = random.Random(0)
    tasks = generated_tasks(60, 0, "prepare", 3, family="edge")
    seen: dict[str, int] = {}
    for t in tasks:
        spec = t.meta["spec"]
        assert generated_code(spec, t.entry_point) == t.gold  # the spec renders its own gold program
        for kind in bug_kinds(spec):
            wrong = buggy_spec(spec, kind, rng)
            assert wrong != spec and sum(wrong.get(k) != spec.get(k) for k in {*wrong, *spec}) <= 2, kind
        kind, code = buggy(t, rng)
        assert code != t.gold and kind in KINDS
        seen[kind] = seen.get(kind, 0) + 1
        if kind == "edge_missed":  # the lists form: the aggregate's own empty value, no edge branch
            assert "if not ys" not in code
    assert set(seen) == set(KINDS)
    assert buggy(tasks[0], rng, kinds=("nonexistent",)) is None
    # the mis-copied name, only when asked for: the gold body under a near name of the same syllables
    from inweights.domains.coding_bugs import ALL_KINDS

    named = [b for t in tasks if (b := buggy(t, rng, ALL_KINDS))[0] == "name"]
    assert named and all("name" != buggy(t, random.Random(1))[0] for t in tasks)
    for t in tasks[:20]:
        kind, code = buggy(t, rng, ("name",))
        first, rest = code.split("\n", 1)
        wrong = first[4:first.index("(")]
        assert kind == "name" and wrong != t.entry_point and len(wrong) == len(t.entry_point)
        syl = [(wrong[i:i + 2], t.entry_point[i:i + 2]) for i in range(0, len(wrong), 2)]
        assert rest == t.gold.split("\n", 1)[1] and 1 <= sum(a != b for a, b in syl) <= 2
    fb = TestsFeedback()([_request(code, list(t.judged_tests))])[0]
    assert "NameError" in fb and f"name '{t.entry_point}' is not defined" in fb
    from pydantic import ValidationError

    from inweights.regimes.ilf.config import ILFConfig

    with pytest.raises(ValidationError, match="refiner_bug_kinds: unknown typo"):
        ILFConfig(refiner_bug_kinds=["name", "typo"])
    # verdicts in the sandbox: an edge bug fails only the hidden test, whose feedback says the wanted value
    t = next(t for t in tasks if t.meta["spec"]["edge"] == -1)
    code = generated_code(buggy_spec(t.meta["spec"], "edge_answer", random.Random(1)), t.entry_point)
    from inweights.sandbox import run_many

    v = run_many([t.sandboxed(code)])[0].to_dict()
    assert v["status"] == "failed" and v["tests_passed"] == 3
    assert describe_verdict(v).endswith("but it should return -1. 3 of 4 tests passed.")


def test_bad_refiner_base_configs_are_one_line_and_write_nothing(tmp_path):
    import copy

    base = copy.deepcopy(SMOKE)
    base.update(name="r", kind="prepare", prepare={"max_steps": 2, "eval_programs": 4, "init_from": "configs/x.yaml"})
    base["ilf"] = {**base["ilf"], "prepare_target": "refiner"}
    cases = [({}, "prepare.init_from: prepare config not found"),
             ({"prepare": {"max_steps": 2, "eval_programs": 4}}, "set prepare.init_from"),
             ({"prepare": {**base["prepare"], "eval_programs": 1}}, "prepare.eval_programs >= 2"),
             ({"ilf": {**base["ilf"], "feedback": {"provider": "file"}}}, "ilf.feedback.provider tests or openai")]
    for i, (change, want) in enumerate(cases):
        cfg = tmp_path / f"c{i}.yaml"
        cfg.write_text(yaml.safe_dump({**base, **change}))
        out = tmp_path / f"out{i}"
        proc = _cli_here("prepare", str(cfg), "--out", str(out))
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(err) == 1 and want in err[0], (i, proc.stderr)
        assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_refiner_base_is_prepared_once_and_both_refiners_start_from_it(tmp_path):
    import copy

    (tmp_path / "configs").mkdir()
    prep = copy.deepcopy(SMOKE)
    prep.update(name="prep_coding", kind="prepare", prepare={"max_steps": 2, "eval_programs": 4, "gate": 0.5})
    (tmp_path / "configs" / "prep.yaml").write_text(yaml.safe_dump(prep))
    assert _cli_here("prepare", str(tmp_path / "configs" / "prep.yaml")).returncode == 1
    ref = copy.deepcopy(prep)
    ref.update(name="prep_refiner", prepare={"max_steps": 3, "eval_programs": 6, "gate": 0.5, "pool_units": 12,
                                             "init_from": "configs/prep.yaml"})
    ref["domain"]["coding"]["family"] = "edge"
    ref["ilf"] = {**ref["ilf"], "prepare_target": "refiner", "replay": 0.3}
    (tmp_path / "configs" / "ref.yaml").write_text(yaml.safe_dump(ref))
    proc = _cli_here("prepare", str(tmp_path / "configs" / "ref.yaml"))
    assert proc.returncode == 1 and "refine_real refinement pass@1 (greedy), real feedback" in proc.stdout, proc.stderr
    rec = json.loads((tmp_path / "prepared" / "prep_refiner" / "prepare.json").read_text())
    assert rec["init_from"] == "prep_coding" and rec["steps"] == 3 and rec["pool_triples"] == 12
    assert rec["eval_programs"] == 6 and {"with_feedback", "shuffled_feedback", "without_feedback"} <= set(rec)
    assert sum(k["programs"] for k in rec["by_kind"].values()) == 6 and rec["family"] == "edge"
    exp = copy.deepcopy(SMOKE)
    exp.update(recipes=["zero_shot", "ilf"])
    exp["model"]["prepared_base"] = "configs/prep.yaml"
    exp["ilf"] = {**exp["ilf"], "pretrain_steps": 0, "refiner_base": "configs/ref.yaml"}
    (tmp_path / "configs" / "ilf.yaml").write_text(yaml.safe_dump(exp))
    proc = _cli_here("run", str(tmp_path / "configs" / "ilf.yaml"), "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["refiner_base"]["weights_sha256"] == rec["weights_sha256"]
    assert {"real", "none", "outcomes"} <= set(summary["feedback_check"])
    assert "Refiners' start: the refiner base `prep_refiner` (3 steps on edge-family" in (tmp_path / "run" / "report.md").read_text()
    # each base where the other belongs is refused in one line, before any work
    for key, val, want in ((("ilf", "refiner_base"), "configs/prep.yaml", "ilf.refiner_base: "),
                           (("model", "prepared_base"), "configs/ref.yaml", "name it in ilf.refiner_base")):
        bad = copy.deepcopy(exp)
        bad[key[0]][key[1]] = val
        (tmp_path / "configs" / "bad.yaml").write_text(yaml.safe_dump(bad))
        proc = _cli_here("run", str(tmp_path / "configs" / "bad.yaml"), "--out", str(tmp_path / "bad"))
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(err) == 1 and want in err[0], proc.stderr
        assert not (tmp_path / "bad").exists()
    # refiner_steps 0: both refiners are the base as it is (nothing trained), the check still runs; without a
    # base it is refused
    exp.update(recipes=["zero_shot"])
    exp["ilf"]["refiner_steps"] = 0
    (tmp_path / "configs" / "ilf0.yaml").write_text(yaml.safe_dump(exp))
    proc = _cli_here("run", str(tmp_path / "configs" / "ilf0.yaml"), "--out", str(tmp_path / "run0"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "run0" / "summary.json").read_text())
    assert "feedback_check" in summary and not list((tmp_path / "run0").glob("models/refiner_*"))
    del exp["ilf"]["refiner_base"]
    (tmp_path / "configs" / "ilf0.yaml").write_text(yaml.safe_dump(exp))
    proc = _cli("validate", str(tmp_path / "configs" / "ilf0.yaml"))
    assert proc.returncode == 2 and "refiner_steps 0" in proc.stderr and "Traceback" not in proc.stderr


def test_human_feedback_round_trip(tmp_path):
    cfg = tmp_path / "ilf.yaml"
    cfg.write_text(yaml.safe_dump({**SMOKE, "recipes": ["zero_shot", "ilf"],
                                   "ilf": {**SMOKE["ilf"], "feedback": {"provider": "file"}}}))
    run = tmp_path / "run"
    for expected_step in ("refine_pool_feedback", "ilf_r1_feedback"):
        proc = _cli_here("run", str(cfg), "--out", str(run), "--resume")
        assert proc.returncode == 3, proc.stderr[-2000:]
        assert "waiting for feedback" in proc.stdout
        assert json.loads((run / "status.json").read_text())["state"] == "waiting_for_feedback"
        todo = tmp_path / f"{expected_step}.jsonl"
        assert _cli_here("feedback", "export", str(run), "--out", str(todo)).returncode == 0
        recs = [json.loads(ln) for ln in todo.read_text().splitlines()]
        assert recs and all(r["step"] == expected_step and r["feedback"] == "" for r in recs)
        # a record for a program the run never asked about is refused, naming it
        stray = tmp_path / "stray.jsonl"
        stray.write_text(json.dumps({**recs[0], "program": "print(1)", "feedback": "x"}) + "\n")
        bad = _cli_here("feedback", "import", str(stray), "--run", str(run))
        assert bad.returncode == 2 and "is not one the run asked feedback for" in bad.stderr
        todo.write_text("".join(json.dumps({**r, "feedback": f"Person's note {i}."}) + "\n"
                                for i, r in enumerate(recs)))
        assert _cli_here("feedback", "import", str(todo), "--run", str(run)).returncode == 0
    proc = _cli_here("run", str(cfg), "--out", str(run), "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    fb = json.loads((run / "steps" / "ilf_r1_feedback.json").read_text())["record"]["feedback"]
    assert fb and all(f.startswith("Person's note") for f in fb)


@pytest.mark.slow
def test_bad_coding_inputs_are_one_line(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"text": "t", "code": "x", "task_id": 1}\n')
    cfg = tmp_path / "ilf.yaml"
    cfg.write_text(yaml.safe_dump({**SMOKE, "domain": {"name": "coding", "coding": {"source": "mbpp",
                                                                                     "mbpp_path": str(tasks)}}}))
    proc = _cli("run", str(cfg), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"inweights: error: {tasks}: no record could be loaded (1 rejected; first {tasks}:1: missing field 'test_list')")
    assert not (tmp_path / "r").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SMOKE, "ilf": {"ks": [1, 50], "eval_samples": 10}}))
    proc = _cli("validate", str(bad))
    assert proc.returncode == 2 and "every k in ks must be <= eval_samples" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump({**SMOKE, "ilf": {**SMOKE["ilf"], "val_tasks": 8}}))
    proc = _cli("run", str(big), "--out", str(tmp_path / "r2"))
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "inweights: error: ilf.val_tasks (8) must be fewer than the train pool's 8 tasks")
    assert not (tmp_path / "r2").exists()
    loop = tmp_path / "loop.yaml"  # loop-style gold exists only for generated tasks: refused before any work
    loop.write_text(yaml.safe_dump({**SMOKE, "domain": {"name": "coding", "coding": {"source": "humaneval"}},
                                    "ilf": {**SMOKE["ilf"], "gold_style": "loop"}}))
    proc = _cli("run", str(loop), "--out", str(tmp_path / "r3"))
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "inweights: error: ilf.gold_style loop rewrites generated tasks' gold; domain.coding.source is humaneval "
        "(use gold_style: family)")
    assert not (tmp_path / "r3").exists()
    (tmp_path / "norun").mkdir()
    proc = _cli("feedback", "export", str(tmp_path / "norun"), "--out", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2 and "not an ILF run directory" in proc.stderr


# ------------------------------------------------------------------------------------------ the edge family
def test_edge_wide_family_draws_nine_answers_and_its_bugs_stay_in_them():
    import random

    from inweights.domains.coding import EDGE_SETS, generated_tasks, spec_key
    from inweights.domains.coding_bugs import buggy

    wide = generated_tasks(60, 0, "train", 3, family="edge_wide")
    narrow = generated_tasks(60, 0, "train", 3, family="edge")
    assert {t.meta["spec"]["edge"] for t in wide} == set(EDGE_SETS["edge_wide"])
    assert spec_key(wide[0].meta["spec"]) == spec_key(narrow[0].meta["spec"])  # the edge answer aside, one function
    assert all("edge_set" not in t.meta["spec"] for t in narrow)  # the three-answer family's data is unchanged
    rng = random.Random(0)
    for t in wide[:20]:
        assert t.hidden_tests[0].endswith(f"== {t.meta['spec']['edge']!r}")
        assert run_program(t.gold, list(t.judged_tests)).status == "passed"
        kind, code = buggy(t, rng, ("edge_answer",))
        answer = code.split("return ", 1)[1].split("\n", 1)[0]
        assert kind == "edge_answer" and answer != repr(t.meta["spec"]["edge"])
        assert answer in {repr(a) for a in EDGE_SETS["edge_wide"]}
        assert run_program(code, list(t.tests)).status == "passed"  # only the hidden test can tell
        assert run_program(code, list(t.judged_tests)).status == "failed"
    from inweights.domains.coding import EDGE_RULE

    rule = generated_tasks(40, 0, "train", 3, family="edge_rule")  # one convention: the answer by aggregate
    assert all(t.meta["spec"]["edge"] == EDGE_RULE[t.meta["spec"]["agg"]] for t in rule)
    assert {t.meta["spec"]["agg"] for t in rule} == set(EDGE_RULE) and set(EDGE_RULE.values()) <= set(EDGE_SETS["edge_wide"])
    assert all(run_program(t.gold, list(t.judged_tests)).status == "passed" for t in rule[:10])


def test_edge_family_hides_its_edge_case_and_the_feedback_reveals_it():
    from inweights.domains.coding import EDGE_ANSWERS, generated_tasks, prompt

    tasks = generated_tasks(30, 0, "train", 3, family="edge")
    assert {t.meta["spec"]["edge"] for t in tasks} == set(EDGE_ANSWERS)  # each task its own answer
    for t in tasks[:8]:
        (hidden,) = t.hidden_tests
        assert hidden not in prompt(t) and all(x in prompt(t) for x in t.tests)
        answer = t.meta["spec"]["edge"]
        assert hidden.endswith(f"== {answer!r}")
        assert run_program(t.gold, list(t.judged_tests)).status == "passed"
        # what a policy that never saw the convention writes: right on every shown test
        naive = t.gold.replace(f"    if not ys:\n        return {answer!r}\n", "")
        naive = naive.replace("max(ys)", "max(ys, default=0)").replace("min(ys)", "min(ys, default=0)")
        assert run_program(naive, list(t.tests)).status == "passed"
        v = run_program(naive, list(t.judged_tests)).to_dict()
        call = hidden.removeprefix("assert ").rsplit(" == ", 1)[0]
        if answer != 0:  # 0 is what the naive program returns for sum, count and the defaults
            assert v["status"] == "failed"
            assert describe_verdict(v) == (f"The code is wrong: {call} returned 0, but it should return {answer!r}. "
                                           "3 of 4 tests passed.")
    # the lists family is what it was: every test shown, nothing hidden, the same bytes for the same seed
    lists = generated_tasks(30, 0, "train", 3)
    assert all(t.hidden_tests == () and "edge" not in t.meta["spec"] for t in lists)
    assert lists == generated_tasks(30, 0, "train", 3)


def test_prepare_family_puts_the_starting_policys_pool_in_the_edge_form_and_keys_stay_put(tmp_path):
    from inweights.config import load_config
    from inweights.regimes.ilf.tasks import load_tasks

    root = Path(__file__).resolve().parents[1]
    lists = load_config(root / "configs" / "ilf_tiny_edge.yaml")
    edge = load_config(root / "configs" / "ilf_tiny_edge_prepared.yaml")
    a, b = load_tasks(lists, quiet=True), load_tasks(edge, quiet=True)
    assert all("ys = [" not in t.gold and not t.hidden_tests for t in a["prepare"][:20])
    assert all("    if not ys:\n" in t.gold and len(t.hidden_tests) == 1 for t in b["prepare"][:20])
    # still the preparation's share of the functions, and the same experiment tasks: only that pool's form moves
    from inweights.domains.coding import spec_is_prepare

    assert all(spec_is_prepare(t.meta["spec"]) for t in b["prepare"])
    assert a["test"] == b["test"] and a["train"] == b["train"]
    # a setting added after results were recorded leaves every run's content keys alone at its default...
    assert "prepare_family" not in lists.domain.identity()["coding"]
    assert lists.domain.identity() == load_config(root / "configs" / "ilf_tiny_edge.yaml").domain.identity()
    # ...and enters them when set
    assert edge.domain.identity()["coding"]["prepare_family"] == "edge"


def test_fresh_generated_tasks_draw_new_names_from_the_pool():
    import random

    from inweights.domains.coding import fresh_generated_task, generated_tasks, name_pool

    specs = [t.meta["spec"] for t in generated_tasks(20, 0, "prepare", 2)]
    rng = random.Random(0)
    drawn = [fresh_generated_task(rng, specs, "prepare", 2) for _ in range(200)]
    assert all(name_pool(t.entry_point) == "prepare" for t in drawn)
    assert len({t.entry_point for t in drawn}) > 150  # a name rarely comes back with the same function
    assert all(t.meta["spec"] in specs for t in drawn)
    assert all(run_program(t.gold, list(t.tests)).status == "passed" for t in drawn[:5])


# ------------------------------------------------------------------------------------------ refinement outcomes
@pytest.mark.slow
def test_refinement_outcomes_from_real_verdicts():
    from inweights.regimes.ilf.diagnose import OUTCOMES, outcome, shares

    tests = ["assert f(0) == 0", "assert f(1) == 2", "assert f(2) == 4"]
    old = "def f(x):\n    return x + x * 0\n"  # passes the first test only; the named test is f(1) == 2
    v = {c: run_program(c, tests).to_dict() for c in (
        old, "def f(x):\n    return 2 * x\n", "def f(x):\n    return x + 1\n",
        "def f(x):\n    return {0: 0, 1: 2}.get(x, 0)\n", "def f(x):\n    return x\n", "def f(x) return x\n")}
    got = [outcome(old, v[old], new, v[new]) for new in v]
    assert got == ["unchanged", "passes", "broke_passing", "fixed_named", "no_progress", "broke_passing"]
    assert outcome(old, v[old], "\n" + old.replace("\n", "  \n") + "\n\n", v[old]) == "unchanged"
    assert shares([got[:2], got[2:]]) == {o: got.count(o) / 6 for o in OUTCOMES} and shares([]) == dict.fromkeys(OUTCOMES, 0.0)
    # how the old program failed: only the hidden (unshown) test, an exception, or a shown test's value
    from inweights.regimes.ilf.diagnose import failure_kind

    judged = tests + ["assert f(-1) == -2"]  # the last one hidden: the prompt shows 3
    kinds = {c: failure_kind(run_program(c, judged).to_dict(), 3) for c in (
        "def f(x):\n    return 2 * x if x >= 0 else 0\n", "def f(x):\n    return 2 * y\n", old,
        "def f(x) return x\n")}
    assert list(kinds.values()) == ["hidden_only", "error", "wrong_shown", "error"]


def test_rounds_refine_the_first_failing_sample_of_the_tasks_chosen():
    from inweights.domains.coding import generated_tasks
    from inweights.regimes.ilf.run import to_refine

    pool = generated_tasks(3, 0, "train", 3)
    recs = []
    for t, statuses in zip(pool, (["failed", "failed"], ["failed", "passed"], ["passed", "passed"])):
        progs = [f"def {t.entry_point}(xs):\n    return -7\n" if st == "failed" else t.gold for st in statuses]
        recs.append({"programs": progs, "verdicts": [run_program(p, list(t.judged_tests)).to_dict() for p in progs]})
    assert [r["verdicts"][i]["status"] for r in recs for i in (0, 1)] == ["failed", "failed", "failed", "passed",
                                                                           "passed", "passed"]
    assert [t.id for t, _, _ in to_refine(pool, recs, "all_failed")] == [pool[0].id]
    got = to_refine(pool, recs, "any_failed")
    assert [t.id for t, _, _ in got] == [pool[0].id, pool[1].id]  # the sometimes-solved task too
    assert all(p.endswith("return -7\n") and v["status"] == "failed" for _, p, v in got)


def test_restarted_rounds_train_on_every_rounds_kept_refinements_once_per_task():
    from pydantic import ValidationError

    from inweights.regimes.ilf.config import ILFConfig
    from inweights.regimes.ilf.run import kept_union

    r1 = [{"task_id": "a", "kept": "A1"}, {"task_id": "b", "kept": None}, {"task_id": "c", "kept": "C1"}]
    r2 = [{"task_id": "a", "kept": "A2"}, {"task_id": "b", "kept": "B2"}, {"task_id": "d", "kept": None}]
    got = kept_union([r1, r2])
    assert [(k["task_id"], k["kept"]) for k in got] == [("a", "A1"), ("c", "C1"), ("b", "B2")]
    assert kept_union([r1]) == [r1[0], r1[2]] and kept_union([]) == []
    assert ILFConfig().round_start == "policy"  # the default keeps every earlier run's rounds
    with pytest.raises(ValidationError):
        ILFConfig(round_start="pi0")


def test_loop_style_gold_computes_the_same_function_in_another_style():
    import random

    from inweights.core.errors import UserError
    from inweights.domains.coding import (
        EDGE_RULE,
        CodingTask,
        _empty_selection,
        generated_code,
        generated_spec,
        generated_tasks,
    )
    from inweights.domains.coding_styles import loop_code
    from inweights.regimes.ilf.run import gold_program

    rng = random.Random(0)
    specs = {}
    while len(specs) < 300:
        sp = generated_spec(rng)
        specs[tuple(sorted(sp.items()))] = sp
    for sp in specs.values():
        for spec in (sp, {**sp, "edge": EDGE_RULE[sp["agg"]]}, {**sp, "edge": None}):
            ns_a, ns_b = {}, {}
            a, b = generated_code(spec, "f"), loop_code(spec, "f")
            exec(a, ns_a), exec(b, ns_b)  # noqa: S102 - our own generated code
            assert "for x in xs:" in b and "[" not in b and a != b
            inputs = [[rng.randint(0, 9) for _ in range(rng.randint(0, 6))] for _ in range(20)]
            for xs in [*inputs, _empty_selection(spec, rng), []]:
                assert ns_a["f"](xs) == ns_b["f"](xs), (spec, xs)
    task = generated_tasks(1, 0, "train", 3, "edge_rule")[0]
    assert gold_program(task, "family") == task.gold and gold_program(task, "loop") != task.gold
    mbpp = CodingTask(id="mbpp/1", text="t", tests=("assert f() == 1",), entry_point="f", gold="def f(): return 1\n")
    with pytest.raises(UserError, match="gold_style loop: only generated tasks"):
        gold_program(mbpp, "loop")


# ------------------------------------------------------------------------------------------ early stopping
def test_early_stopping_keeps_the_best_checkpoint(tmp_path):
    import torch

    from inweights.regimes.ilf.early_stop import EarlyStop

    class FakeRun:
        def __init__(self, scores):
            self.scores, self.logged = iter(scores), []

        def val_pass(self, model, tok, tasks):
            return next(self.scores)

        def log(self, rec):
            self.logged.append(rec)

    model = torch.nn.Linear(2, 1)
    run = FakeRun([0.1, 0.2, 0.5, 0.4, 0.5, 0.3, 0.9])
    hook = EarlyStop(run, None, ["t"], every=2, steps=20, patience=3, best_path=tmp_path / "best.pt", name="m")
    hook.start(model)
    stops = []
    for step in range(1, 21):
        with torch.no_grad():
            model.weight.fill_(step)
        stops.append(hook(step, model))
        if stops[-1]:
            break
    # measured at 2, 4, 6, 8, 10: best 0.5 at step 4; 0.4 and 0.5 (no gain) and 0.3 -> three without improvement
    assert [c["step"] for c in hook.curve] == [0, 2, 4, 6, 8, 10] and step == 10
    assert hook.best_step == 4 and hook.best == 0.5 and hook.curve[0]["val_pass"] == 0.1
    hook.restore_best(model)
    assert model.weight.flatten().tolist() == [4.0, 4.0]
    again = EarlyStop(run, None, ["t"], 2, 20, 3, tmp_path / "best.pt", "m")
    again.load_state_dict(hook.state_dict())  # resumable: the state rides in the training checkpoint
    assert again.summary() == hook.summary()
    assert not hook.summary()["kept_start"]
    # no trained checkpoint beats the start (0.6): the start is kept, and patience stops the stage
    start = EarlyStop(FakeRun([0.6, 0.5, 0.6, 0.55]), None, ["t"], 2, 20, 3, tmp_path / "start.pt", "m")
    with torch.no_grad():
        model.weight.fill_(-1.0)
    start.start(model)
    for step in range(1, 21):
        with torch.no_grad():
            model.weight.fill_(step)
        if start(step, model):
            break
    assert step == 6 and start.best_step == 0 and start.summary()["kept_start"]
    start.restore_best(model)
    assert model.weight.flatten().tolist() == [-1.0, -1.0]


@pytest.mark.slow
def test_policy_budget_is_epochs_with_replay(tmp_path):
    from inweights.config import load_config
    from inweights.regimes.ilf.run import ILFRun, load_tasks, policy_record

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**SMOKE, "ilf": {**{k: v for k, v in SMOKE["ilf"].items() if k != "policy_steps"},
                                                     "policy_epochs": 3.0, "replay": 0.5, "val_tasks": 0}}))
    cfg = load_config(path)
    run = ILFRun(cfg, tmp_path / "run", path, resume=False)
    tasks = load_tasks(cfg, quiet=True)
    (tmp_path / "run").mkdir()
    base = run.base_policy(tasks)
    recs = [policy_record(t, t.gold) for t in tasks["train"]] * 20
    run.train("p", base, recs, None, None, replay=[policy_record(t, t.gold) for t in tasks["prepare"]])
    done = json.loads((tmp_path / "run" / "steps" / "model_p.json").read_text())["record"]
    assert done["replay"] == 0.5 and done["records"] == len(recs)
    # steps = ceil(3 epochs x the records' tokens / the half of each step's tokens they get)
    assert done["planned_steps"] == done["steps"] > 1
    assert 0 <= done["steps"] - 3.0 * done["steps_per_epoch"] < 1.01 and "curve" not in done
