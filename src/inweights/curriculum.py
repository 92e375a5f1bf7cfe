"""Stages -> example samplers. The bridge between domains/views (what to say) and the trainer
(how to learn it): the trainer only ever sees a ``sample(rng) -> (input_ids, labels)`` function."""

from __future__ import annotations

import random
from typing import Any

from inweights import views
from inweights.config import MixItem, StageConfig
from inweights.core.seeds import derive_seed
from inweights.domains.base import Unit
from inweights.domains.capabilities import FreshUnits, Representations, Signatures, need, supports
from inweights.train.data import tokenize_record

FORMATS = {"both": ("direct", "cot"), "direct": ("direct",), "cot": ("cot",)}


class TokenCache:
    """Tokenised records keyed by their text: templates repeat, tokenising again is waste."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[tuple[str, str, str], tuple[list[int], list[int]]] = {}

    def __call__(self, record: dict[str, Any], loss_on: str) -> tuple[list[int], list[int]]:
        key = (record["messages"][0]["content"], record["messages"][1]["content"], loss_on)
        hit = self.cache.get(key)
        if hit is None:
            hit = self.cache[key] = tokenize_record(self.tokenizer, record, loss_on)
        return hit


def select(units: list[Unit], group: str) -> list[Unit]:
    return list(units) if group == "all" else [u for u in units if u.group == group]


def demo_pool(domain, units: list[Unit], k: int, seed: int, skew: float | None = None) -> list[dict[str, Any]]:
    """k fixed execution examples per unit (training inputs only, templates and formats drawn once).

    With ``skew``, the pool keeps its size (k per unit on average) but a ``skew`` share of it comes from
    the units whose first statement is the most common one (``domain.signature``), the rest from the
    others: skewed demonstrations, while probes stay balanced over units."""
    pool = []
    if skew is None:
        for u in units:
            rng = random.Random(derive_seed(seed, "demos", u.id, k))
            for _ in range(k):
                x = rng.choice(u.train_inputs)
                fmt = rng.choice(("direct", "cot"))
                pool.append(views.execution(domain, u, x, fmt, rng))
        return pool
    rng = random.Random(derive_seed(seed, "demos", "skew", k, skew))
    sigs = [need(domain, Signatures, "skew (skewed demonstrations)").signature(u) for u in units]
    top = max(sorted(set(sigs)), key=sigs.count)
    major = [u for u, s in zip(units, sigs) if s == top]
    minor = [u for u, s in zip(units, sigs) if s != top] or major
    for _ in range(k * len(units)):
        u = rng.choice(major if rng.random() < skew else minor)
        x = rng.choice(u.train_inputs)
        fmt = rng.choice(("direct", "cot"))
        pool.append(views.execution(domain, u, x, fmt, rng))
    return pool


def draw_input(item: MixItem, u: Unit, rng: random.Random) -> Any:
    """A training input of the unit; planning: the item's representation (or any of the unit's)."""
    if item.representation is not None:
        if item.representation not in u.train_inputs:
            raise ValueError(f"representation {item.representation} is not among {u.id}'s ({', '.join(u.train_inputs)})")
        return item.representation
    return rng.choice(u.train_inputs)


def record_for(item: MixItem, domain, units: list[Unit], rng: random.Random, pool=None) -> dict[str, Any]:
    if item.view == "demos":
        return rng.choice(pool)
    if item.group == "fresh":  # a new preparation-pool unit, never one of the experiment's names
        u = need(domain, FreshUnits, "group fresh").fresh_unit(rng, "prepare", {v.pointer for v in units})
        return views.in_context(domain, u, rng.choice(u.train_inputs + u.test_inputs), rng.choice(FORMATS[item.format]),
                                rng)
    u = rng.choice(units)
    if item.view == "decl":
        return views.decl(domain, u, rng)
    x = draw_input(item, u, rng)
    fmt = rng.choice(FORMATS[item.format])
    if item.view == "exec":
        return views.execution(domain, u, x, fmt, rng)
    return views.in_context(domain, u, x, fmt, rng)


def stage_sampler(stage: StageConfig, domain, units: list[Unit], tokens: TokenCache, seed: int):
    """A sampler drawing a mixture component by weight, then one record of it."""
    comps = []
    for item in stage.mixture:
        # fresh: the experiment's units are passed only so that a fresh unit never takes one of their names
        chosen = list(units) if item.group == "fresh" else select(units, item.group)
        if not chosen:
            raise ValueError(f"stage {stage.name}: group {item.group} has no units")
        pool = demo_pool(domain, chosen, item.k or 1, seed, item.skew) if item.view == "demos" else None
        comps.append((item, chosen, pool))
    weights = [c[0].weight for c in comps]

    def sample(rng: random.Random) -> tuple[list[int], list[int]]:
        item, chosen, pool = rng.choices(comps, weights=weights)[0]
        rec = record_for(item, domain, chosen, rng, pool)
        if item.group == "fresh":  # unique texts: tokenised directly, never cached
            return tokenize_record(tokens.tokenizer, rec, "completion")
        return tokens(rec, "all" if item.view == "decl" else "completion")

    return sample


def stage_prompts(stage: StageConfig, domain, units: list[Unit]):
    """For a grpo stage: a sampler of (chat prompt, reward) pairs, the reward 1.0 when the domain's scorer
    accepts the completion's final answer (exact answer, or parser acceptance for grammars), else 0.0."""
    comps = []
    for item in stage.mixture:
        chosen = [u for u in select(units, item.group) if u.train_inputs]
        if not chosen:
            raise ValueError(f"stage {stage.name}: group {item.group} has no units with training inputs")
        comps.append((item, chosen))
    weights = [c[0].weight for c in comps]

    def sample(rng: random.Random):
        item, chosen = rng.choices(comps, weights=weights)[0]
        u = rng.choice(chosen)
        x = draw_input(item, u, rng)
        fmt = rng.choice(FORMATS[item.format])
        rec = views.execution(domain, u, x, fmt, rng, view=item.view)

        def reward(text: str) -> float:
            return float(bool(domain.score(u, x, views.extract(domain, text))))

        return rec["prompt"], reward

    return sample


def corpus_texts(domain, units: list[Unit], seed: int, n_templates: int = 3) -> list[str]:
    """Text of every view of the units (for training a tokenizer on the experiment's corpus)."""
    rng = random.Random(derive_seed(seed, "corpus"))
    out = []
    for u in units:
        for _ in range(n_templates if domain.decl_templates else 0):
            out.append(_flat(views.decl(domain, u, rng)))
        # planning: every representation, so the tokenizer knows the ones preparation does not show
        xs = domain.all_inputs if supports(domain, Representations) else [rng.choice(u.train_inputs + u.test_inputs)]
        for x in xs:
            for fmt in ("direct", "cot"):
                out.append(_flat(views.execution(domain, u, x, fmt, rng)))
                out.append(_flat(views.in_context(domain, u, x, fmt, rng)))
    return out


def _flat(rec: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in rec["messages"])
