"""The parent's side of a verdict: which tests it can decide itself, and their expected values.

A test of the form ``assert CALL == EXPECTED`` (MBPP, our generated tasks, and each ``assert candidate(...) ==
...`` of a HumanEval ``check`` once rewritten with the entry point) is a **value test**: the child receives only
``CALL``, runs it and sends back the value as plain data; the parent compares it with ``EXPECTED``, evaluated
here (``ast.literal_eval``) or, when it is not a literal (``set((4, 5))``), by a trusted run in the sandbox that
holds no untrusted code. So the expected values never enter the process the program runs in, and nothing the
program does there can turn a wrong value into a pass. Any other test runs as an assert inside the child and
its verdict is flagged ``trusted: false``.
"""

from __future__ import annotations

import ast
import math
import warnings
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TestSpec:
    text: str  # what the verdict shows: the test, or one rewritten assert of a HumanEval check
    call: str | None = None  # value test: the call the child evaluates
    expected: str | None = None  # value test: the expected expression (evaluated by the parent)

    @property
    def is_value(self) -> bool:
        return self.call is not None


def _eq_assert(node: ast.stmt) -> tuple[ast.expr, ast.expr] | None:
    if (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1
            and isinstance(node.test.ops[0], ast.Eq)):
        return node.test.left, node.test.comparators[0]
    return None


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.Name(id=self.new, ctx=node.ctx) if node.id == self.old else node


def _humaneval_check(tree: ast.Module) -> list[TestSpec] | None:
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
        if pair is None:
            return None
        left, right = (_Rename(param, entry).visit(x) for x in pair)
        if any(isinstance(n, ast.Name) and n.id == param for n in ast.walk(right)):
            return None
        text = f"assert {ast.unparse(left)} == {ast.unparse(right)}"
        specs.append(TestSpec(text, ast.unparse(left), ast.unparse(right)))
    return specs or None


def plan_tests(tests: tuple[str, ...] | list[str]) -> list[TestSpec]:
    """Each test as value tests where its shape allows, else as one in-child assert."""
    out: list[TestSpec] = []
    for t in tests:
        try:
            with warnings.catch_warnings():  # invalid escape sequences in a dataset's tests are the child's concern
                warnings.simplefilter("ignore")
                tree = ast.parse(t)
        except SyntaxError:
            out.append(TestSpec(t))
            continue
        if len(tree.body) == 1 and (pair := _eq_assert(tree.body[0])) is not None:
            out.append(TestSpec(t, ast.unparse(pair[0]), ast.unparse(pair[1])))
            continue
        he = _humaneval_check(tree)
        out.extend(he if he is not None else [TestSpec(t)])
    return out


def literal(expr: str) -> tuple[bool, Any]:
    """(True, value) when ``expr`` is a Python literal (negative numbers, tuples, sets, dicts included)."""
    try:
        return True, ast.literal_eval(expr)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def decode(data: Any) -> Any:
    """The child's plain data back to Python values (tags: l, t, s, fs, d)."""
    if isinstance(data, dict) and len(data) == 1:
        (tag, items), = data.items()
        if tag == "l":
            return [decode(x) for x in items]
        if tag == "t":
            return tuple(decode(x) for x in items)
        if tag == "s":
            return {decode(x) for x in items}
        if tag == "fs":
            return frozenset(decode(x) for x in items)
        if tag == "d":
            return {decode(k): decode(v) for k, v in items}
        if tag == "c":
            return complex(float(items[0]), float(items[1]))
    if isinstance(data, (dict, list)):
        raise TypeError("not the child's plain-data encoding")
    return data


def same(actual: Any, expected: Any) -> bool:
    """``actual == expected`` as the harnesses' asserts decide it (floats exactly, as ``==`` does; both sides are
    plain data, so no user ``__eq__`` runs here)."""
    try:
        return bool(actual == expected)
    except (TypeError, ValueError, RecursionError):
        return False


def short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    if isinstance(value, float) and math.isnan(value):
        text = "nan"
    return text if len(text) <= limit else text[:limit] + "..."
