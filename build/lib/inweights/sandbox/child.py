"""The sandbox's child side: run as ``python -s -S -B -c <this source>`` in a fresh interpreter.

It is trusted code and imports nothing from inweights. It reads one job (JSON) from stdin, then, before any
untrusted line runs: leaves the network (a new network namespace, when it is root and the kernel allows),
drops to the job's unprivileged uid/gid (when it is root), sets the resource limits, changes into the job's
temporary directory and installs an audit hook (PEP 578) that refuses sockets, process creation, signals to
other processes, ctypes, writes outside the temporary directory and reads of other processes' /proc entries.
Audit hooks cannot be removed once installed. Then it runs the program, the setup code and each test, and
writes one result line (JSON, carrying the job's token) to the result file descriptor: for a value test
(``{"call": ...}``) only what the call returned, as plain data (the parent compares it with the expected
value, which never enters this process); for any other test (``{"assert": ...}``) its outcome, which the
program could forge and the parent flags as untrusted. Anything the program does to the process itself
(os._exit, a signal, a crash) leaves no result line, and the parent reports that instead.
"""

import marshal
import os
import resource
import sys

# Start-up is most of a short program's cost, so this module imports only what every run needs: ``ast`` only for
# jobs with in-child asserts (imported in ``main`` before any untrusted line), ``json`` not at all (the job comes
# as marshal data from the trusted parent; the result line is written by ``_dumps`` with json's own C string
# encoder). ``ast`` and ``json`` together were ~15 ms of a ~60 ms trivial program.
try:
    from _json import encode_basestring_ascii as _encode_str
except ImportError:  # an interpreter without the C accelerator
    from json.encoder import py_encode_basestring_ascii as _encode_str
ast = None

CLONE_NEWNET = 0x40000000
MAX_TEXT = 2000


def _enter_net_namespace():
    """A new, empty network namespace (only a down loopback): True when it worked."""
    try:
        import ctypes

        ok = ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) == 0
    except Exception:  # noqa: BLE001 - no namespace then; the audit hook still refuses sockets
        ok = False
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]  # so a program's `import ctypes` goes through the audit hook
    return ok


def _limits(job):
    lim = job["limits"]
    mb = 1024 * 1024
    cpu = max(1, int(lim["cpu_seconds"] + 0.999))
    pairs = [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (lim["memory_mb"] * mb, lim["memory_mb"] * mb)),
        (resource.RLIMIT_FSIZE, (lim["file_size_mb"] * mb, lim["file_size_mb"] * mb)),
        (resource.RLIMIT_NOFILE, (lim["open_files"], lim["open_files"])),
        (resource.RLIMIT_NPROC, (job["nproc"], job["nproc"])),
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    for which, value in pairs:
        resource.setrlimit(which, value)


def _drop_privileges(job):
    if os.geteuid() != 0 or job.get("uid") is None:
        return False
    os.setgroups([])
    os.setgid(job["gid"])
    os.setuid(job["uid"])
    return True


class Refused(PermissionError):
    pass


def _install_hook(root, allow_subprocess):
    """Refuse what an untrusted program must not do (raising PermissionError inside it)."""
    root = os.path.realpath(root)
    own = os.getpid()
    own_group = os.getpgid(0)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    realpath, isabs, join, getcwd = os.path.realpath, os.path.isabs, os.path.join, os.getcwd
    spawn_events = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                    "os.forkpty", "pty.spawn", "os.startfile"}
    path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
                   "os.link", "os.truncate", "os.utime", "os.chflags", "os.lchflags", "shutil.rmtree",
                   "shutil.copyfile", "shutil.move", "os.mkfifo", "os.mknod", "os.setxattr", "os.removexattr"}
    blocked_imports = {"ctypes", "_ctypes"} | (set() if allow_subprocess else {"_posixsubprocess"})

    def inside(path):
        if isinstance(path, int):
            return True  # an already-open descriptor
        try:
            p = os.fsdecode(path)
        except Exception:  # noqa: BLE001 - an unreadable path is treated as outside
            return False
        if not isabs(p):
            p = join(getcwd(), p)
        p = realpath(p)
        return p == root or p.startswith(root + os.sep)

    def other_proc(path):
        try:
            p = realpath(os.fsdecode(path)) if not isinstance(path, int) else ""
        except Exception:  # noqa: BLE001 - an unreadable path is treated as outside
            return False
        if not p.startswith("/proc/"):
            return False
        part = p.split("/")[2]
        return part.isdigit() and int(part) != own

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & write_flags)
            if writing and not inside(path):
                raise Refused(f"sandbox: writing outside the temporary directory refused ({path})")
            if other_proc(path):
                raise Refused(f"sandbox: reading another process's /proc entry refused ({path})")
        elif event.startswith("socket."):
            raise Refused(f"sandbox: network access refused ({event})")
        elif event in spawn_events:
            if not allow_subprocess:
                raise Refused(f"sandbox: process creation refused ({event})")
        elif event in ("os.kill", "os.killpg", "signal.pthread_kill"):
            target = args[0]
            if event == "os.killpg":
                ok = allow_subprocess and target == own_group
            elif event == "os.kill":
                ok = target == own or (allow_subprocess and target > 0 and _group_of(target) == own_group)
            else:
                ok = True  # a thread of this process
            if not ok:
                raise Refused(f"sandbox: signal to another process refused ({event} {target})")
        elif event in path_events:
            if not all(inside(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))):
                raise Refused(f"sandbox: changing files outside the temporary directory refused ({event})")
        elif event == "import":
            if args[0] in blocked_imports:
                raise Refused(f"sandbox: import of {args[0]} refused")
        elif event.startswith("ctypes.") or event in ("resource.setrlimit", "resource.prlimit"):
            raise Refused(f"sandbox: {event} refused")

    sys.addaudithook(hook)


def _group_of(pid):
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _short(value):
    try:
        text = repr(value)
    except Exception as e:  # noqa: BLE001 - a repr that raises is the program's own
        text = f"<unrepresentable {type(value).__name__}: {e}>"
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def _refusal(e):
    """The sandbox's refusal behind an exception (libraries wrap it: urllib's URLError, ...), or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, Refused):
            return e
        inner = [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
        reason = getattr(e, "reason", None)
        e = e.__cause__ or e.__context__ or (reason if isinstance(reason, BaseException) else None) or (
            inner[0] if inner else None)
    return None


def _error(e):
    refused = _refusal(e)
    if refused is not None and refused is not e:
        return {"error_type": type(refused).__name__, "message": str(refused)[:MAX_TEXT], "errno": None,
                "refused": True, "wrapped_in": type(e).__name__}
    return {"error_type": type(e).__name__, "message": str(e)[:MAX_TEXT],
            "errno": getattr(e, "errno", None), "refused": refused is not None}


def _run_test(test, env):
    """One test (an assert statement, usually ``assert f(x) == y``): its outcome, and for an equality the
    value the program returned, so feedback can say what was observed."""
    rec = {"test": test[:MAX_TEXT], "passed": False}
    try:
        tree = ast.parse(test)
    except SyntaxError as e:
        rec.update(_error(e))
        return rec
    node = tree.body[0] if len(tree.body) == 1 else None
    if (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1
            and isinstance(node.test.ops[0], ast.Eq)):
        left = compile(ast.Expression(node.test.left), "<test>", "eval")
        right = compile(ast.Expression(node.test.comparators[0]), "<test>", "eval")
        try:
            actual = eval(left, env)
            expected = eval(right, env)
            rec["actual"], rec["expected"] = _short(actual), _short(expected)
            rec["passed"] = bool(actual == expected)
            if not rec["passed"]:
                rec.update(error_type="AssertionError", message=f"{test.strip()[:MAX_TEXT]}")
        except BaseException as e:  # noqa: BLE001 - whatever the program raises is its verdict
            rec.update(_error(e))
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                rec["exit"] = True
        return rec
    try:
        exec(compile(tree, "<test>", "exec"), env)  # noqa: S102 - this is the sandbox
        rec["passed"] = True
    except BaseException as e:  # noqa: BLE001 - whatever the program raises is its verdict
        rec.update(_error(e))
        if isinstance(e, AssertionError):
            rec.update(_failed_assert(e, test))
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            rec["exit"] = True
    return rec


def _failed_assert(e, test):
    """Which assert of a test's code failed (a HumanEval ``check`` holds many): its line, and for an equality
    both sides evaluated again in the failing frame, so the verdict says what was returned vs expected."""
    frame, line, tb = None, None, e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<test>":
            frame, line = tb.tb_frame, tb.tb_lineno
        tb = tb.tb_next
    if frame is None:
        return {}
    lines = test.splitlines()
    src = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    out = {"failed_line": line, "failed_source": src[:MAX_TEXT]}
    try:
        node = ast.parse(src).body[0]
    except (SyntaxError, IndexError):
        return out
    if (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1
            and isinstance(node.test.ops[0], ast.Eq)):
        scope = {**frame.f_globals, **frame.f_locals}
        try:
            actual = eval(compile(ast.Expression(node.test.left), "<test>", "eval"), scope)
            expected = eval(compile(ast.Expression(node.test.comparators[0]), "<test>", "eval"), scope)
            out["actual"], out["expected"] = _short(actual), _short(expected)
        except BaseException:  # noqa: BLE001, S110 - the line alone still names the failure
            pass
    return out


_NONE, _BOOL, _INT, _FLOAT, _STR, _COMPLEX = type(None), bool, int, float, str, complex
_LIST, _TUPLE, _SET, _FSET, _DICT = list, tuple, set, frozenset, dict
MAX_ITEMS = 100_000


class Unsupported(Exception):
    pass


def _plain(value):
    """A returned value as plain JSON data, read through the *base* types' own methods: None, bool, int, float,
    str as themselves; list, tuple, set, frozenset and dict tagged (``{"l": [...]}``, ``{"t": ...}``,
    ``{"s": ...}``, ``{"fs": ...}``, ``{"d": [[k, v], ...]}``). A subclass (``Counter``, a namedtuple) gives its
    base type's content (complex: ``{"c": [re, im]}``) — its own ``__eq__`` or ``__iter__`` is never used; any other object (one whose
    ``__eq__`` always says True, say) is unsupported. The parent compares these with the expected values, which
    never enter here."""
    count = [0]
    sub = issubclass

    def enc(v, depth):
        count[0] += 1
        if depth > 50 or count[0] > MAX_ITEMS:
            raise Unsupported("a value too large or too deeply nested")
        t = type(v)  # type() cannot be faked by a __class__ property, isinstance() can
        if t is _NONE or t is _BOOL:
            return v
        if sub(t, _INT):
            return _INT.__index__(v)
        if sub(t, _FLOAT):
            return _FLOAT.__float__(v)
        if sub(t, _COMPLEX):
            return {"c": [_COMPLEX.real.__get__(v), _COMPLEX.imag.__get__(v)]}
        if sub(t, _STR):
            return _STR.__str__(v)
        for base, tag in ((_LIST, "l"), (_TUPLE, "t"), (_SET, "s"), (_FSET, "fs")):
            if sub(t, base):
                return {tag: [enc(x, depth + 1) for x in base.__iter__(v)]}
        if sub(t, _DICT):
            return {"d": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in _DICT.items(v)]}
        raise Unsupported(f"an unsupported type ({t.__name__})")

    return enc(value, 0)


def _run_call(call, env, _eval=eval, _compile=compile, _to_plain=_plain):
    """A value test: evaluate the call, send back what it returned (never a pass/fail: the parent decides).
    ``eval``, ``compile`` and the encoder are bound when this module loads, so a program that rebinds the
    builtins does not change how its call is evaluated (defence in depth: the parent's comparison is the guard)."""
    rec = {}
    try:
        value = _eval(_compile(call, "<test>", "eval"), env)
        try:
            rec["value"] = _to_plain(value)
        except Unsupported as e:
            rec["unsupported"] = str(e)
    except BaseException as e:  # noqa: BLE001 - whatever the program raises is its verdict
        rec.update(_error(e))
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            rec["exit"] = True
    return rec


def _dumps(value):
    """``json.dumps(value)`` of the verdict (None, bool, int, float, str, list, tuple and dict with str keys),
    byte for byte: floats by ``repr`` with NaN/Infinity as json writes them, strings by json's own encoder."""
    parts = []
    add = parts.append

    def enc(v):
        t = type(v)
        if v is None:
            add("null")
        elif t is bool:
            add("true" if v else "false")
        elif t is int:
            add(int.__repr__(v))
        elif t is float:
            r = float.__repr__(v)
            add(_SPECIAL.get(r, r))
        elif t is str:
            add(_encode_str(v))
        elif t is list or t is tuple:
            add("[")
            for i, x in enumerate(v):
                if i:
                    add(", ")
                enc(x)
            add("]")
        elif t is dict:
            add("{")
            for i, (k, x) in enumerate(v.items()):
                if type(k) is not str:
                    raise TypeError(f"a result key of type {type(k).__name__}")
                add((", " if i else "") + _encode_str(k) + ": ")
                enc(x)
            add("}")
        else:
            raise TypeError(f"a result value of type {t.__name__}")

    enc(value)
    return "".join(parts)


_SPECIAL = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # as json writes them


def main():
    global ast
    # bound here, before any untrusted line: replacing the module's functions later changes nothing
    run_call, run_test, dumps = _run_call, _run_test, _dumps
    job = marshal.loads(sys.stdin.buffer.read())
    if any("assert" in item for item in job["items"]):
        import ast as _ast

        ast = _ast
    token = job.pop("token")
    result_fd = job["result_fd"]
    netns = _enter_net_namespace() if job.get("netns") and os.geteuid() == 0 else False
    dropped = _drop_privileges(job)
    os.chdir(job["dir"])
    _limits(job)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    out = os.fdopen(result_fd, "w", closefd=True)
    info = {"netns": netns, "unprivileged": dropped or os.geteuid() != 0}
    _install_hook(job["dir"], job["limits"]["allow_subprocess"])
    del job["limits"]

    env = {"__name__": "__main__", "__builtins__": __builtins__}
    verdict = {"token": token, **info, "results": []}
    for part in ("code", "setup"):
        src = job.get(part) or ""
        if not src.strip():
            continue
        try:
            exec(compile(src, f"<{part}>", "exec"), env)  # noqa: S102 - this is the sandbox
        except BaseException as e:  # noqa: BLE001 - whatever the program raises is its verdict
            verdict.update(stage=part, **_error(e))
            out.write(dumps(verdict) + "\n")
            out.flush()
            return
    for item in job["items"]:
        rec = run_call(item["call"], env) if "call" in item else run_test(item["assert"], env)
        verdict["results"].append(rec)
        if rec.get("exit"):
            break
    out.write(dumps(verdict) + "\n")
    out.flush()


main()
