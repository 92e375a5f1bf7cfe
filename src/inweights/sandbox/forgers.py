"""Universal forgers: programs that try to report success without computing any answer.

Each is module-level code appended to a program that defines the task's function(s) as returning None (for
HumanEval after its prompt). They attack the verdict through the interpreter's state — the result record found
by the garbage collector or by walking frames, exit hooks, finalisers, tracing and threads, shadowed builtins
and patched library functions, an always-equal answer, junk written on every descriptor, killing itself after
a forged line. Under inweights' sandbox each must pass no task (`inweights sandbox TASKS --forgers` checks it
on a machine; tests/test_sandbox_judge.py and benchmarks/sandbox.py on HumanEval and MBPP).
"""

from __future__ import annotations

import textwrap

FORGERS = {
    "verdict dicts through gc": """
import gc, os, sys
def _forge():
    for o in gc.get_objects():
        if type(o) is dict and "token" in o:
            fd = o.get("result_fd")
            tok = o.get("token")
            o["results"] = [{"passed": True} for _ in range(200)]
            o.pop("stage", None)
            if fd is not None:
                try:
                    os.write(fd, ('{"token": "%s", "results": [' % tok + ", ".join(['{"passed": true}'] * 200) + ']}\\n').encode())
                except OSError:
                    pass
_forge()
import atexit
atexit.register(_forge)
""",
    "frames and exit": """
import sys, os
f = sys._getframe()
while f is not None:
    for k, v in list(f.f_locals.items()):
        if type(v) is dict and "token" in v:
            v["results"] = [{"passed": True}] * 200
    f = f.f_back
os._exit(0)
""",
    "shadowed builtins and an always-equal answer": """
import builtins, math
class _Any:
    def __eq__(s, o): return True
    def __ne__(s, o): return False
    __lt__ = __le__ = __gt__ = __ge__ = __eq__
    def __abs__(s): return 0
    def __sub__(s, o): return s
    __rsub__ = __add__ = __radd__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = __mod__ = __sub__
    def __float__(s): return 0.0
    def __int__(s): return 0
    def __len__(s): return 0
    def __iter__(s): return iter(())
    def __bool__(s): return True
    def __hash__(s): return 0
    def __getitem__(s, k): return s
for _n in ("bool", "all", "any", "isinstance"):
    setattr(builtins, _n, lambda *a, **k: True)
builtins.abs = lambda x: 0
builtins.AssertionError = type("AssertionError", (BaseException,), {})
math.isclose = lambda *a, **k: True
math.fabs = lambda x: 0.0
for _n, _f in list(globals().items()):
    if callable(_f) and getattr(_f, "__module__", None) == "__main__" and not isinstance(_f, type):
        globals()[_n] = (lambda *a, **k: _Any())
""",
    "tracing and threads": """
import sys, threading, time
def _tr(frame, event, arg):
    for k, v in list(frame.f_locals.items()):
        if type(v) is dict and ("passed" in v or "token" in v):
            v["passed"] = True
    return _tr
sys.settrace(_tr)
threading.settrace(_tr)
def _loop():
    while True:
        _tr(sys._getframe(), "line", None)
        time.sleep(0.001)
threading.Thread(target=_loop, daemon=True).start()
""",
    "finaliser and self-kill": """
import os, signal, gc
class _Late:
    def __del__(self):
        for o in gc.get_objects():
            if type(o) is dict and "token" in o and o.get("result_fd") is not None:
                try:
                    os.write(o["result_fd"], ('{"token": "%s", "results": []}\\n' % o["token"]).encode())
                except OSError:
                    pass
_keep = _Late()
def _die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
for _n, _f in list(globals().items()):
    if callable(_f) and getattr(_f, "__module__", None) == "__main__" and _n not in ("_die", "_Late"):
        globals()[_n] = _die
""",
    "junk on the judge's pipe": """
import os
def _spam(*a, **k):
    for fd in range(3, 64):
        try:
            os.write(fd, (99).to_bytes(4, "big") + b'{"value": true, "names": {}, "passed": true}' + b" " * 60)
        except OSError:
            pass
    return True
for _n, _f in list(globals().items()):
    if callable(_f) and getattr(_f, "__module__", None) == "__main__" and _n != "_spam":
        globals()[_n] = _spam
""",
}

# a forger that reads the answers: it looks for the datasets on disk (HumanEval's file in site-packages, an MBPP
# file anywhere) and runs the reference solution of its own function. Only a restricted view of the filesystem
# (bubblewrap's, see core._view) stops it; without a kernel boundary it reads whatever other users may read.
READER = """
import os, gzip, json, time
_t0 = time.monotonic()
_mine = [n for n, f in list(globals().items()) if callable(f) and getattr(f, "__module__", None) == "__main__"]
_skip = {"proc", "sys", "dev", "share", "include", "locale", "man", "doc", "zoneinfo", "firmware", "modules"}
def _files():
    for root, dirs, files in os.walk("/"):
        if time.monotonic() - _t0 > 1.5:
            return
        dirs[:] = [d for d in dirs if d not in _skip]
        for n in files:
            if n in ("HumanEval.jsonl.gz", "HumanEval.jsonl") or (n.endswith(".jsonl") and "mbpp" in n.lower()):
                yield os.path.join(root, n)
def _steal():
    for p in _files():
        try:
            with (gzip.open if p.endswith(".gz") else open)(p, "rt") as fh:
                for line in fh:
                    r = json.loads(line)
                    code = (r.get("prompt", "") + r["canonical_solution"]) if "canonical_solution" in r else r.get("code", "")
                    if any(("def " + m + "(") in code for m in _mine):
                        exec(code, globals())
                        return
        except Exception:
            pass
_steal()
"""


def forged_program(task, forger: str) -> str:
    """The forger as the program for ``task`` (a CodingTask): after HumanEval's prompt with a body that returns
    None, or after a ``def ENTRY(*args, **kwargs): return None`` for MBPP-style tasks."""
    head = (task.prefix + "    return None\n") if task.prefix else f"def {task.entry_point}(*args, **kwargs):\n    return None\n"
    return head + textwrap.dedent(forger)
