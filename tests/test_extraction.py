"""Extraction diagnostics and the levers of issue 14, each checked on a case whose value is known."""

import random

import pytest

from inweights import views
from inweights.config import EvalConfig, ProgramsConfig
from inweights.domains.programs import ProgramsDomain, edit_distance
from inweights.eval.extraction import diagnose
from inweights.eval.probes import evaluate


def _domain(**kw):
    base = {"n_programs": 12, "without_io_fraction": 0.5, "cond_prob": 0.0, "cot": "recite", "recital": "lines"}
    return ProgramsDomain(ProgramsConfig(**{**base, **kw}), seed=3)


@pytest.mark.parametrize("style", ["code", "lines", "shuffled", "oneline"])
def test_every_rendering_parses_back_to_the_program(style):
    d = _domain(renderings=["code", "lines", "shuffled", "oneline"])
    rng = random.Random(0)
    for u in d.build():
        assert d.parse_listing(d.render(u, style, rng)) == (u.pointer, d.statements(u))


def test_renderings_drawn_per_occurrence_only_for_augmented_groups():
    d = _domain(renderings=["code", "lines", "shuffled"], augment_groups=["with_io"])
    rng = random.Random(0)
    units = d.build()
    for u in units:
        texts = {views.decl(d, u, rng)["messages"][1]["content"] for _ in range(30)}
        if u.group == "with_io":
            assert len(texts) > 2  # code, the listing and shuffled listings
        else:
            assert texts == {d.instruction_text(u)}  # the one document: the code block


def test_recite_cot_retypes_then_traces_and_the_answer_is_execution():
    d = _domain()
    for u in d.build():
        x = u.test_inputs[0]
        lines = d.steps(u, x)
        n = len(d.statements(u))
        assert lines[:n] == [f"{u.pointer}, line {i}: {s}" for i, s in enumerate(d.statements(u), 1)]
        assert lines[-1] == f"{d.statements(u)[-1]} -> {d.run(u, x)}"
        assert d.parse_listing("\n".join(lines)) == (u.pointer, d.statements(u))


def test_names_keep_their_distance():
    d = _domain(n_programs=150, name_min_distance=3)
    names = [u.pointer for u in d.build()]
    assert min(edit_distance(a, b) for i, a in enumerate(names) for b in names[i + 1:]) >= 3
    assert edit_distance("godeke", "godeke") == 0 and edit_distance("godeke", "gadeko") == 2


def test_validation_inputs_are_disjoint_and_do_not_move_train_or_test():
    a = ProgramsDomain(ProgramsConfig(n_train_inputs=5, n_test_inputs=4), seed=3).build()
    b = ProgramsDomain(ProgramsConfig(n_train_inputs=5, n_test_inputs=4, n_val_inputs=1), seed=3).build()
    for u, v in zip(a, b):
        assert (u.train_inputs, u.test_inputs) == (v.train_inputs, v.test_inputs)
        assert len(v.meta["val_inputs"]) == 1 and not set(v.meta["val_inputs"]) & set(v.train_inputs + v.test_inputs)


def test_distractors_show_every_function_and_ask_for_one():
    d = _domain()
    u, *others = d.build()[:3]
    rec = views.in_context(d, u, u.test_inputs[0], "cot", random.Random(0), tuple(others))
    prompt = rec["messages"][0]["content"]
    assert all(o.instruction in prompt for o in [u, *others])
    assert rec["messages"][1]["content"].startswith(f"{u.pointer}, line 1:")


def test_diagnostics_of_a_model_that_recites_one_program():
    """A 'model' that answers every prompt with the recital and trace of one with_io program P: every value of
    the diagnostics is known in advance."""
    d = _domain()
    units = d.build()
    p = units[0]
    assert p.group == "with_io"
    cfg = EvalConfig(max_new_tokens=400, train_inputs=2)

    def always_p(prompts, records):
        x = p.test_inputs[0]
        return [views.target(d, p, x, "cot") for _ in prompts]

    cells, samples = evaluate(None, _Tok(), d, units, cfg, seed=0, generate_fn=always_p)
    diag = diagnose(d, units, samples, cells)
    wi, wo = diag["groups"]["with_io"], diag["groups"]["without_io"]
    n_with = sum(u.group == "with_io" for u in units)
    # the recital names P, and its body is P's: always the stored program of the name written
    assert wi["recital_names_asked"]["rate"] == pytest.approx(1 / n_with)
    assert wo["recital_names_asked"]["rate"] == 0.0
    assert wi["recital_body_of_written_name"]["rate"] == 1.0 and wo["recital_body_of_written_name"]["rate"] == 1.0
    # exact recitals: only P's probes; there the answer is P on its first test input
    exact = wi["recital_exact"]
    assert exact["k"] == len(p.test_inputs) and exact["rate"] == pytest.approx(1 / n_with)
    assert wi["correct_given_exact_recital"]["k"] == 1
    # doc-context recall: exactly 1 for P's own document, and the share of matching statements for the others
    want = [d.statements_recalled(u, d.statements(p)) for u in units if u.group == "with_io"]
    assert wi["doc_recall"] == pytest.approx(sum(want) / len(want))
    assert wi["query_recall"] == pytest.approx(sum(want) / len(want))
    assert diag["statement_chance"] == pytest.approx(1 / 18)
    # training inputs are probed in their own cell
    assert cells["with_io/in_weights/cot/train"]["n"] == 2 * n_with


def test_rung_names_the_first_failure():
    d = _domain()
    units = d.build()
    good = {"acc": 0.9}
    bad = {"acc": 0.1}
    diag = {"groups": {"without_io": {"doc_recall": 0.9}, "with_io": {}}}
    from inweights.eval.extraction import rung

    assert rung({"without_io/in_context/cot": bad}, diag)["failed"] == "in_context"
    assert rung({"without_io/in_context/cot": good}, {"groups": {"without_io": {"doc_recall": 0.1}}})["failed"] == "storage"
    assert rung({"without_io/in_context/cot": good, "with_io/in_weights/cot": bad}, diag)["failed"] == "extraction"
    cells = {"without_io/in_context/cot": good, "with_io/in_weights/cot": good, "without_io/in_weights/cot": bad}
    assert rung(cells, diag)["failed"] == "transfer"
    cells["without_io/in_weights/cot"] = good
    assert rung(cells, diag)["failed"] == "none"
    # a run that probed no chain of thought: the same ladder on the direct cells
    direct = {"without_io/in_context/direct": good, "with_io/in_weights/direct": good, "without_io/in_weights/direct": bad}
    assert rung(direct, {"groups": {}}, "documents", "text", "use")["failed"] == "transfer"
    assert "documents" in rung({"without_io/in_context/direct": bad}, {"groups": {}}, "documents", "text", "use")["why"]
    assert units  # the domain builds


class _Tok:
    """Token counting for the evaluator's too-long check, one token per character."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text)}


def test_gate_stops_when_reached_and_records_the_curve():
    from inweights.gates import Gate

    values = iter([0.1, 0.4, 0.7, 0.9])
    logged = []
    g = Gate(lambda model: {"m": next(values)}, "m", 0.6, every=10, last_step=100, log=logged.append)

    class M:
        training = True

        def train(self, mode=True):
            self.training = mode

    stops = [g(step, M()) for step in range(1, 41)]
    assert stops.index(True) == 29  # step 30: the third measurement, 0.7 >= 0.6
    rec = g.record()
    assert rec["reached"] and rec["reached_at"] == 30 and rec["curve"][:3] == [(10, 0.1), (20, 0.4), (30, 0.7)]
    assert [r["step"] for r in logged][:3] == [10, 20, 30]
    g2 = Gate(lambda model: {"m": 0.0}, "m", 0.5, every=10, last_step=15)
    assert not any(g2(s, M()) for s in range(1, 16))
    assert [h["step"] for h in g2.history] == [10, 15] and not g2.record()["reached"]


def test_pbb_pool_prepare_measures_transfer_and_keeps_names_apart(tmp_path):
    """A PBB-prepared base (lever b): pool programs trained as documents + executions, doc-only pool programs
    measured in weights at every gate check; pool names never a held-out unit's; distractors in prompts."""
    import json
    import textwrap

    from inweights.cli import main
    from inweights.config import load_config
    from inweights.curriculum import TokenCache
    from inweights.domains import DOMAINS
    from inweights.models import load_model
    from inweights.prepare import PrepareSampler, held_out_units

    cfg_path = tmp_path / "configs" / "prep_pool.yaml"
    cfg_path.parent.mkdir()
    cfg_path.write_text(textwrap.dedent("""
        name: prep_pool
        kind: prepare
        seed: 5
        domain: {programs: {min_statements: 1, max_statements: 2, cond_prob: 0.0, renderings: [code, lines]}}
        model:
          preset: tiny
          prepared_base: null
          tiny: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, vocab_size: 320}
        train: {batch_size: 2, max_len: 256, lr: 3.0e-3, threads: 1}
        prepare: {max_steps: 6, eval_every: 3, eval_programs: 4, pool_programs: 6, pool_doc_only: 3,
                  pool_eval_probes: 4, gate_metric: pool_doc_only, gate: 1.0, distractors_max: 2,
                  corpus_programs: 50}
        eval: {batch_size: 16, max_new_tokens: 8}
    """))
    assert main(["prepare", str(cfg_path)]) == 1  # built; its gate (an unreachable 100%) not passed
    rec = json.loads((tmp_path / "prepared" / "prep_pool" / "prepare.json").read_text())
    assert rec["gate_metric"] == "pool_doc_only" and rec["pool_programs"] == 6 and rec["pool_doc_only"] == 3
    assert [h["step"] for h in rec["gate_history"]] == [3, 6]
    assert all({"pool_with_io_cot", "pool_doc_only_cot", "in_context_2_others_cot"} <= set(h) for h in rec["gate_history"])
    assert rec["gate_value"] == rec["pool_doc_only_cot"] and rec["passed"] is (rec["gate_value"] >= 1.0)
    cfg = load_config(cfg_path)
    domain = DOMAINS["programs"](cfg.domain.programs, cfg.seed)
    units, _ = held_out_units(domain, cfg.prepare.eval_programs, cfg.seed)
    _, tok = load_model(tmp_path / "prepared" / "prep_pool")
    sampler = PrepareSampler(cfg, domain, TokenCache(tok), units)
    assert not {u.pointer for u in units} & set(rec["pool_names"])
    assert sorted(u.pointer for u in sampler.pool_with + sampler.pool_doc) == rec["pool_names"]
    texts = [tok.decode(sampler(random.Random(i))[0]) for i in range(60)]
    doc_only = {u.pointer for u in sampler.pool_doc}
    # doc-only programs appear as documents, never as a question
    for t in texts:
        if "Think step by step" in t or "Answer directly" in t:
            assert not any(f" {n} " in t.split("<|user|>")[1].split("```")[-1] for n in doc_only)
    assert any("line 1:" in t for t in texts)  # the listing rendering is drawn


def test_doc_recall_with_the_header_forced_measures_the_body_alone():
    """A 'model' that never copies the asked name into `def NAME(x):` (it writes another program's name), but
    continues a given header with that program's body for with_io programs only: free doc recall sees nothing,
    doc recall with the header forced sees exactly the with_io bodies, and storage is not the failed rung."""
    d = _domain(cot="trace")
    units = d.build()
    by_name = {u.pointer: u for u in units}
    other = units[-1]
    cfg = EvalConfig(max_new_tokens=400, train_inputs=0)

    def body(u):
        return "\n" + "\n".join(d.instruction_text(u).split("\n")[2:])  # the lines after the def line

    def model(prompts, records):
        outs = []
        for p in prompts:
            if p[-1]["role"] == "assistant":  # forced header: continue it
                name = p[-1]["content"].split("def ", 1)[1].split("(")[0]
                u = by_name[name]
                outs.append(body(u) if u.group == "with_io" else "\n    a = x\n```")
            else:
                outs.append(d.instruction_text(other))
        return outs

    cells, samples = evaluate(None, _Tok(), d, units, cfg, seed=0, generate_fn=model)
    forced = [s for s in samples if s["cell"].endswith("/doc_forced")]
    assert len(forced) == len(units) and all(s["output"].startswith("```python\ndef ") for s in forced)
    diag = diagnose(d, units, samples, cells)
    wi, wo = diag["groups"]["with_io"], diag["groups"]["without_io"]
    assert wi["doc_forced_recall"] == 1.0 and wo["doc_forced_recall"] == 0.0
    n_without = sum(u.group == "without_io" for u in units)
    assert wi["doc_names_asked"]["rate"] == 0.0 and wo["doc_names_asked"]["rate"] == pytest.approx(1 / n_without)
    from inweights.eval.extraction import rung

    in_context = {"without_io/in_context/cot": {"acc": 0.9}}
    assert rung(in_context, diag)["failed"] == "storage"  # without_io bodies are not stored, header or not
    wo["doc_forced_recall"] = 0.9  # stored under the name, only the name copy fails: storage is climbed
    assert rung({**in_context, "with_io/in_weights/cot": {"acc": 0.1}}, diag)["failed"] == "extraction"


def test_a_prefill_is_tokenized_as_training_tokenizes_the_completion(root):
    """`prompt_ids` of (question, start of the answer) are exactly the first ids of the trained example."""
    from transformers import AutoTokenizer

    from inweights.eval.generate import prompt_ids
    from inweights.train.data import tokenize_record

    tok = AutoTokenizer.from_pretrained(root / "prepared/prepare_tiny")
    d = _domain(cot="trace")
    u = d.build()[0]
    rec = views.decl(d, u, random.Random(0))
    forced = views.decl_forced_header(d, u, rec["prompt"][0]["content"])
    ids = prompt_ids(tok, forced["prompt"])
    trained = {**forced, "prompt": forced["messages"][:1]}  # the document as training sees it
    full, _ = tokenize_record(tok, trained, "completion")
    assert full[: len(ids)] == ids and len(ids) < len(full)
    assert tok.decode(ids).endswith(f"def {u.pointer}(x):")
