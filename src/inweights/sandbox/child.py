"""The sandbox's child side: run as ``python -s -S -B -c <this source>`` in a fresh interpreter.

It is trusted code and imports nothing from inweights. It reads one job (marshal data from the trusted parent)
from stdin, then, before any untrusted line runs: leaves the network (a new network namespace, when it is root
and the kernel allows), drops to the job's unprivileged uid/gid (when it is root), sets the resource limits,
changes into the job's temporary directory and installs an audit hook (PEP 578) that refuses sockets, process
creation, signals to other processes, ctypes, writes outside the temporary directory and reads of other
processes' /proc entries. Audit hooks cannot be removed once installed.

It plays one of two roles:

- **program** (``role: "program"``): runs the program and the setup code, then each value test's call, and
  writes one result line (JSON) to its result file: only what each call returned, as plain data — never a
  pass or a fail (the parent compares, with expected values that never enter this process). Then, when a judge
  runs beside it, it serves the judge's requests (``names``: what the program binds to the names the tests
  use; ``call``: a call of one of its functions on plain arguments) until the judge hangs up.
- **judge** (``role: "judge"``): never loads the program's code. It runs the task's own code (the prompt's
  helpers, the setup) and each judged test, in which the program's functions are stand-ins that ask the
  program's process over a pipe and return the plain values it answers; it writes each test's outcome to its
  own result file, which the program's process cannot reach. A test that would need more than plain data
  from the program (an object of the program's class, an argument that is not plain data) is ``untrusted``.

Anything the program does to its own process (os._exit, a signal, a crash) leaves no result line, or leaves the
judge without answers, and the parent reports that instead.
"""

import marshal
import os
import resource
import sys

# Start-up is most of a short program's cost, so this module imports only what every run needs: ``ast`` only in
# the judge, for a failing test; ``json`` not at all (the job comes as marshal data from the trusted parent; the
# result line is written by ``_dumps`` with json's own C string encoder, and the judge reads answers with json's C
# scanner). ``ast`` and ``json`` together were ~15 ms of a ~60 ms trivial program.
try:
    from _json import encode_basestring_ascii as _encode_str
except ImportError:  # an interpreter without the C accelerator
    from json.encoder import py_encode_basestring_ascii as _encode_str

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


# seccomp: process creation refused by the kernel, whatever route reaches it (a built-in _posixsubprocess created
# again through importlib raises no audit event). Threads (clone with CLONE_THREAD) stay allowed; clone3 answers
# ENOSYS so the C library falls back to clone, whose flags a classic BPF filter can read.
_SYSCALLS = {  # audit arch -> (fork/vfork/execve/execveat/spawn-style numbers to refuse, clone, clone3)
    "x86_64": (0xC000003E, (57, 58, 59, 322), 56, 435),
    "aarch64": (0xC00000B7, (221, 281), 220, 435),
}


def _prctl():
    """``prctl`` through ``_ctypes`` alone (``import ctypes`` is ~2.5 ms of a ~15 ms program): a C function of five
    arguments, the pointers passed as unsigned longs, and a way to copy bytes to an address."""
    import _ctypes

    class Int(_ctypes._SimpleCData):
        _type_ = "i"

    class ULong(_ctypes._SimpleCData):
        _type_ = "L"

    class Char(_ctypes._SimpleCData):
        _type_ = "c"

    class Fn(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = Int
        _argtypes_ = (Int, ULong, ULong, ULong, ULong)

    def buffer(data):
        class Buf(_ctypes.Array):
            _type_ = Char
            _length_ = len(data)

        return Buf.from_buffer_copy(data)

    return Fn(_ctypes.dlsym(_ctypes.dlopen(None, 0), "prctl")), buffer, _ctypes.addressof


def _no_new_processes():
    """Install the seccomp filter in this process (and what it may start): True when it is in force."""
    try:
        import struct

        arch = os.uname().machine
        if arch not in _SYSCALLS:
            return False
        audit_arch, refuse, clone, clone3 = _SYSCALLS[arch]
        ld, jeq, jset, jge, ret = 0x20, 0x15, 0x45, 0x35, 0x06
        allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
        prog = [(ld, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, allow), (ld, 0, 0, 0)]
        if arch == "x86_64":
            prog.append((jge, 0, 1, 0x40000000))  # the x32 ABI's numbers
            prog.append((ret, 0, 0, eperm))
        for nr in refuse:
            prog += [(jeq, 0, 1, nr), (ret, 0, 0, eperm)]
        prog += [(jeq, 0, 1, clone3), (ret, 0, 0, enosys), (jeq, 1, 0, clone), (ret, 0, 0, allow),
                 (ld, 0, 0, 16), (jset, 0, 1, 0x00010000), (ret, 0, 0, allow), (ret, 0, 0, eperm)]
        prctl, buffer, addressof = _prctl()
        code = buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
        fprog = buffer(struct.pack("HxxxxxxP", len(prog), addressof(code)))
        # PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with SECCOMP_MODE_FILTER
        ok = prctl(38, 1, 0, 0, 0) == 0 and prctl(22, 2, addressof(fprog), 0, 0) == 0
    except Exception:  # noqa: BLE001 - the audit hook and RLIMIT_NPROC still apply
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
            # by the module's last name and by its file: an extension module loaded under another package name
            # (importlib's spec_from_file_location("x._posixsubprocess", ...)) keeps its init function's name
            name = str(args[0])
            base = os.path.basename(os.fsdecode(args[1])) if len(args) > 1 and isinstance(args[1], (str, bytes)) else ""
            if name.rpartition(".")[2] in blocked_imports or base.split(".")[0] in blocked_imports:
                raise Refused(f"sandbox: import of {name} refused")
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


def _failed_assert(e, test, equalities):
    """Which assert of a test's code failed (a HumanEval ``check`` holds many): its line, and for an equality
    both sides evaluated again in the failing frame, so the verdict says what was returned vs expected. The
    parent parsed the test (``equalities``: line -> the two sides' source), so the judge needs no ``ast``."""
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
    sides = equalities.get(line)
    if sides:
        scope = {**frame.f_globals, **frame.f_locals}
        try:
            actual = eval(compile(sides[0], "<test>", "eval"), scope)
            expected = eval(compile(sides[1], "<test>", "eval"), scope)
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


# ------------------------------------------------------------------ the program's process serving a judge
def _recv(fd, n):
    """Exactly ``n`` bytes from ``fd``, or fewer when the other side hung up."""
    chunks, got = [], 0
    while got < n:
        try:
            b = os.read(fd, min(n - got, 1 << 20))
        except InterruptedError:
            continue
        except OSError:
            break
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def _send(fd, payload):
    data = len(payload).to_bytes(4, "big") + payload
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _describe(value, plain):
    """What the program binds to a name the judge asked about."""
    if callable(value):
        return {"kind": "callable"}
    if type(value) is type(os):
        try:
            return {"kind": "module", "name": str(_MODULE_DICT(value).get("__name__"))}
        except Exception:  # noqa: BLE001 - a module whose dict the program broke
            return {"kind": "other", "type": "module"}
    try:
        return {"kind": "value", "value": plain(value)}
    except Unsupported as e:
        return {"kind": "other", "type": str(e)}


_MODULE_DICT = type(os).__dict__["__dict__"].__get__


def _serve(env, req_fd, resp_fd, loads=marshal.loads, plain=_plain, dumps=_dumps, send=_send, recv=_recv,
           error=_error, describe=_describe):
    """Answer the judge until it hangs up: the judge is trusted (its requests come as marshal data); every
    answer is plain data the judge checks, whatever the program has done to this process."""
    while True:
        head = recv(req_fd, 4)
        if len(head) < 4:
            return
        msg = loads(recv(req_fd, int.from_bytes(head, "big")))
        rec = {}
        if msg[0] == "names":
            rec["names"] = {n: (describe(env[n], plain) if n in env else {"kind": "missing"}) for n in msg[1]}
        else:
            _, name, args, kwargs = msg
            try:
                value = env[name](*args, **kwargs)
                try:
                    rec["value"] = plain(value)
                except Unsupported as e:
                    rec["unsupported"] = str(e)
                # arguments the call changed in place (a list it sorted, a dict it filled) go back too
                changed = []
                for i, a in enumerate(args):
                    if type(a) in (_LIST, _DICT, _SET):
                        try:
                            changed.append([i, plain(a)])
                        except Unsupported:
                            pass
                rec["args"] = changed
            except BaseException as e:  # noqa: BLE001 - whatever the program raises is its answer
                rec["error"] = error(e)
        try:
            payload = dumps(rec).encode("utf-8", "surrogatepass")
        except Exception as e:  # noqa: BLE001 - an answer the encoder cannot write is an error of the program
            payload = dumps({"error": {"error_type": type(e).__name__, "message": str(e)[:MAX_TEXT]}}).encode()
        try:
            send(resp_fd, payload)
        except OSError:
            return


# ----------------------------------------------------------------------------------------------- the judge
MAX_DEPTH = 200  # nesting of decoded data (the encoder stops at 50 levels of values)


def decode_plain(data, depth=0):
    """Plain data (``_plain``'s encoding) back to Python values (tags: l, t, s, fs, d, c); TypeError for anything
    else. The judge and the parent (``plan.decode``) both read the program's answers with it."""
    if depth > MAX_DEPTH:
        raise TypeError("the program's data is nested too deeply")
    if isinstance(data, dict) and len(data) == 1:
        (tag, items), = data.items()
        if tag == "c" and isinstance(items, list) and len(items) == 2:
            return complex(float(items[0]), float(items[1]))
        if isinstance(items, list):
            if tag == "l":
                return [decode_plain(x, depth + 1) for x in items]
            if tag == "t":
                return tuple(decode_plain(x, depth + 1) for x in items)
            if tag == "s":
                return {decode_plain(x, depth + 1) for x in items}
            if tag == "fs":
                return frozenset(decode_plain(x, depth + 1) for x in items)
            if tag == "d" and all(isinstance(kv, list) and len(kv) == 2 for kv in items):
                return {decode_plain(k, depth + 1): decode_plain(v, depth + 1) for k, v in items}
    if isinstance(data, (dict, list)):
        raise TypeError("not the child's plain-data encoding")
    return data


def _import(name):
    __import__(name)
    return sys.modules[name]


def _json_loads():
    """``json.loads`` from the C scanner alone: ``import json`` pulls in ``re`` (~3.4 ms of the judge's start-up)."""
    try:
        import _json
    except ImportError:
        import json

        return json.loads
    special = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}

    class Context:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = special.__getitem__
        memo = {}  # noqa: RUF012 - the scanner reads these attributes; one context, never shared

    scan = _json.make_scanner(Context())

    def loads(text):
        try:
            value, end = scan(text, 0)
        except StopIteration:
            raise ValueError("not JSON") from None
        if text[end:].strip():
            raise ValueError("extra data after the JSON value")
        return value

    return loads


def _judge(job, out, info):
    """Run the judged tests with the program's functions as stand-ins; write each test's outcome."""
    import builtins

    loads = _json_loads()
    req, resp = job["req_fd"], job["resp_fd"]
    state = {"gone": None, "untrusted": None}
    max_answer = job["max_answer"]

    class Untrusted(BaseException):
        pass

    class Gone(BaseException):
        pass

    class ProgramError(Exception):
        """An exception the program raised that has no builtin class here."""

    def untrusted(why):
        state["untrusted"] = state["untrusted"] or why
        raise Untrusted(why)

    def ask(msg):
        if state["gone"]:
            raise Gone(state["gone"])
        try:
            body = marshal.dumps(msg)
        except ValueError:
            untrusted("an argument that is not plain data")
        try:
            _send(req, body)
        except OSError:
            state["gone"] = "the program's process ended"
            raise Gone(state["gone"]) from None
        head = _recv(resp, 4)
        n = int.from_bytes(head, "big") if len(head) == 4 else -1
        if n < 0 or n > max_answer:
            state["gone"] = ("the program's process ended" if n < 0
                             else f"the program answered more than {max_answer // 2**20} MB")
            raise Gone(state["gone"])
        data = _recv(resp, n)
        if len(data) < n:
            state["gone"] = "the program's process ended"
            raise Gone(state["gone"])
        try:
            rec = loads(data.decode("utf-8"))
        except (ValueError, RecursionError, MemoryError):
            raise ProgramError("the program's answer could not be read") from None
        if not isinstance(rec, dict):
            raise ProgramError("the program's answer could not be read")
        return rec

    decode = decode_plain

    def value_of(data):
        try:
            return decode(data)
        except (TypeError, ValueError, RecursionError, MemoryError):
            raise ProgramError("the program's answer was not plain data") from None

    def raise_error(err):
        et = str(err.get("error_type")) if isinstance(err, dict) else "Error"
        msg = str(err.get("message", ""))[:MAX_TEXT] if isinstance(err, dict) else ""
        cls = getattr(builtins, et, None)
        # StopIteration would end the test's own iteration quietly (`all(map(f, xs))` over a shortened map): an error,
        # as PEP 479 makes it inside generators
        if (isinstance(cls, type) and issubclass(cls, Exception) and cls is not Untrusted
                and not issubclass(cls, (StopIteration, StopAsyncIteration))):
            try:
                e = cls(msg)
            except Exception:  # noqa: BLE001 - an exception class with other arguments
                e = ProgramError(f"{et}: {msg}")
        else:  # SystemExit, KeyboardInterrupt, the program's own classes: an error, never the judge's exit
            e = ProgramError(f"{et}: {msg}")
        e.program_error_type = et
        raise e

    class Remote:
        """The program's function ``name``: its arguments go to the program's process, its answer comes back."""

        __slots__ = ("_name",)

        def __init__(self, name):
            self._name = name

        def __call__(self, *args, **kwargs):
            rec = ask(("call", self._name, args, kwargs))
            if "error" in rec:
                raise_error(rec["error"])
            if "unsupported" in rec:
                untrusted(f"{self._name} returned {str(rec['unsupported'])[:200]}")
            if "value" not in rec:
                raise ProgramError("the program's answer could not be read")
            changed = rec.get("args")
            for pair in changed if isinstance(changed, list) else ():
                if not (isinstance(pair, list) and len(pair) == 2 and type(pair[0]) is int
                        and 0 <= pair[0] < len(args)):
                    continue
                a, new = args[pair[0]], value_of(pair[1])
                if type(a) is list and type(new) is list:
                    a[:] = new
                elif type(a) is dict and type(new) is dict or type(a) is set and type(new) is set:
                    a.clear()
                    a.update(new)
            return value_of(rec["value"])

        def __repr__(self):
            return f"<the program's {self._name}>"

    class Opaque:
        """Something of the program's that is not plain data (a class instance, say): no use of it can be judged."""

        __slots__ = ("_why",)

        def __init__(self, why):
            self._why = why

        def _no(self, *a, **k):
            untrusted(self._why)

        __getattr__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = __bool__ = _no
        __iter__ = __len__ = __getitem__ = __contains__ = __add__ = __sub__ = __mul__ = __call__ = _no

        def __repr__(self):
            return "<an object of the program's>"

    env = {"__name__": "__main__", "__builtins__": builtins}
    verdict = {"token": job["token"], **info, "results": []}
    for part in ("context", "setup"):
        src = job.get(part) or ""
        if src.strip():
            try:
                exec(compile(src, f"<{part}>", "exec"), env)  # noqa: S102 - the task's own code
            except BaseException:  # noqa: BLE001, S110 - a setup built on the program's classes: asked below
                pass
    ask_names = [n for n in job["names"] if n in job["program"] or n not in env]
    imports = [n for n in ask_names if n not in job["program"] and n in job["stdlib"]]
    for n in imports:
        try:
            env[n] = _import(n)
        except BaseException:  # noqa: BLE001, S110 - the test fails on its own then
            pass
    ask_names = [n for n in ask_names if n not in env or n in job["program"]]
    results = verdict["results"]
    try:
        names = ask(("names", ask_names)).get("names") if ask_names else {}
    except (Gone, ProgramError) as e:
        names, state["gone"] = {}, str(e)
    for n in ask_names:
        d = names.get(n) if isinstance(names, dict) else None
        kind = d.get("kind") if isinstance(d, dict) else None
        if kind == "callable":
            env[n] = Remote(n)
        elif kind == "value":
            try:
                env[n] = decode(d.get("value"))
            except (TypeError, ValueError, RecursionError, MemoryError):
                env[n] = Opaque(f"{n} is not plain data")
        elif kind == "module" and n not in job["program"] and str(d.get("name")).split(".")[0] in job["stdlib"]:
            try:
                env[n] = _import(str(d["name"]))
            except BaseException:  # noqa: BLE001
                env[n] = Opaque(f"{n} is a module the judge cannot import")
        elif kind == "missing":
            env.pop(n, None)
        else:
            env[n] = Opaque(f"{n} is {d.get('type', 'not plain data') if isinstance(d, dict) else 'unknown'}")
    for test, equalities in zip(job["tests"], job["equalities"]):
        state["untrusted"] = None
        rec = {"passed": False}
        if state["gone"]:
            rec.update(gone=state["gone"], error_type="Crashed", message=state["gone"])
            results.append(rec)
            continue
        try:
            exec(compile(test, "<test>", "exec"), env)  # noqa: S102 - the task's test, on the program's answers
            rec["passed"] = True
        except Untrusted:
            rec["untrusted"] = True
        except Gone as e:
            rec.update(gone=str(e), error_type="Crashed", message=str(e))
        except BaseException as e:  # noqa: BLE001 - an assertion, or what the program raised
            rec.update(_error(e))
            et = getattr(e, "program_error_type", None)
            if et:
                rec["error_type"] = et
            if isinstance(e, AssertionError):
                rec.update(_failed_assert(e, test, equalities))
        if rec.get("untrusted") or (rec["passed"] and state["untrusted"]):
            # the judge could not read what the test needed from the program: never a pass
            rec = {"passed": False, "untrusted": True, "message": state["untrusted"]}
        elif state["gone"] and "gone" not in rec:  # the program's process died during the test
            rec = {"passed": False, "gone": state["gone"], "error_type": "Crashed", "message": state["gone"]}
        results.append(rec)
    try:
        os.close(req)  # the program's process sees the end of requests and exits
    except OSError:
        pass
    out.write(_dumps(verdict) + "\n")
    out.flush()


def main():
    # bound here, before any untrusted line: replacing the module's functions later changes nothing
    run_call, dumps, serve = _run_call, _dumps, _serve
    job = globals().pop("JOB", None)  # given with the compiled child (core.BOOTSTRAP), else on stdin
    if job is None:
        job = marshal.loads(sys.stdin.buffer.read())
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
    if not job["limits"]["allow_subprocess"]:
        info["seccomp"] = _no_new_processes()
    _install_hook(job["dir"], job["limits"]["allow_subprocess"])
    del job["limits"]
    if job["role"] == "judge":
        job["token"] = token
        _judge(job, out, info)
        return

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
        rec = run_call(item["call"], env)
        verdict["results"].append(rec)
        if rec.get("exit"):
            break
    out.write(dumps(verdict) + "\n")
    out.flush()
    if job.get("req_fd") is not None:
        serve(env, job["req_fd"], job["resp_fd"])


# run as the sandbox's child (``-c`` source, or the compiled bootstrap); imported, it only lends ``decode_plain``
if __name__ in ("__main__", "__inweights_child__"):
    main()
