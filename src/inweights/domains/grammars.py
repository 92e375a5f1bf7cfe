"""Random context-free grammars: the instruction is the grammar's rules (BNF text), the behaviour is
generating a string of its language.

Membership is decided by `lark`'s Earley parser, never by re-implementing the grammar: Earley handles
any CFG (ambiguous, left-recursive) without the grammar being massaged into LL/LALR form, lark is
maintained, fast enough for thousands of short strings, and its tree tells which production was used
(each alternative is aliased), which is what rule coverage needs. The BNF text a user supplies is read
by a lark grammar too, so a syntax error comes back with its line and column. (nltk's chart parsers
would also decide membership; lark was picked for the error reporting and the speed.)

BNF as written here::

    S ::= "a" A | B "b"
    A ::= "c" | "a" A

Nonterminals are capitalised identifiers, terminals are double-quoted strings, alternatives are
separated by ``|``; rules for the same nonterminal on several lines are merged; the first rule's
left-hand side is the start symbol; ``#`` starts a comment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from lark import Lark, Transformer, Tree
from lark.exceptions import LarkError, UnexpectedInput
from pydantic import Field, model_validator

from inweights.core.errors import UserError
from inweights.core.schema import Strict
from inweights.domains.base import Domain, Unit, register_domain
from inweights.domains.capabilities import Acceptance, FreshUnits, UnitFiles


class GrammarsConfig(Strict):
    """Random context-free grammars (or the user's own, in BNF files)."""

    n_grammars: int = Field(60, gt=1)
    without_io_fraction: float = Field(0.3333, gt=0, lt=1)
    n_nonterminals: int = Field(3, ge=1, le=20)
    rules_min: int = Field(2, ge=1)  # productions per nonterminal
    rules_max: int = Field(3, ge=1)
    n_terminals: int = Field(4, ge=2, le=26)
    rhs_max: int = Field(3, ge=1, le=8)  # symbols per production
    p_terminal: float = Field(0.6, gt=0, lt=1)  # chance that a right-hand-side symbol is a terminal
    max_depth: int = Field(6, ge=1)  # sampling: past this many levels, finish as soon as possible
    max_len: int = Field(12, ge=1)  # sample strings longer than this are redrawn
    min_distinct: int = Field(4, ge=2)  # non-trivial: at least this many distinct strings in 100 samples
    max_random_accept: float = Field(0.3, gt=0, le=1)  # not Sigma*: random strings mostly rejected
    n_train_samples: int = Field(6, ge=1)  # strings shown per with_io grammar
    n_test_samples: int = Field(4, ge=1)  # generation probes per grammar (and mode, format)
    files: list[str] = Field(default_factory=list)  # the user's BNF grammars (one per file) instead
    # chain of thought: recite the rules (recalled from the name when they are not in the prompt), then
    # the leftmost derivation; false: the derivation alone
    recite: bool = True

    @model_validator(mode="after")
    def _check(self) -> GrammarsConfig:
        if self.rules_min > self.rules_max:
            raise ValueError("rules_min must be <= rules_max")
        if self.files:
            n = len(self.files)
            n_without = max(1, round(n * self.without_io_fraction))  # as GrammarsDomain.build splits them
            if n - n_without < 1:
                raise ValueError(f"files: {n} grammar file(s) with without_io_fraction {self.without_io_fraction} "
                                 f"leave no with_io grammar ({n_without} go without I/O); give more files")
        return self


Symbol = tuple[str, str]  # ("t", "a") terminal, ("n", "A") nonterminal

BNF_META = r"""
start: (rule | _NL)*
rule: NT "::=" alt ("|" alt)* _NL
alt: sym+
?sym: NT -> nonterminal
    | STRING -> terminal
NT: /[A-Z][A-Za-z0-9_]*/
STRING: /"[^"\n]+"/
COMMENT: /#[^\n]*/
_NL: /\r?\n/
%ignore /[ \t]+/
%ignore COMMENT
"""


class _ToRules(Transformer):
    def nonterminal(self, items):
        return ("n", str(items[0]))

    def terminal(self, items):
        return ("t", str(items[0])[1:-1])

    def alt(self, items):
        return tuple(items)

    def rule(self, items):
        return (str(items[0]), list(items[1:]))

    def start(self, items):
        return list(items)


_META = Lark(BNF_META, parser="lalr")


@dataclass(frozen=True)
class Grammar:
    """A CFG: ordered nonterminals (the first is the start symbol) and their productions."""

    rules: tuple[tuple[str, tuple[tuple[Symbol, ...], ...]], ...]

    @property
    def start(self) -> str:
        return self.rules[0][0]

    @property
    def table(self) -> dict[str, tuple[tuple[Symbol, ...], ...]]:
        return dict(self.rules)

    def productions(self) -> list[tuple[str, int]]:
        return [(nt, i) for nt, alts in self.rules for i in range(len(alts))]

    def to_bnf(self) -> str:
        def show(sym: Symbol) -> str:
            return f'"{sym[1]}"' if sym[0] == "t" else sym[1]

        return "\n".join(f"{nt} ::= " + " | ".join(" ".join(show(s) for s in alt) for alt in alts)
                         for nt, alts in self.rules)

    # ------------------------------------------------------------------ analysis
    def heights(self) -> dict[str, int]:
        """Fewest expansion levels each nonterminal needs to reach a terminal string (absent: never)."""
        table, h = self.table, {}
        changed = True
        while changed:
            changed = False
            for nt, alts in table.items():
                for alt in alts:
                    if all(s[0] == "t" or s[1] in h for s in alt):
                        v = 1 + max((h[s[1]] for s in alt if s[0] == "n"), default=0)
                        if v < h.get(nt, 10**9):
                            h[nt] = v
                            changed = True
        return h

    def reachable(self) -> set[str]:
        table, seen, todo = self.table, {self.start}, [self.start]
        while todo:
            for alt in table[todo.pop()]:
                for kind, name in alt:
                    if kind == "n" and name not in seen:
                        seen.add(name)
                        todo.append(name)
        return seen

    def problems(self) -> list[str]:
        """What makes this not a usable grammar, one message per rule, naming the rule."""
        table = self.table
        out = []
        for nt, alts in self.rules:
            for alt in alts:
                for kind, name in alt:
                    if kind == "n" and name not in table:
                        out.append(f"rule {nt}: nonterminal {name} is not defined")
        if out:
            return out
        h = self.heights()
        out += [f"rule {nt}: non-productive (no derivation from {nt} ends in terminals only)"
                for nt, _ in self.rules if nt not in h]
        out += [f"rule {nt}: unreachable from the start symbol {self.start}"
                for nt, _ in self.rules if nt not in self.reachable()]
        return out

    # ------------------------------------------------------------------ semantics
    def sample(self, rng: random.Random, max_depth: int = 8) -> tuple[str, list[str], set[tuple[str, int]]]:
        """(string, leftmost derivation, productions used), expanding from the start symbol; below
        ``max_depth`` levels only the productions that finish soonest are chosen, so it always ends."""
        table, h = self.table, self.heights()

        def finish(alt) -> int:
            return max((h[s[1]] for s in alt if s[0] == "n"), default=0)

        used: set[tuple[str, int]] = set()

        def expand(nt: str, depth: int):
            alts = list(enumerate(table[nt]))
            if depth >= max_depth:
                best = min(finish(a) for _, a in alts)
                alts = [(i, a) for i, a in alts if finish(a) == best]
            i, alt = rng.choice(alts)
            used.add((nt, i))
            return (nt, [s[1] if s[0] == "t" else expand(s[1], depth + 1) for s in alt])

        tree = expand(self.start, 0)
        steps = leftmost_derivation(tree)
        return steps[-1], steps, used

    def rule_name(self, nt: str) -> str:
        """lark's name for a nonterminal: by position (lark rule names are lowercase; user names are not)."""
        return f"n{[r[0] for r in self.rules].index(nt)}"

    def production_of(self, alias: str) -> tuple[str, int] | None:
        """(nonterminal, alternative) for a parse-tree node name ``n<j>__<i>``, else None."""
        if "__" not in alias:
            return None
        j, i = alias[1:].split("__")
        return self.rules[int(j)][0], int(i)

    @cached_property
    def parser(self) -> Lark:
        """An Earley parser of exactly this grammar; each alternative is aliased, so a tree names
        the productions used."""
        lines = ["start: " + self.rule_name(self.start)]
        for nt, alts in self.rules:
            parts = [" ".join(f'"{s[1]}"' if s[0] == "t" else self.rule_name(s[1]) for s in alt) +
                     f" -> {self.rule_name(nt)}__{i}" for i, alt in enumerate(alts)]
            lines.append(f"{self.rule_name(nt)}: " + "\n    | ".join(parts))
        return Lark("\n".join(lines), parser="earley", lexer="dynamic", ambiguity="resolve")

    def parse(self, text: str) -> set[tuple[str, int]] | None:
        """The productions a derivation of ``text`` uses, or None when ``text`` is not in the language."""
        if not text:
            return None
        try:
            tree = self.parser.parse(text)
        except (UnexpectedInput, LarkError):
            return None
        return {p for node in tree.iter_subtrees() if (p := self.production_of(str(node.data)))}

    def accepts(self, text: str) -> bool:
        return self.parse(text) is not None


def leftmost_derivation(tree: tuple[str, list[Any]]) -> list[str]:
    """Sentential forms of a derivation tree ``(nonterminal, children)``, expanding the leftmost
    nonterminal each step: from the start symbol to the string."""
    form: list[Any] = [tree]
    steps = [tree[0]]
    while any(isinstance(x, tuple) for x in form):
        j = next(k for k, x in enumerate(form) if isinstance(x, tuple))
        form = form[:j] + list(form[j][1]) + form[j + 1 :]
        steps.append("".join(x if isinstance(x, str) else x[0] for x in form))
    return steps


def parse_bnf(text: str, source: str = "grammar") -> Grammar:
    """A Grammar from BNF text; any problem is a UserError naming the line or the rule."""
    try:
        rules = _ToRules().transform(_META.parse(text.strip() + "\n"))
    except UnexpectedInput as e:
        raise UserError(f"{source}: syntax error at line {e.line}, column {e.column}") from None
    if not rules:
        raise UserError(f"{source}: no rules")
    merged: dict[str, list[tuple[Symbol, ...]]] = {}
    for nt, alts in rules:
        merged.setdefault(nt, [])
        for alt in alts:
            if alt not in merged[nt]:
                merged[nt].append(alt)
    g = Grammar(tuple((nt, tuple(alts)) for nt, alts in merged.items()))
    problems = g.problems()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{source}: {problems[0]}{more}")
    return g


def random_grammar(rng: random.Random, n_nonterminals: int, rules_min: int, rules_max: int, terminals: str,
                   rhs_max: int, p_terminal: float) -> Grammar:
    """One random CFG (not yet checked: see GrammarsDomain for the checks and retries)."""
    names = ["S"] + [chr(ord("A") + i) for i in range(n_nonterminals - 1)]
    rules = []
    for nt in names:
        alts: list[tuple[Symbol, ...]] = []
        for _ in range(rng.randint(rules_min, rules_max)):
            for _try in range(20):
                n = rng.randint(1, rhs_max)
                alt = tuple(("t", rng.choice(terminals)) if rng.random() < p_terminal else ("n", rng.choice(names))
                            for _ in range(n))
                if alt not in alts and alt != (("n", nt),):
                    alts.append(alt)
                    break
        rules.append((nt, tuple(alts)))
    return Grammar(tuple(rules))


def random_strings_like(rng: random.Random, lengths: list[int], alphabet: str, n: int) -> list[str]:
    """The random baseline: strings over the grammar's terminals with the language's length distribution."""
    return ["".join(rng.choice(alphabet) for _ in range(rng.choice(lengths))) for _ in range(n)]



DECL_TEMPLATES = [
    "The grammar {name} has these rules:",
    "Here are the production rules of the grammar {name}:",
    "Grammar {name} is defined as follows:",
    "The language {name} is generated by this grammar:",
    "Below is the BNF of {name}.",
    "{name} is the context-free grammar:",
    "Rules of {name}:",
    "This is the grammar called {name}:",
    "For reference, the grammar {name} reads:",
    "Definition of the grammar {name}:",
    "Our catalogue lists {name} with the rules below.",
    "The strings of {name} are those derived by:",
]

QUERY_TEMPLATES = [
    "Write a string generated by the grammar {name}.",
    "Give one string of the language {name}.",
    "Produce a sentence of grammar {name}.",
    "Generate a string that {name} derives.",
    "Show a string belonging to {name}.",
    "Derive a string from the grammar {name}.",
    "Name a word in the language of {name}.",
    "Output a valid string of {name}.",
    "What is a string the grammar {name} accepts?",
    "Sample a string from {name}.",
    "Write down something {name} can generate.",
    "Give an example string of the grammar {name}.",
]


@register_domain
class GrammarsDomain(Domain, FreshUnits, Acceptance, UnitFiles):
    """Seeded random CFGs (or the user's BNF files); ground truth = lark's Earley parser."""

    name = "grammars"
    config_class = GrammarsConfig
    prepared_base = "configs/prepare_grammars.yaml"
    unit_noun = "grammars"
    instruction_noun = "rules"
    fresh_units_slow = True
    decl_templates = DECL_TEMPLATES
    query_templates = QUERY_TEMPLATES

    def __init__(self, cfg, seed: int):
        self.cfg = cfg
        self.seed = seed
        self._grammars: dict[str, Grammar] = {}

    # ----------------------------------------------------------------- generation
    def terminals(self) -> str:
        return "abcdefghijklmnopqrstuvwxyz"[: self.cfg.n_terminals]

    def grammar(self, unit) -> Grammar:
        g = self._grammars.get(unit.instruction)  # keyed by the rules: fresh units may share a name
        if g is None:
            if len(self._grammars) > 20000:
                self._grammars.clear()
            g = self._grammars[unit.instruction] = parse_bnf(unit.instruction, unit.id)
        return g

    def usable(self, g: Grammar, rng: random.Random) -> dict[str, Any] | None:
        """Checks a grammar is productive, reachable, sampleable within max_len and non-trivial (not a
        single string, not Sigma*); returns what the unit keeps about it, or None."""
        if g.problems():
            return None
        samples = []
        for _ in range(100):
            text = g.sample(rng, self.cfg.max_depth)[0]
            if len(text) <= self.cfg.max_len:
                samples.append(text)
        if len(samples) < 50 or len(set(samples)) < self.cfg.min_distinct:
            return None
        alphabet = "".join(sorted({c for t in samples for c in t} | set(self.terminals()[:2])))
        randoms = random_strings_like(rng, [len(t) for t in samples], alphabet, 200)
        random_accept = sum(map(g.accepts, randoms)) / len(randoms)
        if random_accept > self.cfg.max_random_accept:
            return None
        return {"samples": samples, "random_accept": random_accept, "alphabet": alphabet}

    def _draw(self, g: Grammar, rng: random.Random, n: int, distinct: bool) -> list[str]:
        out: list[str] = []
        for _ in range(n * 50):
            text = g.sample(rng, self.cfg.max_depth)[0]
            if len(text) <= self.cfg.max_len and (not distinct or text not in out):
                out.append(text)
                if len(out) == n:
                    break
        return out

    def random_usable(self, rng: random.Random, seen: set[str] = frozenset()) -> tuple[Grammar, dict[str, Any]]:
        """A random grammar that passes ``usable`` and whose BNF is not in ``seen``."""
        c = self.cfg
        for _try in range(2000):
            g = random_grammar(rng, c.n_nonterminals, c.rules_min, c.rules_max, self.terminals(), c.rhs_max,
                               c.p_terminal)
            info = self.usable(g, rng)
            if info is not None and g.to_bnf() not in seen:
                return g, info
        raise UserError("domain.grammars: no usable grammar found in 2000 tries; loosen the settings "
                        "(more rules_max, fewer terminals, larger max_len)")

    def make_unit(self, rng: random.Random, uid: str, pointer: str, group: str, g: Grammar,
                  info: dict[str, Any]):
        c = self.cfg
        train = self._draw(g, rng, c.n_train_samples, distinct=True) if group != "without_io" else []
        held = self._draw(g, rng, c.n_test_samples, distinct=False)
        return Unit(
            id=uid, family="cfg", pointer=pointer, instruction=g.to_bnf(), group=group,
            train_inputs=tuple(train), test_inputs=tuple(range(c.n_test_samples)),
            meta={"reference": held, "random_accept": info["random_accept"],
                  "lengths": [len(t) for t in info["samples"]], "alphabet": info["alphabet"],
                  "productions": len(g.productions())})

    def read_units(self, path) -> list[Unit]:
        raise UserError("domain.data_file: only programs units are read back; for grammars use "
                        "domain.grammars.files (BNF)")

    def fresh_unit(self, rng: random.Random, pool: str = "prepare", taken: set[str] | None = None):
        """A grammar outside any experiment (for the preparation stage), named from ``pool``."""
        from inweights.domains.programs import make_name

        g, info = self.random_usable(rng)
        name = make_name(rng, pool, taken if taken is not None else set())
        return self.make_unit(rng, f"{pool}-{name}", name, "prepare", g, info)

    def build(self) -> list:
        from inweights.core.seeds import derive_seed
        from inweights.domains.programs import make_name

        c = self.cfg
        rng = random.Random(derive_seed(self.seed, "grammars", "build"))
        taken: set[str] = set()
        seen: set[str] = set()
        units = []
        sources = [(f, parse_bnf(_read(f), f)) for f in c.files]
        n = len(sources) if sources else c.n_grammars
        n_without = max(1, round(n * c.without_io_fraction))
        for i in range(n):
            group = "with_io" if i < n - n_without else "without_io"
            if sources:
                g, info = sources[i][1], self.usable(sources[i][1], rng)
                if info is None:
                    raise UserError(f"{sources[i][0]}: grammar unusable (a single string, close to every string, "
                                    f"or no strings within max_len {c.max_len})")
            else:
                g, info = self.random_usable(rng, seen)
            seen.add(g.to_bnf())
            units.append(self.make_unit(rng, f"g{i:04d}", make_name(rng, "experiment", taken), group, g, info))
        return units

    def instruction_text(self, unit) -> str:
        return f"```bnf\n{unit.instruction}\n```"

    # ----------------------------------------------------------------- semantics
    def format_input(self, unit, x: Any) -> str:
        return ""

    def statements(self, unit) -> list[str]:
        return unit.instruction.splitlines()

    def answer_text(self, unit, x: Any) -> str:
        """A training input is a string of the language; a probe index stands for 'any string', for which
        a reference string drawn from the grammar is shown."""
        return x if isinstance(x, str) else unit.meta["reference"][x % len(unit.meta["reference"])]

    def steps(self, unit, x: Any) -> list[str]:
        """Chain of thought: the rules re-typed (with ``recite``), then the leftmost derivation of the
        string, recovered from lark's parse tree."""
        text = self.answer_text(unit, x)
        rules = self.statements(unit) if self.cfg.recite else []
        return [*rules, " -> ".join(self.derivation(unit, text))]

    def recall(self, unit, output: str) -> float | None:
        """Share of the rule lines re-typed exactly, in order, before the derivation (None without ``recite``)."""
        if not self.cfg.recite:
            return None
        truth = self.statements(unit)
        got = [ln.strip() for ln in output.splitlines() if "::=" in ln]
        return sum(1 for i, s in enumerate(truth) if i < len(got) and got[i] == s) / len(truth)

    def derivation(self, unit, text: str) -> list[str]:
        g = self.grammar(unit)
        tree = g.parser.parse(text)
        t = g.table

        def convert(node):
            nt, i = g.production_of(str(node.data))
            alt = t[nt][i]
            subs = iter([c for c in node.children if isinstance(c, Tree)])  # anonymous tokens are dropped
            return (nt, [s[1] if s[0] == "t" else convert(next(subs)) for s in alt])

        return leftmost_derivation(convert(tree.children[0]))

    def score(self, unit, x: Any, prediction: str | None) -> bool:
        return prediction is not None and self.grammar(unit).accepts(prediction.strip())

    def productions_used(self, unit, prediction: str | None) -> set[tuple[str, int]]:
        if prediction is None:
            return set()
        return self.grammar(unit).parse(prediction.strip()) or set()

    def chance(self, unit) -> float:
        """Acceptance of random strings over the grammar's symbols with its strings' length distribution."""
        return unit.meta["random_accept"]


def _read(path: str) -> str:
    from pathlib import Path

    from inweights.core.io import read_text

    return read_text(Path(path), "domain.grammars.files:")
