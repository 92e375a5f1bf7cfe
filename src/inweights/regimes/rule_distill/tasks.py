"""Rule distillation's tasks: each held-out rule's example pool and test splits (generated rules, or the paper's
Alpaca files), the k training and k validation examples of a (k, seed) cell, the worked examples a teacher reads,
what k examples leave open of a rule (``cell_diagnostics``), and the export in the paper's released layout."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inweights import views
from inweights.config import ExperimentConfig
from inweights.core import rejects
from inweights.core.errors import UserError
from inweights.core.seeds import derive_seed
from inweights.domains.capabilities import Hypotheses, supports
from inweights.domains.rules import RulesDomain


@dataclass
class Example:
    student: str  # the user turn without the rule
    teacher: str  # the user turn with the rule (and worked examples, if any)
    answer: str  # the assistant turn (gold)
    gold: str  # the answer the scorer compares with
    x: Any = None  # the input (generated rules), for the diagnostics that count what k examples reveal


@dataclass
class Task:
    """One held-out rule: its example pool, its tests, and how answers are read back."""

    name: str
    rule: str
    pool: list[Example]  # in-distribution examples: k for training and k for validation are drawn here
    tests: dict[str, list[Example]] = field(default_factory=dict)  # "id", "ood"
    direct: bool = True  # answers are "Answer: x" (generated rules) or raw text (Alpaca files)
    val: list[Example] | None = None  # validation examples of their own (the paper's valid files)
    rejected: list = field(default_factory=list)  # the loader policy's issues (inweights.core.rejects)
    # the domain's own answer extraction (``Domain.extract_answer``), the one its probes use too
    answer: Callable[[str], str | None] | None = None
    transfer: list[Example] = field(default_factory=list)  # fresh unlabelled inputs (their gold only to report)
    domain: Any = None  # generated rules: the domain and unit, for hypotheses / coverage diagnostics
    unit: Any = None

    def read(self, output: str) -> str | None:
        """The answer in a generation: the domain's extraction, or the whole text (Alpaca files)."""
        if not self.direct:
            return output.strip()
        return (self.answer or RulesDomain.extract_answer)(output)


# --------------------------------------------------------------------------- tasks
def generated_tasks(cfg: ExperimentConfig, domain, units) -> list[Task]:
    """One task per unit of any domain: the rule is the unit's instruction (a rule statement, a program's source,
    a grammar's productions), the teacher reads it before the question, the student reads the question alone.
    Answers in the domain's gate format (rules: direct, as in the paper; programs: a chain of thought then the
    answer); out-of-distribution tests where the domain has them (``meta["ood_inputs"]``)."""
    dc = cfg.distill
    fmt = domain.gate_format
    tasks = []
    for u in units:
        rng = random.Random(derive_seed(cfg.seed, "rules", "prompts", u.id))

        def ex(x, u=u, rng=rng):
            q = views.question(domain, u, x, fmt, rng)
            return Example(student=q, teacher=f"{domain.instruction_text(u)}\n{q}", answer=views.target(domain, u, x, fmt),
                           gold=domain.answer_text(u, x), x=x)

        n = dc.n_eval or len(u.test_inputs)
        tests = {"id": [ex(x) for x in u.test_inputs[:n]]}
        if u.meta.get("ood_inputs"):
            tests["ood"] = [ex(x) for x in u.meta["ood_inputs"][:n]]
        tasks.append(Task(u.id, u.instruction, [ex(x) for x in u.train_inputs], tests,
                          answer=domain.extract_answer, domain=domain, unit=u,
                          transfer=[ex(x) for x in transfer_inputs(cfg, domain, u)]))
    return tasks


def transfer_inputs(cfg: ExperimentConfig, domain, u) -> list[Any]:
    """``distill.transfer_inputs`` fresh in-distribution inputs of a rule, distinct, never a test input nor one
    of the pool the k training and validation examples come from (seeded by the run seed and the rule)."""
    n = cfg.distill.transfer_inputs
    if not n:
        return []
    rng = random.Random(derive_seed(cfg.seed, "rules", "transfer", u.id))
    used = {repr(x) for x in (*u.train_inputs, *u.test_inputs, *u.meta.get("ood_inputs", ()))}
    out: list[Any] = []
    for _ in range(200 * n):  # bounded: a small input space runs out
        x = domain.draw_input(u.meta["spec"], rng, False)
        if repr(x) not in used:
            used.add(repr(x))
            out.append(x)
            if len(out) == n:
                return out
    raise UserError(f"distill.transfer_inputs: rule {u.id} has only {len(out)} in-distribution inputs besides its "
                    f"pool and tests; ask for fewer")


def alpaca_task(cfg: ExperimentConfig) -> Task:
    """The rule task of the paper's released Alpaca files. Validation examples come from ``alpaca_valid`` when
    given (else from the training pool). The student is tested on ``alpaca_test`` (refused if its records hold
    the rule); the teacher's test prompt is the aligned ``alpaca_test_full`` record, or the training file's rule
    when there is exactly one."""
    from inweights.domains.rules import load_alpaca, load_alpaca_pairs

    rc = cfg.domain.section()
    pairs = load_alpaca_pairs(rc.alpaca_train, rc.alpaca_train_no)
    test = load_alpaca(rc.alpaca_test)
    rules = sorted({p["rule"] for p in pairs})

    def user(instr, inp):
        return f"{instr}\n{inp}" if instr and inp else (instr or inp)

    def examples(ps):
        return [Example(user(p["student_instruction"], p["input"]), user(p["rule"], p["input"]), p["output"],
                        p["output"]) for p in ps]

    for i, t in enumerate(test):
        if any(r and r in f"{t['instruction']}\n{t['input']}" for r in rules):
            raise UserError(f"domain.rules.alpaca_test: {rc.alpaca_test} record {i} holds the rule in its prompt; the "
                            "student must be tested without it (give the test_*_no file; the with-rule one is "
                            "alpaca_test_full)")
    if rc.alpaca_test_full:
        teacher_test = load_alpaca_pairs(rc.alpaca_test_full, rc.alpaca_test)
        if len(teacher_test) != len(test):
            raise UserError(f"domain.rules.alpaca_test_full: {len(teacher_test)} usable pairs with alpaca_test's "
                            f"{len(test)} records; the two files must align record by record")
        teacher_prompts = [user(p["rule"], p["input"]) for p in teacher_test]
    elif len(rules) == 1:
        teacher_prompts = [user(rules[0], t["input"]) for t in test]
    else:
        raise UserError(f"domain.rules.alpaca_train: {len(rules)} different rules in {rc.alpaca_train}; give "
                        "alpaca_test_full (the with-rule test file) so each test record's teacher prompt is its own")
    tests = [Example(user(t["instruction"], t["input"]), tp, t["output"], t["output"])
             for t, tp in zip(test, teacher_prompts)]
    val = examples(load_alpaca_pairs(rc.alpaca_valid, rc.alpaca_valid_no)) if rc.alpaca_valid else None
    return Task(Path(rc.alpaca_train).stem, rules[0], examples(pairs), {"test": tests}, direct=False, val=val)


def checked_alpaca_task(cfg: ExperimentConfig, out_dir: Path | None = None, quiet: bool = False) -> Task:
    """``alpaca_task`` under the loader policy: rejected records reported together (and written to
    ``out_dir/rejected.jsonl``), ``data.strict`` makes them an error; every k of ``distill.ks`` checked."""
    with rejects.collecting() as found:
        task = alpaca_task(cfg)
    rejects.settle(found, cfg.data.strict, out_dir, quiet)
    check_ks(task, cfg.distill.ks)
    task.rejected = found
    return task


def check_ks(task: Task, ks: list[int]) -> None:
    """Every k the experiment asks for can be served by the task's files (what ``split`` needs)."""
    for k in ks:
        split(task, k, 0, 0)


def split(task: Task, k: int, seed: int, run_seed: int) -> tuple[list[Example], list[Example]]:
    """k training and k validation examples (fewer validation ones when the pool is short); with validation
    files, the k from the training pool (all of it for a k-shot file) and every validation example."""
    need = k if task.val is not None else k + 1
    if len(task.pool) < need:
        what = "" if task.val is not None else " (the rest are validation examples; give alpaca_valid to use all)"
        raise UserError(f"distill.ks: k = {k} needs at least {need} training examples, task {task.name} has "
                        f"{len(task.pool)}{what}")
    order = list(range(len(task.pool)))
    random.Random(derive_seed(run_seed, "split", task.name, k, seed)).shuffle(order)
    train = [task.pool[i] for i in order[:k]]
    if task.val is not None:
        return train, list(task.val)
    val = [task.pool[i] for i in order[k: 2 * k]]
    return train, val


def with_worked_examples(examples: list[Example], n: int, seed: int, source: list[Example]) -> list[Example]:
    """The teacher's prompt also shows ``n`` training examples (from ``source``, never the example itself)
    worked out, between the rule and the question (the paper shows 3 for arithmetic)."""
    if n == 0:
        return examples
    rng = random.Random(seed)
    out = []
    for e in examples:
        others = [o for o in source if o is not e]
        shown = rng.sample(others, min(n, len(others)))
        worked = "\n".join(f"{o.student} {o.answer}" for o in shown)
        rule, _, q = e.teacher.rpartition("\n")
        out.append(Example(e.student, f"{rule}\nExamples:\n{worked}\n{q}", e.answer, e.gold))
    return out


# --------------------------------------------------------------------------- tensors


def cell_diagnostics(task: Task, train_ex: list[Example]) -> dict[str, Any]:
    """What the k training examples reveal of the rule, computed: how many rules of its family fit them
    (``hypotheses``), and the share of each test split they fully reveal (``covered_<split>``: the items a
    student that only memorised the k examples could get right). Empty where the domain does not count."""
    d, u = task.domain, task.unit
    if d is None or not supports(d, Hypotheses) or any(e.x is None for e in train_ex):
        return {}
    xs = [e.x for e in train_ex]
    h = d.hypotheses(u, xs)
    if h is None:
        return {}
    covered = {f"covered_{sp}": d.covered(u, [e.x for e in exs], xs) for sp, exs in task.tests.items()}
    return {"hypotheses": h, **{key: c for key, c in covered.items() if c is not None}}


# ------------------------------------------------------------------ export (`inweights data rules`)
def export_rules(cfg: ExperimentConfig, out: Path) -> dict[str, Any]:
    """Rule tasks in the paper's released layout (Alpaca JSON lists), per task folder:
    ``train_{full,no}_{k}shot_seed{s}.json`` (the k examples, with and without the rule),
    ``valid_no_{k}shot_seed{s}.json`` (the k validation examples) and ``test_{id,ood}_{full,no}.json``."""
    from inweights.data import _publish, staged
    from inweights.runs import load_units

    with staged(out) as tmp:
        domain, units = load_units(cfg)
        files: dict[str, list[dict[str, str]]] = {}

        def alpaca(exs, full):
            return [{"instruction": e.teacher.rpartition("\n")[0] if full else "", "input": e.student,
                     "output": e.gold} for e in exs]

        for task in generated_tasks(cfg, domain, units):
            for k in cfg.distill.ks:
                for seed in cfg.distill.seeds:
                    train, val = split(task, k, seed, cfg.seed)
                    files[f"{task.name}/train_full_{k}shot_seed{seed}.json"] = alpaca(train, True)
                    files[f"{task.name}/train_no_{k}shot_seed{seed}.json"] = alpaca(train, False)
                    files[f"{task.name}/valid_no_{k}shot_seed{seed}.json"] = alpaca(val, False)
            for sp, exs in task.tests.items():
                files[f"{task.name}/test_{sp}_full.json"] = alpaca(exs, True)
                files[f"{task.name}/test_{sp}_no.json"] = alpaca(exs, False)
        manifest: dict[str, Any] = {"seed": cfg.seed, "domain": cfg.domain.name, "files": {}}
        for name, recs in files.items():
            data = (json.dumps(recs, indent=1, ensure_ascii=False) + "\n").encode()
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
            manifest["files"][name] = {"records": len(recs), "sha256": hashlib.sha256(data).hexdigest()}
        _publish(cfg, tmp, out, manifest)
    return manifest
