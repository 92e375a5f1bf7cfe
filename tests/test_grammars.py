"""Random CFGs: generator guarantees, membership by lark's Earley parser, derivations, user BNF files."""

import random
from itertools import pairwise

import pytest

from inweights.cli import main
from inweights.config import GrammarsConfig
from inweights.domains.grammars import GrammarsDomain, parse_bnf, random_strings_like


@pytest.fixture(scope="module")
def built():
    d = GrammarsDomain(GrammarsConfig(n_grammars=16), 3)
    return d, d.build()


def test_generated_grammars_are_usable_and_non_trivial(built):
    d, units = built
    assert sum(u.group == "without_io" for u in units) == 5
    assert len({u.instruction for u in units}) == len(units) and len({u.pointer for u in units}) == len(units)
    for u in units:
        g = d.grammar(u)
        assert g.problems() == []  # productive, reachable, every nonterminal defined
        rng = random.Random(0)
        strings = [g.sample(rng, d.cfg.max_depth)[0] for _ in range(60)]
        assert len(set(strings)) >= 2  # not a single string
        assert all(g.accepts(s) for s in strings)  # the parser accepts what the sampler derives
        randoms = random_strings_like(rng, [len(s) for s in strings], u.meta["alphabet"], 100)
        assert sum(map(g.accepts, randoms)) < 100  # not Sigma*
        assert 0 <= d.chance(u) <= d.cfg.max_random_accept
        assert all(g.accepts(s) for s in u.train_inputs + tuple(u.meta["reference"]))
        assert (u.group == "with_io") == bool(u.train_inputs)


def test_same_seed_same_grammars():
    a = GrammarsDomain(GrammarsConfig(n_grammars=6), 5).build()
    b = GrammarsDomain(GrammarsConfig(n_grammars=6), 5).build()
    assert a == b and [u.meta for u in a] == [u.meta for u in b]


def test_derivation_is_a_valid_leftmost_derivation(built):
    d, units = built
    for u in units[:6]:
        g = d.grammar(u)
        for s in u.meta["reference"]:
            steps = d.derivation(u, s)
            assert steps[0] == g.start and steps[-1] == s
            for before, after in pairwise(steps):  # each step rewrites the leftmost nonterminal
                i = next(k for k, c in enumerate(before) if c.isupper())
                nt = before[i]
                assert any(after == before[:i] + "".join(x[1] for x in alt) + before[i + 1 :] for alt in g.table[nt])


def test_user_names_with_underscores_and_digits():
    g = parse_bnf('Expr_1 ::= "x" | "(" Expr_1 Op_2 Expr_1 ")"\nOp_2 ::= "+" | "-"\n')
    assert g.accepts("(x+(x-x))") and not g.accepts("(x+)")
    assert g.parse("(x-x)") == {("Expr_1", 0), ("Expr_1", 1), ("Op_2", 1)}


def test_membership_and_rule_coverage():
    g = parse_bnf('S ::= "a" S "b" | "c"\n')  # a^n c b^n: not regular, so a real parser is needed
    assert g.accepts("c") and g.accepts("aacbb") and not g.accepts("aacb") and not g.accepts("")
    assert g.parse("c") == {("S", 1)} and g.parse("acb") == {("S", 0), ("S", 1)}


def test_variety_scores_penalise_one_memorised_string(built):
    from inweights.eval.probes import variety

    d, units = built
    u = units[0]
    same = {("c", u.id): [u.meta["reference"][0]] * len(u.test_inputs)}
    varied = {("c", u.id): [d.grammar(u).sample(random.Random(i), 6)[0] for i in range(len(u.test_inputs))]}
    v1, v2 = variety(d, [u], "c", same), variety(d, [u], "c", varied)
    assert v1["distinct"] == 1 / len(u.test_inputs) and v2["distinct"] >= v1["distinct"]
    assert v2["coverage"] >= v1["coverage"] > 0


@pytest.mark.parametrize("text, problem", [
    ('S ::= "a" X\n', "rule S: nonterminal X is not defined"),
    ('S ::= "a" | A\nA ::= "b" A\n', "rule A: non-productive"),
    ('S ::= "a" B\nB ::= ::= "b"\n', "syntax error at line 2"),
])
def test_bad_user_grammar_file_is_one_line(root, tmp_path, capsys, text, problem):
    f = tmp_path / "mine.bnf"
    f.write_text(text)
    ok = tmp_path / "ok.bnf"
    ok.write_text('S ::= "a" S "b" | "c" | "d" S\n')
    code = main(["validate", str(root / "configs/smoke.yaml"), "--set", "domain.name=grammars",
                 "--set", f"domain.grammars.files=[{ok}, {f}]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(f) in err[0] and problem in err[0]


def test_user_grammar_files_are_units(tmp_path):
    files = []
    for i, text in enumerate(['S ::= "a" S "b" | "c" | "d" S\n', 'S ::= A A\nA ::= "x" | "y" A | "z"\n']):
        files.append(tmp_path / f"g{i}.bnf")
        files[-1].write_text(text)
    units = GrammarsDomain(GrammarsConfig(files=[str(f) for f in files], without_io_fraction=0.5), 0).build()
    assert [u.group for u in units] == ["with_io", "without_io"]
    assert units[1].instruction == 'S ::= A A\nA ::= "x" | "y" A | "z"'


def test_chain_of_thought_recites_the_rules_then_derives(built):
    d, units = built
    u = units[0]
    lines = d.steps(u, 0)
    assert lines[:-1] == u.instruction.splitlines() and lines[-1].startswith("S -> ")
    assert lines[-1].endswith(" -> " + d.answer_text(u, 0)) or lines[-1] == d.answer_text(u, 0)
    perfect = "\n".join(lines) + "\nAnswer: x"
    assert d.recall(u, perfect) == 1.0
    wrong_first = perfect.replace(lines[0], lines[0] + ' | "z"', 1)
    assert d.recall(u, wrong_first) == (len(lines) - 2) / (len(lines) - 1)
    assert d.recall(u, "S -> a\nAnswer: a") == 0.0
    plain = GrammarsDomain(GrammarsConfig(n_grammars=16, recite=False), 3)
    assert plain.steps(u, 0) == lines[-1:] and plain.recall(u, perfect) is None


def test_fresh_grammars_for_preparation_are_outside_the_experiment(built):
    _, units = built
    d = GrammarsDomain(GrammarsConfig(), 0)
    rng = random.Random(1)
    fresh = [d.fresh_unit(rng) for _ in range(5)]
    assert all(u.group == "prepare" and d.grammar(u).problems() == [] for u in fresh)
    assert all(d.score(u, x, d.answer_text(u, x)) for u in fresh for x in u.train_inputs + u.test_inputs)
    # names come from the preparation pool, whose first letters no experiment name uses
    assert not {u.pointer[0] for u in fresh} & {u.pointer[0] for u in units}


@pytest.mark.slow
def test_prepared_base_of_another_domain_is_one_line(root, capsys):
    from inweights.config import load_config

    assert load_config(root / "configs/pbb_grammars.yaml").model.prepared_base == "configs/prepare_grammars.yaml"
    code = main(["validate", str(root / "configs/pbb_grammars.yaml"),
                 "--set", "model.prepared_base=configs/prepare_tiny.yaml"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "prepares the programs domain" in err[0]
