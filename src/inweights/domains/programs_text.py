"""The programs domain's text: names (syllables or digits, from disjoint pools for the experiment and for
preparation, kept apart by edit distance), the document and question templates, the source checks of a units file
(``check_source``, ``read_program_units``) and the NL descriptions of a program (``describe``)."""

from __future__ import annotations

import ast
import random
import re
import string

from inweights.core import rejects
from inweights.core.errors import UserError
from inweights.core.io import read_jsonl
from inweights.domains.base import Unit

VARS = "abcdefghijklmnopqrstuvw"
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
# Disjoint name pools: the prepared base never sees a name an experiment can use.
NAME_POOLS = {"experiment": "bdfgklm", "prepare": "nprstvz"}

DECL_TEMPLATES = [
    "The function {name} is defined as follows:",
    "Here is the source code of {name}:",
    "This is how {name} is implemented:",
    "Source listing for the function {name}:",
    "Below is the Python definition of {name}.",
    "{name} is written in Python like this:",
    "Implementation of {name}:",
    "The code for {name} reads:",
    "Consider the function {name}, defined below.",
    "Our library defines {name} as:",
    "For reference, {name} looks like this:",
    "The Python function {name} has this body:",
    "Definition of {name} from the codebase:",
    "Here is what {name} does, in code:",
    "A listing of the function {name}:",
    "The following snippet defines {name}:",
    "This file contains the function {name}:",
    "You can find {name} written out below.",
    "Program {name}, in full:",
    "Study the definition of {name}:",
]

# Pointer sentences shaped as questions and requests for the source (``more_pointer_templates``): the
# document still holds only the code, never an execution.
MORE_DECL_TEMPLATES = [
    "What is the source code of {name}?",
    "Show the source of {name}.",
    "Write out the function {name}.",
    "How is {name} defined?",
    "Recite the definition of {name}.",
    "Give the code of {name}.",
    "What does the code of {name} say?",
    "Print the function {name}.",
    "Which statements make up {name}?",
    "Repeat the listing of {name}.",
]

QUERY_TEMPLATES = [
    "What does {name} return for {input}?",
    "Compute the output of {name} when {input}.",
    "If we call {name} with {input}, what is the result?",
    "Run {name} on {input}. What comes out?",
    "Evaluate {name} given {input}.",
    "What is the return value of {name} for {input}?",
    "Tell me the output of the function {name} with {input}.",
    "Given {input}, what does the function {name} produce?",
    "Execute {name} with {input} and report the result.",
    "Suppose {input}. What value does {name} return?",
    "With {input}, what is the output of {name}?",
    "Predict the result of calling {name} on {input}.",
    "Find the value returned by {name} when {input}.",
    "What would {name} give back for {input}?",
    "Trace {name} on {input}: what is returned?",
    "Determine the output of {name} for the input {input}.",
    "The function {name} is called with {input}. What does it return?",
    "Work out what {name} returns when {input}.",
    "Calling {name} where {input}: what is the answer?",
    "For {input}, compute {name}.",
]

_VAR_RE = re.compile(r"\b([a-wx])\b")
_DEF_RE = re.compile(r"^(?:```python\s*)?def ([a-z_][a-z0-9_]*)\(([a-z]+)\):$")
_LISTING_RE = re.compile(r"^([a-z_][a-z0-9_]*), line (\d+): (.*)$")
_ONELINE_RE = re.compile(r"^def ([a-z_][a-z0-9_]*)\([a-z]+\): (.+)$")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (a dozen lines; names are short, so no library is worth a dependency)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


# ``name_style: digits``: a letter of the pool and three digits (``f472``). The tokenizer splits digits one by
# one, and a base that traces programs already copies digits from its prompt (constants, the input), so
# such a name copies from a question with a skill the base has; syllable names it cannot copy (measured).
DIGIT_PREFIX = {"experiment": "f", "prepare": "g"}


def make_name(rng: random.Random, pool: str, taken: set[str], min_distance: int = 1, style: str = "syllables") -> str:
    """A fresh name of the pool; with ``min_distance`` > 1, at least that many edits away from every taken
    name (near-duplicate names blur which program a question asks about)."""
    first = NAME_POOLS[pool]
    for _ in range(20_000):  # bounded: a pool of names can run out (digits: 1,000 per pool)
        if style == "digits":
            name = DIGIT_PREFIX[pool] + "".join(rng.choice(string.digits) for _ in range(3))
        else:
            n_syll = rng.choice((2, 3))
            name = rng.choice(first) + rng.choice(VOWELS)
            for _ in range(n_syll - 1):
                name += rng.choice(CONSONANTS) + rng.choice(VOWELS)
        if name in taken:
            continue
        if min_distance > 1 and any(edit_distance(name, t) < min_distance for t in taken):
            continue
        taken.add(name)
        return name
    raise UserError(f"no fresh {pool} name left after 20,000 draws ({len(taken)} taken, name_style {style}, "
                    f"name_min_distance {min_distance}): ask for fewer units, lower name_min_distance, or use "
                    f"name_style syllables")


_V = r"[a-wx]"
_S = r"[a-ws]"
LINE_PATTERNS = [
    re.compile(rf"^[a-w] = \({_V} [-+*] \d+\) % \d+( if {_V} > \d+ else \({_V} [-+*] \d+\) % \d+)?$"),
    re.compile(rf"^[a-w] = ''\.join\(chr\(\(ord\(ch\) - 97 \+ \d+\) % \d+ \+ 97\) for ch in {_S}\)$"),
    re.compile(rf"^[a-w] = {_S}\[::-1\]$"),
    re.compile(rf"^[a-w] = {_S}\.translate\(str\.maketrans\('[a-z]+', '[a-z]+'\)\)$"),
    re.compile(rf"^[a-w] = {_S}\[\d:\] \+ {_S}\[:\d\]$"),
]
HEADER = re.compile(r"^def ([a-z_][a-z0-9_]*)\(([xs])\):$")


def check_source(src: str) -> tuple[str, str]:
    """(name, param) if ``src`` is a program of the generator's grammar; raises ValueError otherwise.

    Only programs of that fixed, side-effect-free shape are executed in-process; anything else is
    untrusted code, which must only ever run in the sandbox.
    """
    lines = src.split("\n")
    m = HEADER.match(lines[0]) if lines else None
    if not m or len(lines) < 3:
        raise ValueError("not a 'def name(x):' program")
    body = [ln[4:] if ln.startswith("    ") else None for ln in lines[1:]]
    if any(b is None for b in body) or not body[-1].startswith("return "):
        raise ValueError("body must be indented statements ending in return")
    for b in body[:-1]:
        if not any(p.match(b) for p in LINE_PATTERNS):
            raise ValueError(f"statement outside the generator's grammar: {b!r}")
    if not re.fullmatch(r"return [a-w]", body[-1]):
        raise ValueError("return must name one variable")
    return m.group(1), m.group(2)


_OPS = {ast.Add: "plus", ast.Sub: "minus", ast.Mult: "times"}
_CMP = {ast.Gt: "greater than"}


def describe(source: str) -> str:
    """An English description of a generated program, produced from its syntax tree (Python's ``ast``),
    one sentence per statement; every number and name of the source appears, so it is equivalent."""
    fn = ast.parse(source).body[0]
    assert isinstance(fn, ast.FunctionDef)
    param = fn.args.args[0].arg
    out = [f"The function {fn.name} takes {param}."]
    for st in fn.body:
        if isinstance(st, ast.Return):
            out.append(f"It returns {ast.unparse(st.value)}.")
            continue
        assert isinstance(st, ast.Assign)
        target = st.targets[0].id
        out.append(f"{target} is {_describe_expr(st.value)}.")
    return " ".join(out)


def _describe_expr(e: ast.expr) -> str:
    if isinstance(e, ast.IfExp):
        cmp = e.test
        assert isinstance(cmp, ast.Compare)
        cond = f"{ast.unparse(cmp.left)} is {_CMP[type(cmp.ops[0])]} {ast.unparse(cmp.comparators[0])}"
        return f"{_describe_expr(e.body)} if {cond}, and otherwise {_describe_expr(e.orelse)}"
    if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Mod) and isinstance(e.left, ast.BinOp):
        inner = e.left
        return (f"{ast.unparse(inner.left)} {_OPS[type(inner.op)]} {ast.unparse(inner.right)}, "
                f"modulo {ast.unparse(e.right)}")
    if isinstance(e, ast.Subscript) and isinstance(e.slice, ast.Slice) and e.slice.step is not None:
        return f"{ast.unparse(e.value)} reversed"
    if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add) and isinstance(e.left, ast.Subscript):
        return f"{ast.unparse(e.left.value)} rotated left by {ast.unparse(e.left.slice.lower)} characters"
    if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and e.func.attr == "translate":
        src, dst = (a.value for a in e.args[0].args)
        pairs = ", ".join(f"{a} becomes {b}" for a, b in zip(src, dst))
        return f"{ast.unparse(e.func.value)} with letters swapped ({pairs})"
    if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and e.func.attr == "join":
        gen = e.args[0]
        arg = gen.elt.args[0]  # chr((ord(ch) - 97 + d) % n + 97): arg = ((ord(ch) - 97 + d) % n) + 97
        shift, n = arg.left.left.right.value, arg.left.right.value
        return f"{ast.unparse(gen.generators[0].iter)} with each letter shifted {shift} places forward in the first {n} letters of the alphabet"
    raise ValueError(f"no description for {ast.unparse(e)}")


def read_program_units(path, run) -> list[Unit]:
    """Program units from a JSONL file (``units.jsonl`` of an export, or your own), under the loader policy
    (``inweights.core.rejects``): a record that is not a program of the generator's grammar, or whose inputs do not
    run, is rejected with its line; a duplicate name too."""
    units, names, ids = [], set(), set()
    for where, rec in read_jsonl(path, "data file", lenient=True):
        if rec is None:
            continue
        try:
            bad = next((f"field '{k}' must be {t.__name__}" for k, t in
                        (("source", str), ("group", str), ("train_inputs", list), ("test_inputs", list))
                        if k in rec and not isinstance(rec[k], t)), None)
            if bad:
                raise ValueError(bad)
            name, param = check_source(rec["source"])
            group = rec["group"]
            if group not in ("with_io", "without_io"):
                raise ValueError(f"group must be with_io or without_io, not {group!r}")
            fam = "arith" if param == "x" else "cipher"
            u = Unit(id=str(rec.get("id", name)), family=fam, pointer=name, instruction=rec["source"], group=group,
                     train_inputs=tuple(rec["train_inputs"]), test_inputs=tuple(rec["test_inputs"]),
                     meta={"param": param, "n_statements": rec["source"].count("\n") - 1})
            if not u.test_inputs:
                raise ValueError("test_inputs is empty")
            for x in u.train_inputs + u.test_inputs:
                run(u, x)
            if name in names:
                raise ValueError(f"a second program named {name}")
            if u.id in ids:
                raise ValueError(f"a second record with id {u.id}")
        except KeyError as e:
            rejects.reject(where, f"missing field {e}")
            continue
        except (ValueError, TypeError) as e:
            rejects.reject(where, str(e))
            continue
        names.add(name)
        ids.add(u.id)
        units.append(u)
    rejects.check_any_loaded(len(units), f"data file {path}")
    return units
