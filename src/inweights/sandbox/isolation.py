"""The sandbox's kernel boundary, on the trusted side: a fresh unprivileged uid per program (as root), the
interpreter such a uid can read, killing everything a program started, and bubblewrap's restricted view of the
filesystem (system directories and the interpreter's prefix, site-packages hidden, a private /tmp, its own PID,
IPC and network namespaces). ``core`` runs programs through it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

UID_BASE = 2_000_000


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


def _bwrap_argv(path: str, workdir: str, limits, interpreter: str) -> list[str]:
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
