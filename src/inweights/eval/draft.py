"""Greedy decoding with a draft verified first (speculative decoding), for the lean loop (``eval/decode.py``).

Evaluation knows, for most probes, a completion the model may well write: the probe's gold answer. A row's prompt and
draft run through the model in one prefill-shaped pass, which gives the greedy token after every draft position; the
draft's longest prefix that agrees with them is what greedy decoding would have written (and the token after it
comes free), so the row's decoding goes on from there, on the keys and values that pass already wrote. Nothing of the
draft reaches the output unless the model's own argmax chose it: the tokens are greedy decoding's (in fp32, tested;
under bf16 autocast every path's tokens depend on its matmul shapes — drafts vs none agreed on 54 of 64 SmolLM2
outputs, lean vs transformers on 55, each with 30 outputs equal to the gold: no drift towards it). What changes is
the cost of the agreeing part — a prefill row (large matmuls) instead of a decode step (small ones): ~1.6 ms against
~4 ms a token for SmolLM2 on 2 cores (docs/performance.md). A draft that disagrees early costs its verification rows.

Written by hand: transformers' assisted generation (``prompt_lookup_num_tokens``, an assistant model) drafts a few
tokens per step, one sequence at a time; here every row brings a whole draft of its own, batched with the
lean loop's prefix sharing and cache.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from typing import Any

import torch

MIN_ACCEPT = 0.5  # drafts are verified while at least this share of the tokens offered so far was accepted, per
# kind of probe: on the SmolLM2 demo's models the cells' acceptance falls in two clusters, 0-33% (what the model cannot
# answer) and 56-100%; 0.5 vs 0.75 on its six evaluations 1,318 -> 1,212 s (docs/performance.md)

def draft_ids(tokenizer, record: dict[str, Any]) -> list[int] | None:
    """A probe's gold completion as the model would write it: tokenized as training tokenizes a completion, up to and
    including its end-of-turn token; None for a record without one (a prompt that ends in an assistant prefill)."""
    from inweights.train.data import IGNORE, tokenize_record

    if len(record.get("messages") or []) < 2 or record["prompt"][-1]["role"] != "user":
        return None
    try:
        _, labels = tokenize_record(tokenizer, record, "completion")
    except ValueError:
        return None
    return [t for t in labels if t != IGNORE]


@torch.no_grad()
def draft_generate_ids(model, tokenizer, prompts: Sequence[list[dict[str, str]]], drafts: Sequence[Sequence[int] | None],
                       *, max_new_tokens: int, batch_size: int, progress=None, share_prefix: bool = True,
                       draft_stats: dict[str, Any] | None = None, kinds: Sequence[Hashable] | None = None,
                       ) -> list[tuple[list[int], list[int]]]:
    """``decode.lean_generate_ids``' contract, greedy, with one draft per prompt (token ids or None, e.g.
    ``draft_ids`` of a probe) verified before decoding: the same tokens. ``kinds``: a kind per prompt (e.g. a
    probe's cell), each judged on its own acceptance (``drafted_generate``). ``draft_stats`` counts draft tokens
    offered and accepted, in all and by kind."""
    from inweights.train.data import end_of_turn_ids, prompt_ids

    enc = [prompt_ids(tokenizer, p) for p in prompts]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    stops = torch.tensor(sorted(end_of_turn_ids(tokenizer)), device=device)
    eager = model.config._attn_implementation == "eager"
    gens = drafted_generate(model, enc, drafts, batch_size, max_new_tokens, stops, tokenizer.pad_token_id, eager,
                            share_prefix, draft_stats, progress, kinds)
    model.train(was_training)
    return [(e, g) for e, g in zip(enc, gens, strict=True)]


def _verify(model, enc: list[list[int]], drafts: list[list[int] | None], max_new_tokens: int, stop_set: set[int],
            pad: int, eager: bool, share_prefix: bool):
    """One batch's drafts verified in one pass: per row, (tokens so far, None, draft tokens offered, accepted) when
    it is finished, else (tokens so far — the last one not yet run —, its context's keys and values [layers, 2,
    heads, context, dim], offered, accepted)."""
    from inweights.eval.decode import SHARE_DEPTH, _prefill, _StaticCache

    conf = model.config
    device = next(model.parameters()).device
    heads = conf.num_key_value_heads
    dim = getattr(conf, "head_dim", None) or conf.hidden_size // conf.num_attention_heads
    dr = []
    for d in drafts:  # at most the budget, and nothing after the first end of turn
        d = list(d or [])[:max_new_tokens]
        cut = next((k + 1 for k, t in enumerate(d) if t in stop_set), len(d))
        dr.append(d[:cut])
    seqs = [e + d for e, d in zip(enc, dr, strict=True)]
    width = max(len(s) for s in seqs)
    cache = _StaticCache(conf.num_hidden_layers, len(enc), heads, width, dim, next(model.parameters()).dtype, device)
    preds = _prefill(model, seqs, cache, list(range(len(enc))), width, eager, pad, device,
                     depth=0 if share_prefix else SHARE_DEPTH, tails=[len(d) + 1 for d in dr])
    out = []
    for j, (d, p) in enumerate(zip(dr, preds, strict=True)):
        a = 0
        while a < len(d) and d[a] == p[a]:
            a += 1
        g = (d[:a] if a == len(d) and d and d[-1] in stop_set else d[:a] + [p[a]])[:max_new_tokens]
        if g[-1] in stop_set or len(g) >= max_new_tokens:
            out.append((g, None, len(d), a))
            continue
        s0, c = width - len(seqs[j]), len(enc[j]) + len(g) - 1  # the context: the prompt and the agreeing draft
        kv = torch.stack([torch.stack([cache.k[layer][j, :, s0: s0 + c], cache.v[layer][j, :, s0: s0 + c]])
                          for layer in range(conf.num_hidden_layers)])
        out.append((g, kv, len(d), a))
    return out


def _go_on(model, rows: list[tuple[list[int], torch.Tensor]], max_new_tokens: int, stops: torch.Tensor, pad: int,
           eager: bool) -> list[list[int]]:
    """Greedy decoding of verified rows from where their drafts stopped agreeing, in one batch: each context
    right-aligned to a common column of a fresh cache; the next input is each row's last token."""
    from inweights.eval.decode import _decode, _StaticCache

    device = next(model.parameters()).device
    ctx = [kv.shape[3] for _, kv in rows]
    col = max(ctx)
    layers, _, heads, _, dim = rows[0][1].shape
    cache = _StaticCache(layers, len(rows), heads, col + max_new_tokens, dim, rows[0][1].dtype, device)
    valid = torch.zeros((len(rows), col + max_new_tokens), dtype=torch.bool, device=device)
    for r, ((_, kv), c) in enumerate(zip(rows, ctx, strict=True)):
        for layer in range(layers):
            cache.k[layer][r, :, col - c: col] = kv[layer, 0]
            cache.v[layer][r, :, col - c: col] = kv[layer, 1]
        valid[r, col - c: col] = True
    cache.filled = col
    last = torch.tensor([[c - 1] for c in ctx], device=device)
    first = torch.tensor([g[-1] for g, _ in rows], device=device)
    gen = [g[:-1] for g, _ in rows]
    _decode(model, cache, valid, col, last, None, gen, max_new_tokens, stops, pad, eager, first=first)
    return gen


def drafted_generate(model, enc: list[list[int]], drafts: Sequence[Sequence[int] | None], batch_size: int,
                     max_new_tokens: int, stops: torch.Tensor, pad: int, eager: bool, share_prefix: bool,
                     stats: dict[str, Any] | None = None, progress=None,
                     kinds: Sequence[Hashable] | None = None) -> list[list[int]]:
    """Greedy completions of the token lists ``enc``, each decoded after its draft's verification: the same tokens as
    ``lean_generate_ids`` without drafts. Prompts are verified ``batch_size`` at a time (a random sample first, then
    shortest prompt and draft first); the rows whose drafts stopped agreeing wait in a pool and decode ``batch_size``
    at a time, so decode steps run on full batches (a step costs nearly as much at 20 rows as at 64). Once fewer than
    ``MIN_ACCEPT`` of the draft tokens offered to a kind of prompt (``kinds``; one kind without) have been accepted,
    its later prompts are verified without drafts (plain prefill): a base model that cannot answer from its weights
    but can from its prompt keeps its drafts where they pay. ``stats`` counts draft tokens offered and accepted, in
    all and (``by_kind``) per kind."""
    stop_set = set(stops.tolist())
    # the first batch a fixed random sample (what the guard below judges on: sorted by length, the first batch would
    # be the shortest probes, whose acceptance says little of the rest), then the others by length
    first = sorted(random.Random(0).sample(range(len(enc)), min(batch_size, len(enc))))
    rest = sorted(set(range(len(enc))) - set(first), key=lambda i: (len(enc[i]) + len(drafts[i] or []), i))
    order = first + rest
    out: list[list[int] | None] = [None] * len(enc)
    pool: list[tuple[int, list[int], torch.Tensor]] = []

    def drain(rows):
        for (i, _, _), g in zip(rows, _go_on(model, [(g, kv) for _, g, kv in rows], max_new_tokens, stops, pad,
                                              eager), strict=True):
            out[i] = g
        if progress is not None:
            progress.update(len(rows))

    kind = list(kinds) if kinds is not None else [None] * len(enc)
    seen: dict[Hashable, list[int]] = {k: [0, 0] for k in kind}  # per kind: tokens offered, accepted

    def use(i: int) -> bool:  # drafts the model keeps rejecting cost their verification for nothing
        offered, accepted = seen[kind[i]]
        return offered == 0 or accepted >= MIN_ACCEPT * offered

    for b in range(0, len(order), batch_size):
        idx = order[b: b + batch_size]
        done = 0
        verified = _verify(model, [enc[i] for i in idx], [list(drafts[i] or []) if use(i) else [] for i in idx],
                           max_new_tokens, stop_set, pad, eager, share_prefix)
        for i, (g, kv, offered, accepted) in zip(idx, verified, strict=True):
            seen[kind[i]][0] += offered
            seen[kind[i]][1] += accepted
            if kv is None:
                out[i], done = g, done + 1
            else:
                pool.append((i, g, kv))
        if progress is not None:
            progress.update(done)
        while len(pool) >= batch_size:
            drain(pool[:batch_size])
            pool = pool[batch_size:]
    if pool:
        drain(pool)
    if stats is not None:
        stats["offered"] = stats.get("offered", 0) + sum(o for o, _ in seen.values())
        stats["accepted"] = stats.get("accepted", 0) + sum(a for _, a in seen.values())
        if kinds is not None:
            by = stats.setdefault("by_kind", {})
            for k, (o, a) in seen.items():
                mine = by.setdefault(str(k), {"offered": 0, "accepted": 0})
                mine["offered"] += o
                mine["accepted"] += a
    return [g if g is not None else [] for g in out]


__all__ = ["draft_generate_ids", "draft_ids", "drafted_generate"]
