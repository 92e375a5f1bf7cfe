"""Rule-defined tasks (docs/papers.md §2): a rule statement, inputs, and the function that applies the rule.

The paper's task is a new operator, ``a @@@ b = a + b + 1``, learned from k examples with operands
1-99 and tested in distribution (1-99) and out of distribution (121-1996). Around it, a seeded family
of invented rules of three kinds lets a tiny model be *prepared* to follow rules shown in its prompt
(the stand-in for a pretrained LLM) on rules that are never the held-out ones:

- ``operator``: ``a <sym> b = <expression in a, b>`` (sums, differences, doubled operands, max/min,
  plus or minus a constant), applied by evaluating the expression with Python's ``ast`` (only numbers,
  ``a``, ``b``, ``+ - *`` and ``max``/``min`` are accepted, so a rule text cannot run code);
- ``string``: a named word transformation (reverse, double every letter, rotate, swap the ends, sort,
  capitalise, append or replace a letter);
- ``label``: a conditional labelling rule (threshold, parity, a letter in the word, the larger of two);
- ``map``: a digit substitution table (a permutation of 0-9) applied to each digit of a string of distinct
  digits, answered digit by digit (``4>1 8>6 2>2``; or, ``map_values: letters``, each digit written as a letter,
  ``4b 8g 2c``): in context a lookup (which the tiny preset had not learned after 5,000 preparation steps: docs/results.md),
  out of context a table k examples only partly reveal (``hypotheses`` counts the tables that fit them). Held-out
  tables are odd permutations and the preparation's even ones, so they never coincide, whatever the seeds.

Every answer comes from applying the rule to the input; nothing is looked up. Units carry the rule
statement as ``instruction``, a pointer (the operator symbol or the rule's name), a pool of
in-distribution training inputs (k examples and k validation examples are drawn from it), 100
in-distribution test inputs, and 100 out-of-distribution test inputs in ``meta["ood_inputs"]``.
"""

from __future__ import annotations

import ast
import math
import random
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from inweights.core.errors import UserError
from inweights.core.schema import Strict
from inweights.core.seeds import derive_seed
from inweights.domains.alpaca import load_alpaca, load_alpaca_pairs  # the paper's files, importable from here
from inweights.domains.base import Domain, Unit, register_domain
from inweights.domains.capabilities import FreshInputs, FreshUnits, Hypotheses


class RulesConfig(Strict):
    """Rule-defined tasks (docs/papers.md §2): the held-out rules of a rule-distillation experiment, and the
    family of invented rules a tiny base is prepared on (never a held-out one)."""

    tasks: list[Literal["arith"]] = Field(default_factory=lambda: ["arith"])  # the paper's a @@@ b = a + b + 1
    n_random: int = Field(0, ge=0)  # further held-out rules drawn from the family
    kinds: list[Literal["operator", "string", "label", "map"]] = Field(
        default_factory=lambda: ["operator", "string", "label"], min_length=1)
    # map rules' values: "digits" ("0>8 1>9 ...", answer "8>0 7>4") or "letters" ("0h 1c ...", answer "8i 7d"):
    # a letter written right after its digit key makes the lookup one ordinary induction step (the key's
    # token, then the token that followed it in the table), which the programs base already does when it copies
    map_values: Literal["digits", "letters"] = "digits"
    # letter tables' entries as "0h" (key first) or "h0" (value first: the key's position can hold the letter
    # before it, so a head that finds the question's digit in the table reads the letter from there)
    map_order: Literal["key_first", "value_first"] = "key_first"
    # the preparation's map tables state between lo and hi of their ten entries (inputs use only those digits):
    # short tables make the key the model must find in its prompt one of a few, a curriculum for the lookup;
    # held-out rules always state all ten
    map_prepare_entries: tuple[int, int] = (10, 10)
    const_max: int = Field(9, ge=0)  # operator rules: the added or subtracted constant
    alphabet_size: int = Field(12, ge=3, le=26)  # string and label rules: letters of the words
    n_train_pool: int = Field(64, ge=2)  # in-distribution inputs the k examples and k validation ones come from
    n_test: int = Field(100, gt=0)  # test inputs, in and out of distribution each
    # the paper's released format instead of generated rules: Alpaca JSON with the rule in "instruction"
    # (train_full), optionally the same examples without it (train_no), and no-rule test records
    alpaca_train: str | None = None
    alpaca_train_no: str | None = None
    alpaca_test: str | None = None  # the no-rule test records (a file whose records hold the rule is refused)
    # the paper's validation files (valid_full / valid_no): validation examples from them instead of from the
    # training pool, so a k-shot training file runs k
    alpaca_valid: str | None = None
    alpaca_valid_no: str | None = None
    # the with-rule test file (test_*_full), aligned with alpaca_test: the teacher's prompt for each test record
    # (without it, the training file's rule, which must then be one)
    alpaca_test_full: str | None = None

    @model_validator(mode="after")
    def _check(self) -> RulesConfig:
        if (self.alpaca_train is None) != (self.alpaca_test is None):
            raise ValueError("alpaca_train and alpaca_test go together")
        if self.alpaca_train is None and (self.alpaca_valid or self.alpaca_valid_no or self.alpaca_test_full):
            raise ValueError("alpaca_valid, alpaca_valid_no and alpaca_test_full need alpaca_train")
        if self.alpaca_valid_no and not self.alpaca_valid:
            raise ValueError("alpaca_valid_no needs alpaca_valid (its with-rule twin)")
        if self.map_order == "value_first" and self.map_values != "letters":
            raise ValueError("map_order: value_first needs map_values: letters")
        lo, hi = self.map_prepare_entries
        if not 1 <= lo <= hi <= 10:
            raise ValueError("map_prepare_entries: [lo, hi] with 1 <= lo <= hi <= 10")
        if self.alpaca_train is None and not self.tasks and self.n_random == 0:
            raise ValueError("no held-out rule: set tasks, n_random or alpaca_train")
        return self


# the paper's held-out task
ARITH_SYMBOL, ARITH_EXPR = "@@@", "a + b + 1"
ID_RANGE, OOD_RANGE = (1, 99), (121, 1996)

OPERATOR_FORMS = ["a + b", "a - b", "2 * a + b", "a + 2 * b", "2 * a - b", "max(a, b)", "min(a, b)", "a + b + b"]
SYMBOL_CHARS = "@#$%&~^!?<>|"
STRING_OPS = {
    "reverse": "write its letters in reverse order",
    "double": "write every letter twice",
    "rotate": "move its first letter to the end",
    "swap_ends": "swap its first and last letters",
    "sort": "sort its letters alphabetically",
    "upper": "write it in capital letters",
    "append": "add the letter {x} at the end",
    "replace": "replace every letter {x} with the letter {y}",
}
LABEL_KINDS = ["threshold", "parity", "contains", "larger"]
LABEL_WORDS = ["yes", "no", "red", "blue", "cat", "dog", "left", "right", "hot", "cold", "up", "down", "sun",
               "moon", "tea", "milk"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"
SYLLABLES = ["ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "vu", "ze", "bo", "di", "fa", "gu", "hi", "jo"]

QUERY_TEMPLATES = {
    "operator": ["Compute {input}.", "What is {input}?", "Evaluate {input}.", "Work out {input}.",
                 "Give the value of {input}."],
    "string": ["Apply {name} to the word {input}.", "What is {name} of {input}?", "Use {name} on {input}.",
               "Transform {input} with {name}."],
    "label": ["Label {input} by {name}.", "What does {name} say for {input}?", "Apply {name} to {input}.",
              "Classify {input} with {name}."],
    "map": ["Apply {name} to {input}.", "Map {input} with {name}.", "What does {name} give for {input}?",
            "Use {name} on the digits {input}."],
}
MAP_LETTERS = "abcdefghij"  # map rules' values when ``map_values: letters``
MAP_ID_LEN, MAP_OOD_LEN = (3, 4), (6, 8)  # map rules: distinct digits per input, in and out of distribution


def permutation_parity(table: str) -> int:
    """0 for an even permutation of the digits, 1 for an odd one (by counting inversions)."""
    return sum(a > b for i, a in enumerate(table) for b in table[i + 1:]) % 2


def with_parity(spec: dict[str, Any], odd: bool) -> dict[str, Any]:
    """A map rule's table made odd (held-out rules) or even (the preparation's) by swapping two entries, so
    no preparation rule ever behaves like a held-out one whatever the seeds. Other kinds pass unchanged."""
    if spec["kind"] != "map" or permutation_parity(spec["table"]) == int(odd):
        return spec
    t = list(spec["table"])
    low = sorted(t)[:2]
    i, j = (0, 1) if t[2:] != sorted(t[2:]) or t[:2] != low[::-1] else (2, 3)  # the swap never gives the identity
    t[i], t[j] = t[j], t[i]
    return {**spec, "table": "".join(t)}


# ------------------------------------------------------------------ safe evaluation of operator rules
_ALLOWED_BINOPS = {ast.Add: lambda x, y: x + y, ast.Sub: lambda x, y: x - y, ast.Mult: lambda x, y: x * y}


def operator_family(const_max: int) -> list[str]:
    """Every operator expression ``random_spec`` can draw: a form, alone or with a constant 1..const_max added
    or subtracted."""
    return [f if c == 0 else f"{f} {sign} {c}" for f in OPERATOR_FORMS for c in range(const_max + 1)
            for sign in (("+",) if c == 0 else ("+", "-"))]


def eval_expression(expr: str, a: int, b: int) -> int:
    """Evaluate an operator rule's right-hand side on integers; anything but + - *, max, min, a, b and
    integer literals is refused (a rule text never runs as code)."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise UserError(f"rule expression '{expr}' is not valid arithmetic") from None

    def ev(node) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _ALLOWED_BINOPS:
            return _ALLOWED_BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name) and node.id in ("a", "b"):
            return a if node.id == "a" else b
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("max", "min")
                and len(node.args) == 2 and not node.keywords):
            f = max if node.func.id == "max" else min
            return f(ev(node.args[0]), ev(node.args[1]))
        raise UserError(f"rule expression '{expr}': only integers, a, b, + - *, max and min are allowed")

    return ev(tree)


def apply_string(op: str, word: str, x: str = "", y: str = "") -> str:
    if op == "reverse":
        return word[::-1]
    if op == "double":
        return "".join(c + c for c in word)
    if op == "rotate":
        return word[1:] + word[:1]
    if op == "swap_ends":
        return word if len(word) < 2 else word[-1] + word[1:-1] + word[0]
    if op == "sort":
        return "".join(sorted(word))
    if op == "upper":
        return word.upper()
    if op == "append":
        return word + x
    if op == "replace":
        return word.replace(x, y)
    raise ValueError(op)


def apply_rule(spec: dict[str, Any], x: Any) -> str:
    """The rule's answer for input ``x`` (the ground truth), as text."""
    kind = spec["kind"]
    if kind == "operator":
        return str(eval_expression(spec["expr"], x[0], x[1]))
    if kind == "string":
        return apply_string(spec["op"], x, spec.get("x", ""), spec.get("y", ""))
    if kind == "map":
        sep = "" if spec.get("values") == "letters" else ">"
        return " ".join(f"{d}{sep}{spec['table'][int(d)]}" for d in x)
    if kind == "label":
        yes, no = spec["labels"]
        lk = spec["label"]
        if lk == "threshold":
            hit = x > spec["t"]
        elif lk == "parity":
            hit = x % 2 == 0
        elif lk == "contains":
            hit = spec["x"] in x
        elif lk == "larger":
            hit = x[0] > x[1]
        else:
            raise ValueError(lk)
        return yes if hit else no
    raise ValueError(kind)


def statement(spec: dict[str, Any], pointer: str) -> str:
    kind = spec["kind"]
    if kind == "operator":
        return f"The operator {pointer} is defined by: a {pointer} b = {spec['expr']}."
    if kind == "string":
        what = STRING_OPS[spec["op"]].format(x=spec.get("x", ""), y=spec.get("y", ""))
        return f"To apply {pointer} to a word, {what}."
    if kind == "map":
        keys = spec.get("keys", "0123456789")  # a preparation table may state only some entries
        if spec.get("values") == "letters":
            if spec.get("order") == "value_first":
                # commas, not spaces: the tokenizer would merge " b" into one token the answer never uses
                return f"{pointer} writes each digit as a letter (the letter, then its digit): " + ",".join(
                    f"{spec['table'][int(d)]}{d}" for d in keys) + "."
            return f"{pointer} writes each digit as a letter: " + " ".join(
                f"{d}{spec['table'][int(d)]}" for d in keys) + "."
        return f"{pointer} replaces each digit: " + " ".join(f"{d}>{spec['table'][int(d)]}" for d in keys) + "."
    yes, no = spec["labels"]
    lk = spec["label"]
    cond = {
        "threshold": f"the number is greater than {spec.get('t')}",
        "parity": "the number is even",
        "contains": f"the word contains the letter {spec.get('x')}",
        "larger": "the first number is larger than the second",
    }[lk]
    return f"Rule {pointer}: if {cond}, answer {yes}; otherwise answer {no}."


@register_domain
class RulesDomain(Domain, FreshUnits, FreshInputs, Hypotheses):
    """The held-out rules of an experiment and the seeded family the preparation stage draws from."""

    name = "rules"
    config_class = RulesConfig
    default_regime = "rule_distill"
    prepared_base = "configs/prepare_rules.yaml"
    unit_noun = "rules"
    instruction_noun = "rule"
    gate_format = "direct"  # answered directly, as in the paper
    decl_templates: ClassVar[list[str]] = ["{name} is a rule.", "Here is the rule {name}.", "The definition of {name}."]
    query_templates: ClassVar[list[str]] = []  # per kind: QUERY_TEMPLATES (see ``question``)

    def __init__(self, cfg, seed: int):
        self.cfg, self.seed = cfg, seed

    # ---------------------------------------------------------------- inputs
    def draw_input(self, spec: dict[str, Any], rng: random.Random, ood: bool) -> Any:
        lo, hi = OOD_RANGE if ood else ID_RANGE
        kind = spec["kind"]
        if kind == "operator" or (kind == "label" and spec["label"] == "larger"):
            return (rng.randint(lo, hi), rng.randint(lo, hi))
        if kind == "label" and spec["label"] in ("threshold", "parity"):
            return rng.randint(lo, hi)
        if kind == "map":
            return "".join(rng.sample("0123456789", rng.randint(*(MAP_OOD_LEN if ood else MAP_ID_LEN))))
        n = rng.randint(7, 9) if ood else rng.randint(3, 6)  # words: longer out of distribution
        letters = LETTERS[: self.cfg.alphabet_size]
        word = "".join(rng.choice(letters) for _ in range(n))
        if spec.get("x") and rng.random() < 0.5 and spec.get("op") != "append":  # the rule's letter half the time
            i = rng.randrange(n)
            word = word[:i] + spec["x"] + word[i + 1:]
        return word

    def format_input(self, unit: Unit, x: Any) -> str:
        spec = unit.meta["spec"]
        if spec["kind"] == "operator":
            return f"{x[0]} {unit.pointer} {x[1]}"
        if spec["kind"] == "map":
            return " ".join(x)
        if isinstance(x, (tuple, list)):
            return f"{x[0]} and {x[1]}"
        return str(x)

    def answer_text(self, unit: Unit, x: Any) -> str:
        return apply_rule(unit.meta["spec"], x)

    def steps(self, unit: Unit, x: Any) -> list[str]:
        return []  # rules are answered directly (as in the paper)

    def score(self, unit: Unit, x: Any, prediction: str | None) -> bool:
        return prediction is not None and prediction.strip() == self.answer_text(unit, x)

    def instruction_text(self, unit: Unit) -> str:
        return f"Rule: {unit.instruction}"

    @staticmethod
    def extract_answer(text: str) -> str | None:
        """The answer the model committed to: after the first ``Answer:``, up to the end of that line (a model
        that runs on past its answer without the end-of-turn token is read by what it answered)."""
        i = text.find("Answer:")
        if i < 0:
            return None
        return text[i + len("Answer:"):].split("Answer:")[0].split("\n")[0].strip() or None

    def question(self, unit: Unit, x: Any, rng: random.Random) -> str:
        t = rng.choice(QUERY_TEMPLATES[unit.family])
        return t.format(name=unit.pointer, input=self.format_input(unit, x))

    def recall(self, unit: Unit, output: str) -> float | None:
        return None

    def chance(self, unit: Unit) -> float:
        return 0.5 if unit.family == "label" else 0.0

    def hypotheses(self, unit: Unit, inputs) -> int | None:
        """How many rules of the unit's family give the same answers as the rule on ``inputs``: a map rule's
        table is fixed on the digits the inputs show, any permutation of the rest fits (counted); an operator's
        family is every form of ``OPERATOR_FORMS`` with a constant up to ``const_max`` added or subtracted
        (``random_spec``'s family, the paper's a + b + 1 among them), each evaluated on the inputs. None for
        the other kinds."""
        if unit.family == "map":
            seen = {d for x in inputs for d in x}
            return math.factorial(10 - len(seen))
        if unit.family == "operator":
            want = [apply_rule(unit.meta["spec"], x) for x in inputs]
            return sum(all(str(eval_expression(e, a, b)) == w for (a, b), w in zip(inputs, want))
                       for e in operator_family(self.cfg.const_max))
        return None

    def covered(self, unit: Unit, inputs, by) -> float | None:
        """Share of ``inputs`` that the inputs ``by`` fully reveal (every digit seen): the test items a
        student who only memorised the k examples' digit pairs could get right. None for other kinds."""
        if unit.family != "map" or not inputs:
            return None
        seen = {d for x in by for d in x}
        return sum(set(x) <= seen for x in inputs) / len(inputs)

    # ---------------------------------------------------------------- rules
    def random_spec(self, rng: random.Random) -> dict[str, Any]:
        kinds = self.cfg.kinds
        kind = rng.choice(kinds)
        if kind == "operator":
            form = rng.choice(OPERATOR_FORMS)
            c = rng.randint(0, self.cfg.const_max)
            expr = form if c == 0 else f"{form} {rng.choice('+-')} {c}"
            return {"kind": "operator", "expr": expr}
        if kind == "string":
            op = rng.choice(list(STRING_OPS))
            letters = LETTERS[: self.cfg.alphabet_size]
            x, y = rng.sample(letters, 2)
            spec = {"kind": "string", "op": op}
            if op in ("append", "replace"):
                spec["x"] = x
            if op == "replace":
                spec["y"] = y
            return spec
        if kind == "map":
            letters = self.cfg.map_values == "letters"
            table = list(MAP_LETTERS if letters else "0123456789")
            while table == sorted(table):  # never the identity
                rng.shuffle(table)
            extra = {"values": "letters"} if letters else {}
            if letters and self.cfg.map_order == "value_first":
                extra["order"] = "value_first"
            return {"kind": "map", "table": "".join(table), **extra}
        lk = rng.choice(LABEL_KINDS)
        spec = {"kind": "label", "label": lk, "labels": rng.sample(LABEL_WORDS, 2)}
        if lk == "threshold":
            spec["t"] = rng.randint(20, 80)
        if lk == "contains":
            spec["x"] = rng.choice(LETTERS[: self.cfg.alphabet_size])
        return spec

    def make_pointer(self, rng: random.Random, kind: str, taken: set[str]) -> str:
        for _ in range(1000):
            if kind == "operator":
                p = "".join(rng.choice(SYMBOL_CHARS) for _ in range(rng.randint(2, 3)))
            else:
                p = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
            if p not in taken and p != ARITH_SYMBOL:
                taken.add(p)
                return p
        raise RuntimeError("rule names exhausted")

    def make_unit(self, rng: random.Random, uid: str, pointer: str, group: str, spec: dict[str, Any],
                  size: int | None = None) -> Unit:
        if group == "prepare":  # preparation: a few inputs, from both ranges (a base applies rules at any size)
            if spec["kind"] == "map":  # and digit maps from one digit (a lookup alone) up to ``size`` (the longest)
                top = size or MAP_OOD_LEN[1]
                lo, hi = self.cfg.map_prepare_entries
                if size is not None and lo < 10:  # a training table stating only some entries, inputs from those
                    # digits (the gate's units, drawn without a size, state all ten like the held-out rules)
                    spec = {**spec, "keys": "".join(sorted(rng.sample("0123456789", rng.randint(lo, hi))))}
                keys = spec.get("keys", "0123456789")
                train = tuple("".join(rng.sample(keys, rng.randint(1, min(top, len(keys))))) for _ in range(8))
            else:
                train = tuple(self.draw_input(spec, rng, rng.random() < 0.5) for _ in range(8))
            return Unit(id=uid, family=spec["kind"], pointer=pointer, instruction=statement(spec, pointer),
                        group=group, train_inputs=train, test_inputs=train[:1],
                        meta={"spec": spec, "ood_inputs": ()})
        train = tuple(self.draw_input(spec, rng, False) for _ in range(self.cfg.n_train_pool))
        test = tuple(self.draw_input(spec, rng, False) for _ in range(self.cfg.n_test))
        ood = tuple(self.draw_input(spec, rng, True) for _ in range(self.cfg.n_test))
        return Unit(id=uid, family=spec["kind"], pointer=pointer, instruction=statement(spec, pointer),
                    group=group, train_inputs=train, test_inputs=test, meta={"spec": spec, "ood_inputs": ood})

    def held_out_statements(self) -> set[str]:
        """Rule texts no preparation example may use (the experiment's, and the paper's arithmetic)."""
        held = self.build()
        return ({u.instruction for u in held} | {ARITH_EXPR}
                | {u.meta["spec"]["table"] for u in held if u.family == "map"})  # a map rule by its table too

    def unit_sizes(self) -> tuple[int, int] | None:
        """Map rules only: the preparation may choose the longest input (``fresh_unit(n_statements=...)``), so its
        drills and warm-up are single-digit lookups before strings; the other kinds draw their own."""
        return (MAP_OOD_LEN[1], MAP_OOD_LEN[1]) if set(self.cfg.kinds) == {"map"} else None

    def fresh_unit(self, rng: random.Random, pool: str = "prepare", taken: set[str] | None = None,
                   n_statements: int | None = None) -> Unit:
        """A rule from the seeded family, never a held-out one (checked by rule text and expression);
        ``n_statements``: map rules' longest input (see ``unit_sizes``)."""
        taken = taken if taken is not None else set()
        banned = self._banned()
        for _ in range(20_000):  # bounded: the family of rules is finite
            spec = with_parity(self.random_spec(rng), odd=False)
            if spec.get("expr") in banned or spec.get("table") in banned:
                continue
            pointer = self.make_pointer(rng, spec["kind"], taken)
            u = self.make_unit(rng, f"{pool}_{len(taken)}", pointer, pool, spec, size=n_statements)
            if u.instruction not in banned:
                return u
        raise UserError("domain.rules: no rule outside the held-out ones found in 20,000 draws; hold out fewer rules")

    def _banned(self) -> set[str]:
        if not hasattr(self, "_banned_cache"):
            self._banned_cache = self.held_out_statements()
        return self._banned_cache

    def build(self) -> list[Unit]:
        """The experiment's held-out rules: the paper's arithmetic (``tasks: [arith]``) and
        ``n_random`` invented rules from the seeded family (group ``held_out``)."""
        rng = random.Random(derive_seed(self.seed, "rules", "build"))
        units: list[Unit] = []
        taken = {ARITH_SYMBOL}
        if "arith" in self.cfg.tasks:
            units.append(self.make_unit(rng, "arith", ARITH_SYMBOL, "held_out", {"kind": "operator",
                                                                                  "expr": ARITH_EXPR}))
        for i in range(self.cfg.n_random):
            spec = with_parity(self.random_spec(rng), odd=True)
            pointer = self.make_pointer(rng, spec["kind"], taken)
            units.append(self.make_unit(rng, f"rule{i}", pointer, "held_out", spec))
        return units


# ------------------------------------------------------------------ the paper's released format


__all__ = ["RulesConfig", "RulesDomain", "apply_rule", "eval_expression", "load_alpaca", "load_alpaca_pairs", "statement"]
