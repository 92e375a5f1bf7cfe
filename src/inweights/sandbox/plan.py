"""The parent's side of a verdict: which tests it decides itself, which a judge decides, and the expected values.

No verdict is decided where the program runs. The program's process only ever computes plain values — the
results of the calls the tests make to the program's own functions — and sends them as plain data:

- A test of the form ``assert NAME(...) == EXPECTED`` where ``NAME`` is the program's (MBPP, our generated
  tasks, and each ``assert candidate(...) == ...`` of a HumanEval ``check`` once rewritten with the entry point)
  is a **value test**: the program's process receives only the call, runs it and sends back the value; the
  parent compares it with ``EXPECTED``, evaluated here (``ast.literal_eval``) or, when it is not a literal
  (``set((4, 5))``), by a trusted run in the sandbox that holds no untrusted code.
- Every other test (``math.isclose(f(x), y)``, loops over calls, ``int(f(x)) == 35``, helpers of the task's
  prompt applied to the result) is a **judged test**: it runs in a second sandboxed interpreter, the judge, that
  never loads the program's code. There the program's functions are stand-ins that send their arguments to the
  program's process and return the plain values it sends back; builtins, the prompt's own helpers and the
  standard library are the judge's. Where a test needs more than plain values from the program (an object of
  its own class, say), the judge cannot decide it: the test is ``untrusted`` and never counts as passed.

So the expected values and the verdict's channel never enter the process the program runs in, and nothing the
program does there (frames, exit hooks, threads, tracing, shadowed builtins, patched modules) can turn a wrong
answer into a pass.
"""

from __future__ import annotations

import ast
import builtins
import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any

from inweights.sandbox.child import decode_plain

BUILTINS = frozenset(dir(builtins))
STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))


@dataclass(frozen=True)
class TestSpec:
    text: str  # what the verdict shows: the test, or one rewritten assert of a HumanEval check
    call: str | None = None  # value test: the call the program's process evaluates
    expected: str | None = None  # value test: the expected expression (evaluated by the parent)

    @property
    def is_value(self) -> bool:
        return self.call is not None


@dataclass(frozen=True)
class Names:
    """Who owns the names the tests use: ``trusted`` are defined by the task's own code (the prompt's helpers,
    the setup), ``program`` are the program's to write (the entry points, and the prompt's stubs)."""

    trusted: frozenset[str] = frozenset()
    program: frozenset[str] = frozenset()
    helpers: frozenset[str] = frozenset()  # the trusted code's own functions (a prompt's `poly`, `encode_cyclic`)

    def owned_by_program(self, name: str) -> bool:
        return name in self.program or (name not in self.trusted and name not in BUILTINS)


def _parse(src: str) -> ast.Module | None:
    try:
        with warnings.catch_warnings():  # invalid escape sequences in a dataset's code are not ours to report
            warnings.simplefilter("ignore")
            return ast.parse(src)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _is_stub(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A function of a prompt that the program is to write: a docstring, ``pass`` or ``...`` and nothing else."""
    for stmt in fn.body:
        if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            continue
        return False
    return True


def top_level_names(src: str) -> tuple[set[str], set[str]]:
    """(names the trusted code ``src`` defines at top level, its stub functions)."""
    tree = _parse(src) if src.strip() else None
    defined: set[str] = set()
    stubs: set[str] = set()
    for node in tree.body if tree else ():
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            (stubs if _is_stub(node) else defined).add(node.name)
        elif isinstance(node, ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                defined.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
    return defined, stubs


def task_names(context: str, setup: str, entry_points: tuple[str, ...] = ()) -> Names:
    c_def, c_stub = top_level_names(context)
    s_def, _ = top_level_names(setup)
    program = set(entry_points) | c_stub
    tree = _parse(context) if context.strip() else None
    funcs = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))} if tree else set()
    return Names(trusted=frozenset((c_def | s_def) - program), program=frozenset(program),
                 helpers=frozenset((funcs & c_def) - program))


def free_names(tests: list[str]) -> list[str]:
    """Names the tests read but never bind themselves (in order of first use)."""
    loads: dict[str, None] = {}
    bound: set[str] = set()
    for t in tests:
        tree = _parse(t)
        if tree is None:
            continue
        for n in ast.walk(tree):
            if isinstance(n, ast.Name):
                (loads.setdefault(n.id, None) if isinstance(n.ctx, ast.Load) else bound.add(n.id))
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(n.name)
            elif isinstance(n, ast.arg):
                bound.add(n.arg)
            elif isinstance(n, (ast.Import, ast.ImportFrom)):
                bound.update((a.asname or a.name).split(".")[0] for a in n.names)
            elif isinstance(n, ast.ExceptHandler) and n.name:
                bound.add(n.name)
    return [n for n in loads if n not in bound]


def equalities(test: str) -> dict[int, tuple[str, str]]:
    """line -> (left, right) source of every one-line ``assert LEFT == RIGHT`` in a test, for the judge to show
    both sides of the one that failed."""
    tree = _parse(test)
    out: dict[int, tuple[str, str]] = {}
    for node in ast.walk(tree) if tree else ():
        if isinstance(node, ast.Assert) and node.lineno == node.end_lineno and (pair := _eq_assert(node)):
            out[node.lineno] = (ast.unparse(pair[0]), ast.unparse(pair[1]))
    return out


def _eq_assert(node: ast.stmt) -> tuple[ast.expr, ast.expr] | None:
    if (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1
            and isinstance(node.test.ops[0], ast.Eq)):
        return node.test.left, node.test.comparators[0]
    return None


def _program_call(left: ast.expr, owned, trusted: frozenset[str] = frozenset()) -> bool:
    """``NAME(...)`` with ``NAME`` the program's and arguments that use none of the task's own helpers: what it
    returns is the program's answer (built-ins in the arguments the program may shadow, but that only changes its
    own input). An argument built by a prompt's helper (``decode(encode(s)) == s``) is judged, where the helper is
    the prompt's and not a copy the program could replace with the identity."""
    if not (isinstance(left, ast.Call) and isinstance(left.func, ast.Name) and owned(left.func.id)):
        return False
    args = [*left.args, *(k.value for k in left.keywords)]
    return not any(isinstance(n, ast.Name) and n.id in trusted for a in args for n in ast.walk(a))


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.Name(id=self.new, ctx=node.ctx) if node.id == self.old else node


def _humaneval_check(tree: ast.Module, trusted: frozenset[str] = frozenset()) -> list[TestSpec] | None:
    """HumanEval's ``def check(candidate): assert candidate(...) == ...`` + ``check(f)`` as value tests, when
    the check holds nothing but such asserts (a docstring aside) and the module nothing but constants."""
    body = tree.body
    if not body or not isinstance(body[-1], ast.Expr) or not isinstance(body[-1].value, ast.Call):
        return None
    call = body[-1].value
    if not (isinstance(call.func, ast.Name) and call.func.id == "check" and len(call.args) == 1
            and isinstance(call.args[0], ast.Name) and not call.keywords):
        return None
    entry = call.args[0].id
    checks = [n for n in body[:-1] if isinstance(n, ast.FunctionDef) and n.name == "check"]
    others = [n for n in body[:-1] if n not in checks]
    if len(checks) != 1 or any(not isinstance(n, ast.Assign) for n in others):  # METADATA = {...} only
        return None
    fn = checks[0]
    if len(fn.args.args) != 1 or fn.args.vararg or fn.args.kwarg or fn.args.kwonlyargs:
        return None
    param = fn.args.args[0].arg
    specs = []
    for stmt in fn.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring or a bare string
        pair = _eq_assert(stmt)
        if pair is None or not _program_call(pair[0], lambda n: n == param, trusted):
            return None
        left, right = (_Rename(param, entry).visit(x) for x in pair)
        if any(isinstance(n, ast.Name) and n.id == param for n in ast.walk(right)):
            return None
        text = f"assert {ast.unparse(left)} == {ast.unparse(right)}"
        specs.append(TestSpec(text, ast.unparse(left), ast.unparse(right)))
    return specs or None


def plan_tests(tests: tuple[str, ...] | list[str], names: Names | None = None) -> list[TestSpec]:
    """Each test as value tests where its shape allows, else as one judged test."""
    names = names or Names()
    owned = names.owned_by_program
    out: list[TestSpec] = []
    for t in tests:
        tree = _parse(t)
        if tree is None:
            out.append(TestSpec(t))
            continue
        if (len(tree.body) == 1 and (pair := _eq_assert(tree.body[0])) is not None
                and _program_call(pair[0], owned, names.helpers)):
            out.append(TestSpec(t, ast.unparse(pair[0]), ast.unparse(pair[1])))
            continue
        he = _humaneval_check(tree, names.helpers)
        out.extend(he if he is not None else [TestSpec(t)])
    return out


def literal(expr: str) -> tuple[bool, Any]:
    """(True, value) when ``expr`` is a Python literal (negative numbers, tuples, sets, dicts included)."""
    try:
        return True, ast.literal_eval(expr)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def decode(data: Any) -> Any:
    """The child's plain data back to Python values — the child's own reader (``child.decode_plain``), so the
    parent and the judge read answers the same way."""
    return decode_plain(data)


def same(actual: Any, expected: Any) -> bool:
    """``actual == expected`` as the harnesses' asserts decide it (floats exactly, as ``==`` does; both sides are
    plain data, so no user ``__eq__`` runs here)."""
    try:
        return bool(actual == expected)
    except (TypeError, ValueError, RecursionError):
        return False


def short(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # ints past the digit limit, very deep data
        text = f"<{type(value).__name__}>"
    if isinstance(value, float) and math.isnan(value):
        text = "nan"
    return text if len(text) <= limit else text[:limit] + "..."
