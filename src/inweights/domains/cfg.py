"""Context-free grammars for the grammars domain: BNF read by a lark grammar, membership by lark's Earley parser,
derivations, random grammars and random strings.

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

from lark import Lark, Transformer
from lark.exceptions import LarkError, UnexpectedInput

from inweights.core.errors import UserError

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
