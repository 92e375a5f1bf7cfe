import random

import pytest

from inweights import views
from inweights.config import ProgramsConfig
from inweights.domains.programs import DECL_TEMPLATES, QUERY_TEMPLATES, ProgramsDomain


def _domain(**kw):
    return ProgramsDomain(ProgramsConfig(**kw), seed=7)


def test_ground_truth_is_execution_and_steps_agree():
    d = _domain(families=["arith", "cipher"], n_programs=120, ops=["+", "-", "*"], cond_prob=0.5)
    for u in d.build():
        ns = {}
        exec(u.instruction, ns)  # noqa: S102 - the reference: Python itself
        fn = ns[u.pointer]
        for x in u.train_inputs + u.test_inputs:
            assert d.run(u, x) == str(fn(x))
            steps = d.steps(u, x)
            assert len(steps) == u.meta["n_statements"] + 1
            assert steps[-1].endswith(f"-> {fn(x)}")
            # every arithmetic step's shown work evaluates to the value it reports
            for line in steps[:-1]:
                if u.family == "arith":
                    work = line.split(" -> ")[-1]
                    expr, value = work.rsplit(" = ", 1)
                    assert eval(expr) == int(value)


def test_build_is_deterministic_and_split():
    a, b = _domain().build(), _domain().build()
    assert [u.instruction for u in a] == [u.instruction for u in b]
    assert len({u.pointer for u in a}) == len(a)
    assert len({u.instruction.split("\n", 1)[1] for u in a}) == len(a)
    groups = [u.group for u in a]
    assert groups.count("without_io") == 50 and groups.count("with_io") == 150
    for u in a:
        assert not set(u.train_inputs) & set(u.test_inputs)
    c = ProgramsDomain(ProgramsConfig(), seed=8).build()
    assert [u.instruction for u in a] != [u.instruction for u in c]


def test_difficulty_is_configurable():
    units = _domain(min_statements=5, max_statements=6, ops=["*"], cond_prob=0.0, modulus=7).build()
    for u in units:
        body = u.instruction.splitlines()[1:-1]
        assert 5 <= len(body) <= 6
        assert all(" * " in ln and "% 7" in ln and " if " not in ln for ln in body)


def test_conditionals_appear_and_are_traced():
    units = _domain(cond_prob=1.0).build()
    u = units[0]
    assert " if " in u.instruction
    line = _domain(cond_prob=1.0).steps(u, u.test_inputs[0])[0]
    assert " is True -> " in line or " is False -> " in line


def test_templates_are_paraphrased_and_prepare_names_disjoint():
    assert len(set(DECL_TEMPLATES)) >= 10 and len(set(QUERY_TEMPLATES)) >= 10
    d = _domain()
    exp = {u.pointer for u in d.build()}
    rng = random.Random(0)
    prep = {d.sample_unit(rng, "prepare", "prepare").pointer for _ in range(500)}
    assert not exp & prep


def test_views_hide_the_code_in_weights_and_show_it_in_context():
    d = _domain()
    u = d.build()[0]
    rng = random.Random(0)
    x = u.test_inputs[0]
    ex = views.execution(d, u, x, "cot", rng)
    ic = views.in_context(d, u, x, "cot", rng)
    dc = views.decl(d, u, rng)
    assert u.instruction not in ex["messages"][0]["content"] and u.pointer in ex["messages"][0]["content"]
    assert u.instruction in ic["messages"][0]["content"]
    assert u.instruction in dc["messages"][1]["content"]
    assert ex["messages"][1]["content"].endswith(f"Answer: {d.run(u, x)}")
    assert views.execution(d, u, x, "direct", rng)["messages"][1]["content"] == f"Answer: {d.run(u, x)}"
    assert ex["prompt"] == ex["messages"][:1] and ex["completion"] == ex["messages"][1:]


@pytest.mark.parametrize("text,expected", [("a -> 3\nAnswer: 7", "7"), ("Answer: 7\nAnswer: 9", "9"),
                                           ("no answer", None), ("Answer:   abc  \nmore", "abc")])
def test_extract_answer(text, expected):
    assert views.extract_answer(text) == expected


def _program_from_description(text: str) -> str:
    """Rebuild source from an English description (the inverse of describe), to show it is equivalent."""
    import re

    sents = [s for s in re.split(r"(?<=[a-z0-9)])\. ", text.rstrip(".")) if s]
    head = re.match(r"The function (\w+) takes (\w+)", sents[0])
    lines = [f"def {head.group(1)}({head.group(2)}):"]

    def expr(e: str) -> str:
        m = re.fullmatch(r"(.+) if (\w) is greater than (\d+), and otherwise (.+)", e)
        if m:
            return f"{expr(m.group(1))} if {m.group(2)} > {m.group(3)} else {expr(m.group(4))}"
        m = re.fullmatch(r"(\w) (plus|minus|times) (\d+), modulo (\d+)", e)
        if m:
            op = {"plus": "+", "minus": "-", "times": "*"}[m.group(2)]
            return f"({m.group(1)} {op} {m.group(3)}) % {m.group(4)}"
        m = re.fullmatch(r"(\w) reversed", e)
        if m:
            return f"{m.group(1)}[::-1]"
        m = re.fullmatch(r"(\w) rotated left by (\d) characters", e)
        if m:
            v, r = m.groups()
            return f"{v}[{r}:] + {v}[:{r}]"
        m = re.fullmatch(r"(\w) with letters swapped \((.+)\)", e)
        if m:
            pairs = re.findall(r"(\w) becomes (\w)", m.group(2))
            return f"{m.group(1)}.translate(str.maketrans('{''.join(a for a, _ in pairs)}', '{''.join(b for _, b in pairs)}'))"
        m = re.fullmatch(r"(\w) with each letter shifted (\d+) places forward in the first (\d+) letters of the alphabet", e)
        v, d, n = m.groups()
        return f"''.join(chr((ord(ch) - 97 + {d}) % {n} + 97) for ch in {v})"

    for s in sents[1:]:
        m = re.fullmatch(r"It returns (\w)", s)
        if m:
            lines.append(f"    return {m.group(1)}")
            continue
        var, e = s.split(" is ", 1)
        lines.append(f"    {var} = {expr(e)}")
    return "\n".join(lines)


def test_nl_instruction_is_equivalent_to_the_code():
    """The natural-language ablation shows a description generated from the same program; rebuilt
    from the description alone, the program computes the same outputs on every input."""
    from inweights import views
    from inweights.domains.programs import describe

    cfg = ProgramsConfig(n_programs=80, families=["arith", "cipher"], cond_prob=0.3, ops=["+", "-", "*"],
                         instruction="nl")
    d = ProgramsDomain(cfg, 7)
    units = d.build()
    for u in units:
        text = describe(u.instruction)
        assert "def " not in text and "%" not in text
        rebuilt = _program_from_description(text)
        env: dict = {}
        exec(rebuilt, env)  # noqa: S102 - rebuilt from our own generator's output
        fn = env[u.pointer]
        for x in u.train_inputs + u.test_inputs:
            assert str(fn(x)) == d.run(u, x), (u.instruction, text)
    rec = views.decl(d, units[0], random.Random(0))
    assert rec["messages"][1]["content"] == describe(units[0].instruction)


def test_compositions_execute_their_parts():
    """Ablation (b): h(x) = g(f(x)) of two without_io programs; ground truth by executing the parts."""
    cfg = ProgramsConfig(n_programs=20, n_compositions=6, cond_prob=0.2)
    d = ProgramsDomain(cfg, 2)
    units = d.build()
    by_src = {u.instruction: u for u in units}
    comps = [u for u in units if u.group == "composed"]
    assert len(comps) == 6
    for c in comps:
        f, g = (by_src[src] for src in c.meta["parts"])
        assert f.group == g.group == "without_io"
        assert c.instruction.endswith(f"return {g.pointer}({f.pointer}(x))")
        for x in c.test_inputs:
            assert d.run(c, x) == d.run(g, int(d.run(f, x)))
            steps = d.steps(c, x)
            assert steps[-1].endswith(f"-> {d.run(c, x)}")
            assert len(steps) == len(d.steps(f, x)) + len(d.steps(g, 0))


def test_skewed_demos_pool():
    """Ablation (c): a skew share of the demos comes from the units sharing the most common shift."""
    from collections import Counter

    from inweights.curriculum import demo_pool

    cfg = ProgramsConfig(n_programs=40, families=["cipher"], cipher_ops=["shift", "reverse", "rotate"],
                         min_statements=2, max_statements=2)
    d = ProgramsDomain(cfg, 1)
    units = d.build()
    sigs = Counter(d.signature(u) for u in units)
    top = max(sorted(sigs), key=lambda s: sigs[s])
    assert len(sigs) > 1
    by_id = {u.id: u for u in units}
    pool = demo_pool(d, units, 10, 0, skew=0.8)
    assert len(pool) == 10 * len(units)
    share = sum(d.signature(by_id[r["unit"]]) == top for r in pool) / len(pool)
    assert 0.75 < share < 0.85
    balanced = demo_pool(d, units, 10, 0)
    assert sum(d.signature(by_id[r["unit"]]) == top for r in balanced) == 10 * sigs[top]


def test_too_few_distinct_programs_is_a_clear_error():
    from inweights.core.errors import UserError

    cfg = ProgramsConfig(n_programs=40, families=["cipher"], cipher_ops=["shift"], min_statements=1, max_statements=1)
    with pytest.raises(UserError, match="cannot draw 40 distinct programs"):
        ProgramsDomain(cfg, 1).build()


def test_skew_report_splits_majority_from_the_rest(tmp_path):
    import json

    from inweights.regimes.experiment.report import skew_section

    sigs = {"u1": "s[::-1]", "u2": "s[::-1]", "u3": "s[1:] + s[:1]"}
    rows = [("demos", "u1", True), ("demos", "u2", True), ("demos", "u3", False), ("code", "u1", False),
            ("code", "u3", True), ("demos", "u9", True)]
    (tmp_path / "samples.jsonl").write_text("".join(
        json.dumps({"recipe": r, "unit": u, "cell": "without_io/in_weights/cot", "correct": ok}) + "\n"
        for r, u, ok in rows))
    md, skew = skew_section(tmp_path, sigs)
    assert skew["top"] == "s[::-1]"
    assert skew["rows"]["demos without_io/in_weights/cot"] == {"majority": 1.0, "rest": 0.0, "n_majority": 2,
                                                               "n_rest": 1}
    assert skew["rows"]["code without_io/in_weights/cot"]["majority"] == 0.0
    assert any("| demos |" in line for line in md)
    assert skew_section(tmp_path, None) == ([], None)
