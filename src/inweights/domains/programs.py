"""Random Python programs: arithmetic functions and string ciphers.

Every program is real Python source. Its answer on an input comes from executing that source; its
chain-of-thought steps come from executing it one statement at a time, so both are the code's own
semantics. Each statement assigns a fresh variable (``x -> a -> b ...``): every code line then has a
unique label, which ../shared/MEASURED.md found makes copying code into a trace learnable.
"""

from __future__ import annotations

import random
import string
from typing import Any, Literal

from pydantic import Field, model_validator

from inweights.core.errors import UserError
from inweights.core.schema import Strict
from inweights.core.seeds import derive_seed
from inweights.domains.base import Domain, Unit, register_domain
from inweights.domains.capabilities import FreshUnits, Listings, PBBPool, Signatures, UnitFiles
from inweights.domains.programs_text import (  # the names, templates and checks, importable from here as before
    _DEF_RE,
    _LISTING_RE,
    _ONELINE_RE,
    _VAR_RE,
    DECL_TEMPLATES,
    MORE_DECL_TEMPLATES,
    NAME_POOLS,
    QUERY_TEMPLATES,
    VARS,
    check_source,
    describe,
    edit_distance,
    make_name,
    read_program_units,
)


class ProgramsConfig(Strict):
    """Difficulty and size of the random-program domain."""

    n_programs: int = Field(200, gt=1)
    without_io_fraction: float = Field(0.25, gt=0, lt=1)
    families: list[Literal["arith", "cipher"]] = Field(default_factory=lambda: ["arith"], min_length=1)
    min_statements: int = Field(2, ge=1, le=20)
    max_statements: int = Field(4, ge=1, le=20)
    ops: list[Literal["+", "-", "*"]] = Field(default_factory=lambda: ["+", "-"], min_length=1)
    modulus: int = Field(10, ge=3, le=1000)
    const_max: int = Field(9, ge=1)
    input_max: int = Field(9, ge=1)
    cond_prob: float = Field(0.25, ge=0, le=1)
    n_train_inputs: int = Field(6, ge=1)
    n_test_inputs: int = Field(4, ge=1)
    # validation inputs per program, disjoint from train and test (what stage gates measure on, never test)
    n_val_inputs: int = Field(0, ge=0)
    string_min_len: int = Field(3, ge=1)
    string_max_len: int = Field(5, ge=1)
    alphabet_size: int = Field(8, ge=3, le=26)
    # ablation: the instruction shown as source code, or as an English description of the same program
    instruction: Literal["code", "nl"] = "code"
    cipher_ops: list[Literal["shift", "reverse", "swap", "rotate"]] = Field(
        default_factory=lambda: ["shift", "reverse", "swap", "rotate"], min_length=1)
    # ablation: functions defined as g(f(x)) of two without_io programs (group "composed")
    n_compositions: int = Field(0, ge=0)
    # chain of thought: "trace" copies each statement then evaluates it; "recite" first re-types the whole
    # function exactly as a document shows it (``recital``: the code block, or the line-keyed listing),
    # then traces it -- the model states what it recalls before using it (Physics of LMs 3.2)
    # (``header``: only the ``def NAME(x):`` line, then the trace -- the name written right before the statements)
    cot: Literal["trace", "recite", "header"] = "trace"
    recital: Literal["code", "lines"] = "code"
    # document augmentation (Physics of LMs 3.1): each decl occurrence draws one of these renderings of the
    # same source -- "code" (the code block), "lines" (a line-keyed listing, the name on every line), "shuffled"
    # (the listing in a random order), "oneline" (``def f(x): a = ...; return a``); only the groups in
    # ``augment_groups`` are augmented, the others always read the first rendering
    renderings: list[Literal["code", "lines", "shuffled", "oneline"]] = Field(
        default_factory=lambda: ["code"], min_length=1)
    augment_groups: list[Literal["with_io", "without_io", "prepare"]] = Field(
        default_factory=lambda: ["with_io", "without_io", "prepare"])
    # pointer sentences of more shapes (questions and requests for the source; still only the code follows)
    more_pointer_templates: bool = False
    # names of an experiment's programs differ pairwise by at least this many edits (1 = merely distinct)
    name_min_distance: int = Field(1, ge=1, le=3)
    # syllables (``godeke``) or digits (``f472``: a pool letter and three digits, which copy like numbers)
    name_style: Literal["syllables", "digits"] = "syllables"

    @model_validator(mode="after")
    def _check(self) -> ProgramsConfig:
        if self.min_statements > self.max_statements:
            raise ValueError("min_statements must be <= max_statements")
        n_in = self.n_train_inputs + self.n_test_inputs + self.n_val_inputs
        if "arith" in self.families and n_in > self.input_max + 1:
            raise ValueError(
                f"n_train_inputs + n_test_inputs + n_val_inputs ({n_in}) exceeds the "
                f"{self.input_max + 1} distinct inputs 0..input_max"
            )
        if self.string_min_len > self.string_max_len:
            raise ValueError("string_min_len must be <= string_max_len")
        n_without = round(self.n_programs * self.without_io_fraction)  # as ProgramsDomain.build splits them
        if n_without in (0, self.n_programs):
            raise ValueError(f"n_programs {self.n_programs} x without_io_fraction {self.without_io_fraction} leaves "
                             f"no {'without_io' if n_without == 0 else 'with_io'} program; raise n_programs or "
                             f"change the fraction")
        if self.n_compositions and n_without < 2:
            raise ValueError(f"n_compositions needs at least two without_io programs to compose (there are "
                             f"{n_without}); raise n_programs or without_io_fraction")
        return self


@register_domain
class ProgramsDomain(Domain, FreshUnits, PBBPool, Listings, Signatures, UnitFiles):
    """Seeded generator of arithmetic and cipher programs, with execution-based ground truth."""

    name = "programs"
    config_class = ProgramsConfig
    prepared_base = "configs/prepare_tiny.yaml"
    unit_noun = "programs"
    instruction_noun = "code"
    distractors = True
    query_templates = QUERY_TEMPLATES

    def __init__(self, cfg: ProgramsConfig, seed: int):
        self.cfg = cfg
        self.seed = seed
        self._compiled: dict[str, Any] = {}
        self.decl_templates = DECL_TEMPLATES + (MORE_DECL_TEMPLATES if cfg.more_pointer_templates else [])

    # ----------------------------------------------------------------- the Domain protocol
    def fresh_unit(self, rng: random.Random, pool: str = "prepare", taken: set[str] | None = None,
                   n_statements: int | None = None) -> Unit:
        return self.sample_unit(rng, pool, pool, taken, n_statements=n_statements)

    def unit_sizes(self) -> tuple[int, int]:
        return self.cfg.min_statements, self.cfg.max_statements

    def pool_unit(self, rng: random.Random, group: str, taken: set[str], uid: str) -> Unit:
        return self.sample_unit(rng, group, "prepare", taken, uid=uid)

    @classmethod
    def has_validation_inputs(cls, section: ProgramsConfig) -> bool:
        return section.n_val_inputs > 0

    def why_empty(self, group: str) -> str:
        if group == "composed" and not self.cfg.n_compositions:
            return "(domain.programs.n_compositions is 0: no compositions are made)"
        return super().why_empty(group)

    def read_units(self, path) -> list[Unit]:
        """Program units from a JSONL file (``units.jsonl`` of an export, or your own): ``read_program_units``."""
        return read_program_units(path, self.run)

    # ----------------------------------------------------------------- generation
    def build(self) -> list[Unit]:
        """The experiment's units: ``n_programs`` programs, the last ``without_io`` share without I/O."""
        rng = random.Random(derive_seed(self.seed, "programs", "build"))
        taken: set[str] = set()
        bodies: set[str] = set()
        units: list[Unit] = []
        n_without = round(self.cfg.n_programs * self.cfg.without_io_fraction)
        n_with = self.cfg.n_programs - n_without
        for i in range(self.cfg.n_programs):
            group = "with_io" if i < n_with else "without_io"
            for _try in range(2000):  # distinct bodies, so no two pointers name the same behaviour
                unit = self.sample_unit(rng, group, "experiment", taken, uid=f"p{i:04d}")
                body = unit.instruction.split("\n", 1)[1]
                if body not in bodies:
                    bodies.add(body)
                    break
                taken.discard(unit.pointer)
            else:
                raise UserError(f"domain.programs: cannot draw {self.cfg.n_programs} distinct programs with these "
                                f"settings (only {len(bodies)} found); allow more statements, ops or constants")
            units.append(unit)
        return units + self._compositions(rng, units, taken)

    def _compositions(self, rng: random.Random, units: list[Unit], taken: set[str]) -> list[Unit]:
        """Ablation (b): new functions defined only as a call of two ``without_io`` programs,
        ``h(x) = g(f(x))``; probed in weights, they need both parts recalled and chained."""
        n = self.cfg.n_compositions
        parts = [u for u in units if u.group == "without_io" and u.family == "arith"]
        if n and len(parts) < 2:
            raise UserError(f"domain.programs.n_compositions: composing needs at least two without_io arith "
                            f"programs (there are {len(parts)}); raise n_programs or add the arith family")
        out, pairs = [], set()
        for i in range(n):
            while True:
                f, g = rng.sample(parts, 2)
                if (f.id, g.id) not in pairs or len(pairs) >= len(parts) * (len(parts) - 1):
                    pairs.add((f.id, g.id))
                    break
            name = make_name(rng, "experiment", taken, self.cfg.name_min_distance, self.cfg.name_style)
            out.append(Unit(id=f"c{i:04d}", family="compose", pointer=name,
                            instruction=f"def {name}(x):\n    return {g.pointer}({f.pointer}(x))", group="composed",
                            train_inputs=(), test_inputs=f.test_inputs,
                            meta={"param": "x", "parts": [f.instruction, g.instruction],
                                  "n_statements": f.meta["n_statements"] + g.meta["n_statements"]}))
        return out

    def signature(self, unit: Unit) -> str:
        """What a unit's first statement does, whatever its names: units with the same signature
        behave alike on their first step (e.g. the same cipher shift)."""
        return self.statements(unit)[0].split(" = ", 1)[1].replace(unit.meta["param"], "_", 1)

    def _parts(self, unit: Unit) -> list[Unit]:
        return [Unit(id=src.split("(")[0][4:], family="arith", pointer=src.split("(")[0][4:], instruction=src,
                     group="without_io", meta={"param": "x"}) for src in unit.meta["parts"]]

    def sample_unit(
        self,
        rng: random.Random,
        group: str,
        pool: str,
        taken: set[str] | None = None,
        uid: str | None = None,
        n_statements: int | None = None,
    ) -> Unit:
        cfg = self.cfg
        family = rng.choice(cfg.families)
        taken = set() if taken is None else taken
        name = make_name(rng, pool, taken, cfg.name_min_distance if pool == "experiment" else 1, cfg.name_style)
        k = n_statements or rng.randint(cfg.min_statements, cfg.max_statements)
        if family == "arith":
            param, lines = "x", self._arith_lines(rng, k)
            inputs = list(range(cfg.input_max + 1))
            rng.shuffle(inputs)
            need = cfg.n_train_inputs + cfg.n_test_inputs
            train, test = inputs[: cfg.n_train_inputs], inputs[cfg.n_train_inputs : need]
            val = inputs[need : need + cfg.n_val_inputs]
        else:
            param, lines = "s", self._cipher_lines(rng, k)
            seen: set[str] = set()
            drawn: list[str] = []
            while len(drawn) < cfg.n_train_inputs + cfg.n_test_inputs:
                n = rng.randint(cfg.string_min_len, cfg.string_max_len)
                s = "".join(rng.choice(string.ascii_lowercase[: cfg.alphabet_size]) for _ in range(n))
                if s not in seen:
                    seen.add(s)
                    drawn.append(s)
            train, test = drawn[: cfg.n_train_inputs], drawn[cfg.n_train_inputs :]
            val = []
            while len(val) < cfg.n_val_inputs:  # drawn after the others, so train/test do not depend on it
                n = rng.randint(cfg.string_min_len, cfg.string_max_len)
                s = "".join(rng.choice(string.ascii_lowercase[: cfg.alphabet_size]) for _ in range(n))
                if s not in seen:
                    seen.add(s)
                    val.append(s)
        last = lines[-1].split(" = ", 1)[0]
        source = f"def {name}({param}):\n" + "".join(f"    {ln}\n" for ln in lines) + f"    return {last}"
        return Unit(
            id=uid or name,
            family=family,
            pointer=name,
            instruction=source,
            group=group,
            train_inputs=tuple(train),
            test_inputs=tuple(test),
            meta={"n_statements": k, "param": param, **({"val_inputs": tuple(val)} if val else {})},
        )

    def _arith_lines(self, rng: random.Random, k: int) -> list[str]:
        cfg, m = self.cfg, self.cfg.modulus
        lines, prev = [], "x"
        for i in range(k):
            var = VARS[i]
            op, c = rng.choice(cfg.ops), rng.randint(1, cfg.const_max)
            expr = f"({prev} {op} {c}) % {m}"
            if rng.random() < cfg.cond_prob:
                op2, c2 = rng.choice(cfg.ops), rng.randint(1, cfg.const_max)
                t = rng.randint(1, m - 2)
                expr = f"{expr} if {prev} > {t} else ({prev} {op2} {c2}) % {m}"
            lines.append(f"{var} = {expr}")
            prev = var
        return lines

    def _cipher_lines(self, rng: random.Random, k: int) -> list[str]:
        alpha = string.ascii_lowercase[: self.cfg.alphabet_size]
        n = len(alpha)
        lines, prev = [], "s"
        for i in range(k):
            var = VARS[i]
            kind = rng.choice(self.cfg.cipher_ops)
            if kind == "shift":
                d = rng.randint(1, n - 1)
                expr = f"''.join(chr((ord(ch) - 97 + {d}) % {n} + 97) for ch in {prev})"
            elif kind == "reverse":
                expr = f"{prev}[::-1]"
            elif kind == "swap":
                src = "".join(sorted(rng.sample(alpha, 3)))
                perm = list(src)
                while "".join(perm) == src:
                    rng.shuffle(perm)
                expr = f"{prev}.translate(str.maketrans('{src}', '{''.join(perm)}'))"
            else:
                r = rng.randint(1, 2)
                expr = f"{prev}[{r}:] + {prev}[:{r}]"
            lines.append(f"{var} = {expr}")
            prev = var
        return lines

    # ----------------------------------------------------------------- instruction text
    def instruction_text(self, unit: Unit) -> str:
        """What decl / in_context views show: the source (``instruction: code``) or an English
        description generated from the same source (``instruction: nl``), an equivalent instruction."""
        if unit.family == "compose":
            if self.cfg.instruction == "nl":
                f, g = self._parts(unit)
                return f"The function {unit.pointer} takes x and returns {g.pointer} applied to {f.pointer} of x."
            return f"```python\n{unit.instruction}\n```"
        if self.cfg.instruction == "nl":
            return describe(unit.instruction)
        return f"```python\n{unit.instruction}\n```"

    def render(self, unit: Unit, style: str, rng: random.Random | None = None) -> str:
        """The same source in one of the document renderings (``ProgramsConfig.renderings``)."""
        if style == "code" or unit.family == "compose" or self.cfg.instruction == "nl":
            return self.instruction_text(unit)
        lines = unit.instruction.splitlines()
        body = [ln.strip() for ln in lines[1:]]
        if style == "oneline":
            return f"{lines[0]} " + "; ".join(body)
        listing = [f"{unit.pointer}, line {i}: {st}" for i, st in enumerate(body, 1)]
        if style == "shuffled":
            assert rng is not None, "the shuffled listing needs an rng"
            rng.shuffle(listing)
        return "\n".join(listing)

    def document_text(self, unit: Unit, rng: random.Random) -> str:
        """What one decl occurrence shows: a rendering drawn per occurrence for augmented groups, the first
        rendering otherwise (so the ``without_io`` "one instruction" can stay one document)."""
        styles = self.cfg.renderings
        if len(styles) == 1 or unit.group not in self.cfg.augment_groups:
            return self.render(unit, styles[0], rng)
        return self.render(unit, rng.choice(styles), rng)

    # ----------------------------------------------------------------- recital (cot: recite)
    def recital_lines(self, unit: Unit) -> list[str]:
        """The chain of thought's first part under ``cot: recite``: the function re-typed as a document shows it."""
        style = self.cfg.recital if unit.family != "compose" else "code"
        return self.render(unit, style).splitlines()

    def parse_listing(self, output: str) -> tuple[str | None, list[str]]:
        """(name, statements in line order) of the first function a text writes out, in any rendering: a
        ``def NAME(p):`` header with indented lines (code) or with ``; ``-separated ones (oneline), or
        ``NAME, line i: ...`` lines (lines, shuffled: put back in line order). (None, []) when there is none."""
        lines = output.splitlines()
        for i, ln in enumerate(lines):
            stripped = ln.strip()
            m = _LISTING_RE.match(stripped)
            if m:
                name, keyed = m.group(1), {}
                for nxt in lines[i:]:
                    mm = _LISTING_RE.match(nxt.strip())
                    if not mm or mm.group(1) != name:
                        break
                    keyed.setdefault(int(mm.group(2)), mm.group(3).strip())
                return name, [keyed[k] for k in sorted(keyed)]
            m = _DEF_RE.match(stripped)
            if m:
                body = []
                for nxt in lines[i + 1:]:
                    if not nxt.startswith("    "):
                        break
                    body.append(nxt.strip())
                return m.group(1), body
            m = _ONELINE_RE.match(stripped)
            if m:
                return m.group(1), [st.strip() for st in m.group(2).split("; ")]
        return None, []

    def statements_recalled(self, unit: Unit, got: list[str], with_return: bool = False) -> float | None:
        """Share of the unit's statements (without ``return`` unless asked) that ``got`` has at the same index."""
        truth = self.statements(unit)
        idx = [i for i, st in enumerate(truth) if with_return or not st.startswith("return ")]
        if not idx:
            return None
        return sum(1 for i in idx if i < len(got) and got[i] == truth[i]) / len(idx)

    # ----------------------------------------------------------------- semantics
    def _function(self, unit: Unit):
        fn = self._compiled.get(unit.instruction)
        if fn is None:
            # The source was generated by this module from a fixed grammar, so it is trusted code;
            # untrusted code (model output, user programs) only ever runs in the sandbox.
            namespace: dict[str, Any] = {}
            for src in unit.meta.get("parts", []):  # a composition calls its parts by name
                exec(compile(src, "<part>", "exec"), namespace)  # noqa: S102
            exec(compile(unit.instruction, f"<{unit.pointer}>", "exec"), namespace)  # noqa: S102
            fn = self._compiled[unit.instruction] = namespace[unit.pointer]
        return fn

    def run(self, unit: Unit, x: Any) -> str:
        """The true output: execute the program's source on ``x``."""
        return str(self._function(unit)(x))

    def format_input(self, unit: Unit, x: Any) -> str:
        return f"{unit.meta['param']} = {x!r}"

    def cot_layout(self) -> str:
        return self.cfg.cot

    def statements(self, unit: Unit) -> list[str]:
        if unit.family == "compose":
            return [s for part in self._parts(unit) for s in self.statements(part)]
        return [ln.strip() for ln in unit.instruction.splitlines()[1:]]

    def recall(self, unit: Unit, output: str) -> float:
        """Share of the program's statements re-typed exactly, in order, at the start of trace lines."""
        truth = self.statements(unit)
        got = [ln.split(" -> ", 1)[0].strip() for ln in output.splitlines() if " -> " in ln]
        return sum(1 for i, s in enumerate(truth) if i < len(got) and got[i] == s) / len(truth)

    def statement_chance(self) -> float:
        """Chance of guessing one arithmetic statement (op and constant) when its shape is known."""
        return 1.0 / (len(self.cfg.ops) * self.cfg.const_max)

    def steps(self, unit: Unit, x: Any) -> list[str]:
        """Chain-of-thought lines: each statement copied, then evaluated by executing it; under ``cot: recite``
        the whole function re-typed first, as a document shows it."""
        trace = self._trace(unit, x)
        if self.cfg.cot == "header":
            return [unit.instruction.splitlines()[0]] + trace
        return self.recital_lines(unit) + trace if self.cfg.cot == "recite" else trace

    def _trace(self, unit: Unit, x: Any) -> list[str]:
        if unit.family == "compose":  # the first part's trace, then the second's on its output
            f, g = self._parts(unit)
            mid = self._function(f)(x)
            last = f"return {g.pointer}({f.pointer}(x)) -> {self.run(unit, x)}"
            return [*self._trace(f, x), *self._trace(g, mid)[:-1], last]
        env: dict[str, Any] = {unit.meta["param"]: x}
        out = []
        for stmt in self.statements(unit):
            if stmt.startswith("return "):
                var = stmt.split()[1]
                out.append(f"{stmt} -> {self._show(env[var])}")
                continue
            var, expr = stmt.split(" = ", 1)
            exec(stmt, {}, env)  # noqa: S102 - generated statement, see _function
            value = env[var]
            if unit.family == "arith":
                out.append(f"{stmt} -> {self._arith_work(expr, env)} = {value}")
            else:
                out.append(f"{stmt} -> {self._show(value)}")
        return out

    def _arith_work(self, expr: str, env: dict[str, Any]) -> str:
        """The expression with values substituted; for a conditional, the test and the branch taken."""
        subst = _VAR_RE.sub(lambda m: str(env[m.group(1)]), expr)
        if " if " not in expr:
            return subst
        then, rest = subst.split(" if ", 1)
        cond, other = rest.split(" else ", 1)
        taken = eval(cond)
        return f"{cond} is {taken} -> {then if taken else other}"

    @staticmethod
    def _show(value: Any) -> str:
        return value if isinstance(value, str) else str(value)

    def answer_text(self, unit: Unit, x: Any) -> str:
        return self.run(unit, x)

    def score(self, unit: Unit, x: Any, prediction: str | None) -> bool:
        return prediction is not None and prediction.strip() == self.run(unit, x)

    def chance(self, unit: Unit) -> float:
        """Accuracy of guessing uniformly among possible outputs (what 'near chance' means)."""
        if unit.family == "arith":
            return 1.0 / self.cfg.modulus
        return 0.0


__all__ = ["DECL_TEMPLATES", "NAME_POOLS", "QUERY_TEMPLATES", "ProgramsConfig", "ProgramsDomain", "check_source", "describe",
           "edit_distance", "make_name"]
