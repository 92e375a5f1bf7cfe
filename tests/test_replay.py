"""Replay of the in-context skill during PBB stages (``pbb.replay_group``): the experiment's with_io programs, or
a fresh preparation-pool program every example (``group: fresh``), never one of the experiment's names."""

import random

import pytest
from pydantic import ValidationError

from inweights.config import MixItem, load_config
from inweights.curriculum import TokenCache, record_for, stage_sampler
from inweights.domains.programs import NAME_POOLS
from inweights.models.tokenizer import train_tokenizer
from inweights.regimes.experiment.pbb import stages_for
from inweights.runs import load_units


def test_fresh_replay_draws_new_preparation_programs(root):
    cfg = load_config(root / "configs/smoke.yaml", ["pbb.replay_group=fresh", "pbb.replay_all_stages=true"])
    domain, units = load_units(cfg)
    s1, s2 = stages_for("proactive", cfg)
    for st in (s1, s2):
        assert [m.group for m in st.mixture if m.view == "in_context"] == ["fresh"]
    item = next(m for m in s1.mixture if m.group == "fresh")
    rng = random.Random(0)
    names = {u.pointer for u in units}
    recs = [record_for(item, domain, units, rng) for _ in range(50)]
    pointers = {r["messages"][0]["content"].split("def ", 1)[1].split("(", 1)[0] for r in recs}
    assert len(pointers) > 40 and not pointers & names  # new programs, never an experiment's
    assert all(p[0] in NAME_POOLS["prepare"] for p in pointers)
    tok = train_tokenizer(["def f(x): return x"] * 3, 320)
    sample = stage_sampler(s1, domain, units, TokenCache(tok), 0)
    ids, labels = sample(rng)
    assert len(ids) == len(labels) > 0


def test_fresh_group_is_in_context_only():
    with pytest.raises(ValidationError, match="in_context"):
        MixItem(view="decl", group="fresh")


def test_retroactive_replays_its_documents_and_has_its_own_length(root):
    plain = load_config(root / "configs/smoke.yaml")
    r1, r2 = stages_for("retroactive", plain)
    assert r1.steps == plain.pbb.stage2_steps and [m.view for m in r2.mixture] == ["exec"]
    cfg = load_config(root / "configs/smoke.yaml", ["pbb.replay_decl_weight=0.5", "pbb.retro_decl_steps=9"])
    r1, r2 = stages_for("retroactive", cfg)
    assert r1.steps == 9
    assert [(m.view, m.group, m.weight) for m in r2.mixture] == [("exec", "with_io", 1.0), ("decl", "all", 0.5)]
    # stage2_only never trains executions, whatever is replayed elsewhere
    (s2,) = stages_for("stage2_only", cfg)
    assert all(m.view != "exec" for m in s2.mixture)
