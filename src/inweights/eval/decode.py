"""A lean decode loop for evaluation and GRPO sampling (``eval.backend: lean``), for Llama-family models.

transformers' ``generate`` is the reference (``eval.backend: transformers``) and the outputs here are the same
token for token (tested on the tiny preset and SmolLM2); what changes is the work around the model, which on a
CPU and a small model is most of the time:

- a **preallocated KV cache** written in place (``generate``'s dynamic cache concatenates every layer's keys and
  values at every step: a copy of the whole cache per token);
- **batched prefill** of left-padded prompts, logits for the last position only, in chunks of rows of similar
  length cut to pad the least (``prefill_chunks``: a long prompt among short ones gets a chunk of its own);
- **early exit**: rows that emitted an end-of-turn token leave the batch (the cache is compacted when a tenth of
  its rows are done, ``COMPACT_AT``: each copy of the cache costs about a fifth of a decode step on SmolLM2, a
  compaction at a quarter measured 10% slower), instead of decoding padding until the longest row ends;
- **shared prefixes prefilled once**: prompts that begin alike (the chat template and instructions every probe
  carries, the same program or document asked about in several probes) are grouped (``prefix_groups``), each
  group's common prefix runs through the model once (recursively: prefixes share their own prefixes), its keys and
  values are copied into every member's rows of the cache, and only the rest of each prompt is prefilled;
- **drafts verified first** (greedy; ``eval/draft.py``, built on this loop): evaluation passes each probe's gold
  completion, which runs through the model in one prefill-shaped pass; decoding goes on after the part it agrees with;
- no logits processors, stopping criteria or per-step input preparation.

The decoder layers themselves are transformers' own modules, called with this cache and the same masks and
position ids ``generate`` builds, so the arithmetic is the library's. Sampling (``temperature > 0``) uses
transformers' temperature and top-p warpers and draws from the same random stream as ``generate``; to keep that
stream identical, rows are not compacted while sampling.

Written by hand because no maintained library offers this for CPU inference of a transformers model in
process: vLLM needs a GPU, transformers' static cache keeps finished rows and builds its masks per step.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from inweights.train.data import end_of_turn_ids

SUPPORTED = ("llama",)
PREFILL_ROWS = 64  # rows per prefill chunk, at most
CHUNK_COST = 128  # what one more prefill chunk costs, in token rows (a forward's fixed work; small matmuls)
SHARE_MIN = 8  # a shared prefix shorter than this many tokens is prefilled with its rows
SHARE_DEPTH = 4  # prefixes of prefixes, at most this deep
TAIL_ROWS = 2048  # a draft's verification: output-layer rows per slice
COMPACT_AT = 0.9  # greedy: the cache drops finished rows once this share of its rows or fewer still decode


def supports(model) -> bool:
    """Whether the lean loop can drive this model: a Llama-family decoder with sdpa or eager attention, no adapter."""
    cfg = getattr(model, "config", None)
    return (cfg is not None and getattr(cfg, "model_type", None) in SUPPORTED and not hasattr(model, "peft_config")
            and getattr(cfg, "_attn_implementation", "sdpa") in ("sdpa", "eager"))


class _StaticCache:
    """Per-layer key/value buffers of a fixed length, written in place; what attention sees is the filled prefix.
    Duck-types the one method the decoder layers call (``update``)."""

    def __init__(self, layers: int, batch: int, heads: int, length: int, dim: int, dtype, device):
        # zeros, not empty: columns a chunked prefill skips (padding) are masked, but masked garbage can be NaN,
        # and NaN times a zero attention weight is NaN
        self.k = [torch.zeros(batch, heads, length, dim, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.zeros(batch, heads, length, dim, dtype=dtype, device=device) for _ in range(layers)]
        self.filled = 0  # positions written by the forward in progress start here

    def update(self, key, value, layer_idx: int, *args, **kwargs):
        end = self.filled + key.shape[2]
        self.k[layer_idx][:, :, self.filled:end] = key
        self.v[layer_idx][:, :, self.filled:end] = value
        return self.k[layer_idx][:, :, :end], self.v[layer_idx][:, :, :end]

    def window(self, rows: slice, start: int) -> _Window:
        return _Window(self, rows, start)

    def keep(self, rows: torch.Tensor) -> None:
        self.k = [t.index_select(0, rows) for t in self.k]
        self.v = [t.index_select(0, rows) for t in self.v]


class _Window:
    """Some rows of a ``_StaticCache``: a prefill of those rows writes its keys and values from column ``start`` on,
    and its attention sees the columns from ``read`` (default ``start``) on — every row's real tokens are in them,
    the ones before ``start`` already in the cache (a shared prefix); the columns before ``read`` are padding."""

    def __init__(self, cache: _StaticCache, rows, start: int, read: int | None = None):
        self.cache, self.rows, self.start, self.filled = cache, rows, start, start
        self.read = start if read is None else read

    def update(self, key, value, layer_idx: int, *args, **kwargs):
        end = self.start + key.shape[2]
        k, v = self.cache.k[layer_idx], self.cache.v[layer_idx]
        k[self.rows, :, self.start:end] = key.to(k.dtype)  # under autocast, bf16 keys into the model-dtype cache
        v[self.rows, :, self.start:end] = value.to(v.dtype)
        return k[self.rows, :, self.read:end], v[self.rows, :, self.read:end]


def prefix_groups(seqs: Sequence[Sequence[int]], min_len: int = SHARE_MIN) -> list[tuple[int, list[int]]]:
    """Groups of prompts to prefill a common prefix once: (prefix length, member indices), each group two or more
    prompts whose first ``prefix length`` tokens agree, every member keeping at least one token of its own (its last
    position's logits come from its own prefill). Chosen to save the most prefill tokens, sum (members - 1) x length,
    over groups of neighbours in lexicographic order (a dynamic programme over where groups start); a prefix shorter
    than ``min_len`` is not worth a forward of its own."""
    n = len(seqs)
    lex = sorted(range(n), key=lambda i: list(seqs[i]))
    nb = []  # the common prefix of lexicographic neighbours, each keeping one token
    for a, b in itertools.pairwise(lex):
        x, y = seqs[a], seqs[b]
        m, cap = 0, min(len(x), len(y)) - 1
        while m < cap and x[m] == y[m]:
            m += 1
        nb.append(m)
    best, cut = [0] * (n + 1), [(0, 0)] * (n + 1)  # best saving of the first j, and (start, prefix) of the last group
    for j in range(1, n + 1):
        best[j], cut[j] = best[j - 1], (j - 1, 0)
        m = None
        for i in range(j - 2, -1, -1):  # group lex[i .. j-1]
            m = nb[i] if m is None else min(m, nb[i])
            if m < min_len:
                break
            if best[i] + (j - 1 - i) * m > best[j]:
                best[j], cut[j] = best[i] + (j - 1 - i) * m, (i, m)
    out, j = [], n
    while j > 0:
        i, m = cut[j]
        if m:
            out.append((m, [lex[k] for k in range(i, j)]))
        j = i
    return out[::-1]


def prefill_chunks(lengths: Sequence[int], max_rows: int | None = None, cost: int | None = None) -> list[range]:
    """Rows of ascending ``lengths`` cut into consecutive chunks, each prefilled over its longest row's width: the
    cut with the fewest padded token rows plus ``cost`` per chunk (a dynamic programme; at most ``max_rows`` rows a
    chunk). Fixed-size chunks pad a chunk's short rows to its long one (a 104-token row among 25-token ones)."""
    max_rows = PREFILL_ROWS if max_rows is None else max_rows
    cost = CHUNK_COST if cost is None else cost
    n = len(lengths)
    best, cut = [0] * (n + 1), [0] * (n + 1)  # the least cost of the first j rows, and where its last chunk starts
    for j in range(1, n + 1):
        best[j], cut[j] = min((best[i] + (j - i) * lengths[j - 1] + cost, i) for i in range(max(0, j - max_rows), j))
    out, j = [], n
    while j > 0:
        out.append(range(cut[j], j))
        j = cut[j]
    return out[::-1]


def _prefill(model, seqs: Sequence[Sequence[int]], cache: _StaticCache, rows: list[int], end: int, eager: bool,
             pad: int, device, depth: int = 0, tails: Sequence[int] | None = None):
    """Prefill ``seqs`` into ``cache``: sequence j right-aligned to column ``end`` of row ``rows[j]``; the logits of
    each one's last position, in order — or, with ``tails``, the greedy token after each of sequence j's last
    ``tails[j]`` positions (a draft's verification). Shared prefixes (``prefix_groups``; with tails, of the
    positions before them) run once, into a cache of their own (recursively), and are copied into their members'
    rows; the rest runs in chunks of rows of similar remaining length (``prefill_chunks``), each over its own width."""
    n = len(seqs)
    own = [0] * n  # tokens of each sequence already in the cache (its shared prefix)
    heads = seqs if tails is None else [s[:len(s) - t + 1] for s, t in zip(seqs, tails, strict=True)]
    groups = prefix_groups(heads) if depth < SHARE_DEPTH and n > 1 else []
    if groups:
        width = max(m for m, _ in groups)
        sub = _StaticCache(len(cache.k), len(groups), cache.k[0].shape[1], width, cache.k[0].shape[3],
                           cache.k[0].dtype, device)
        _prefill(model, [seqs[g[0]][:m] for m, g in groups], sub, list(range(len(groups))), width, eager, pad, device,
                 depth + 1)
        for gi, (m, members) in enumerate(groups):
            for j in members:
                col = end - len(seqs[j])
                for layer in range(len(cache.k)):
                    cache.k[layer][rows[j], :, col:col + m] = sub.k[layer][gi, :, width - m:]
                    cache.v[layer][rows[j], :, col:col + m] = sub.v[layer][gi, :, width - m:]
                own[j] = m
    order = sorted(range(n), key=lambda j: (len(seqs[j]) - own[j], len(seqs[j])))
    logits: list[torch.Tensor | None] = [None] * n
    for chunk in prefill_chunks([len(seqs[j]) - own[j] for j in order]):
        part = [order[c] for c in chunk]
        q = max(len(seqs[j]) - own[j] for j in part)  # the columns computed: every row's last q (or all it has)
        read = max(len(seqs[j]) for j in part)
        ids = torch.full((len(part), q), pad, dtype=torch.long)
        pos = torch.zeros((len(part), q), dtype=torch.long)
        valid = torch.zeros((len(part), read), dtype=torch.bool)
        for r, j in enumerate(part):
            s, t = seqs[j], min(q, len(seqs[j]))
            ids[r, q - t:] = torch.tensor(s[len(s) - t:])
            pos[r, q - t:] = torch.arange(len(s) - t, len(s))
            valid[r, read - len(s):] = True
        win = _Window(cache, torch.tensor([rows[j] for j in part], device=device), end - q, end - read)
        out = _forward(model, ids.to(device), pos.to(device), valid.to(device), win, eager,
                       None if tails is None else [tails[j] for j in part])
        for r, j in enumerate(part):
            logits[j] = out[r]
    return logits if tails is not None else torch.stack(logits)


def _mask(valid: torch.Tensor, q_len: int, eager: bool, dtype):
    """The mask ``generate`` hands the layers: None without padding in a single-token step (full attention),
    else [B, 1, q, L] (bool for sdpa, additive for eager), causal over the last ``q_len`` positions."""
    b, length = valid.shape
    if q_len == 1 and bool(valid.all()):
        return None
    m = valid[:, None, None, :].expand(b, 1, q_len, length)
    if q_len > 1:
        causal = torch.ones(q_len, length, dtype=torch.bool, device=valid.device).tril(length - q_len)
        m = m & causal
    if not eager:
        return m
    return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(~m, torch.finfo(dtype).min)


def _forward(model, ids, pos, valid, cache: _StaticCache, eager: bool, tails: Sequence[int] | None = None):
    """Logits of the last position after running ``ids`` (B x q) through the decoder into the cache; with ``tails``,
    row r's greedy tokens after each of its last ``tails[r]`` positions (output layer on those rows only, in slices
    of ``TAIL_ROWS``, so a long draft's logits never sit in memory whole)."""
    inner = model.model
    h = inner.embed_tokens(ids)
    pe = inner.rotary_emb(h, position_ids=pos)
    mask = _mask(valid, ids.shape[1], eager, h.dtype)
    for layer in inner.layers[: model.config.num_hidden_layers]:
        h = layer(h, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, position_embeddings=pe)
    cache.filled += ids.shape[1]
    if tails is None:
        return model.lm_head(inner.norm(h[:, -1:, :]))[:, -1, :].float()
    q = ids.shape[1]
    rows = torch.cat([h[r, q - t:] for r, t in enumerate(tails)])
    best = torch.cat([model.lm_head(inner.norm(rows[i: i + TAIL_ROWS])).argmax(-1)
                      for i in range(0, rows.shape[0], TAIL_ROWS)]).tolist()
    out, at = [], 0
    for t in tails:
        out.append(best[at: at + t])
        at += t
    return out


@torch.no_grad()
def lean_generate_ids(
    model,
    tokenizer,
    prompts: Sequence[list[dict[str, str]]],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress=None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    share_prefix: bool = True,
    refill: bool = False,
) -> list[tuple[list[int], list[int]]]:
    """Same contract as ``generate.generate_ids``: (prompt ids, completion ids) per chat prompt, in order; a
    completion ends with its end-of-turn token when the model emitted one, else at ``max_new_tokens``.
    ``share_prefix``: prefill shared prompt prefixes once (off: every prompt's prefill is its own). ``refill``
    (greedy only): rows that finish are replaced by waiting prompts (``_stream``), so the batch stays full — off by
    default: on SmolLM2's evaluation workload it measured 0.86× the batches-by-length loop (benchmarks/generation.py;
    admitted a quarter batch at a time, new rows share fewer prefixes, and attention spans the oldest row's columns).
    With a draft per prompt (greedy), ``draft.draft_generate_ids`` verifies each before decoding."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    from inweights.train.data import prompt_ids

    enc = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))  # similar lengths share a batch: less padding
    out: list[tuple[list[int], list[int]]] = [([], [])] * len(enc)
    was_training = model.training
    model.eval()
    conf = model.config
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    eager = conf._attn_implementation == "eager"
    heads = conf.num_key_value_heads
    dim = getattr(conf, "head_dim", None) or conf.hidden_size // conf.num_attention_heads
    pad = tokenizer.pad_token_id
    stops = torch.tensor(sorted(end_of_turn_ids(tokenizer)), device=device)
    sampling = temperature > 0
    warp = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)]) if sampling else None
    if sampling:
        torch.manual_seed(seed)
    elif refill:
        out = _stream(model, enc, max_new_tokens, batch_size, pad, stops, eager, share_prefix, device, dtype, progress)
        model.train(was_training)
        return out
    for b in range(0, len(order), batch_size):
        idx = order[b: b + batch_size]
        width = max(len(enc[i]) for i in idx)
        n = len(idx)
        ids = torch.full((n, width), pad, dtype=torch.long)
        valid = torch.zeros((n, width + max_new_tokens), dtype=torch.bool)
        for r, i in enumerate(idx):  # left padding, so every row continues from its last column
            ids[r, width - len(enc[i]):] = torch.tensor(enc[i])
            valid[r, width - len(enc[i]): width] = True
        ids, valid = ids.to(device), valid.to(device)
        pos = (valid[:, :width].long().cumsum(-1) - 1).masked_fill(~valid[:, :width], 0)
        cache = _StaticCache(conf.num_hidden_layers, n, heads, width + max_new_tokens, dim, dtype, device)
        if share_prefix:  # shared prefixes once, the rest in chunks of similar remaining length
            logits = _prefill(model, [enc[i] for i in idx], cache, list(range(n)), width, eager, pad, device)
        else:  # chunks of rows of similar length (the batch is sorted by length), each over its own width only
            parts = []
            for chunk in prefill_chunks([len(enc[i]) for i in idx]):
                rows = slice(chunk.start, chunk.stop)
                start = width - max(len(enc[i]) for i in idx[rows])
                parts.append(_forward(model, ids[rows, start:], pos[rows, start:], valid[rows, start:width],
                                      cache.window(rows, start), eager))
            logits = torch.cat(parts)
        cache.filled = width
        gen: list[list[int]] = [[] for _ in range(n)]
        _decode(model, cache, valid, width, pos[:, -1:], logits, gen, max_new_tokens, stops, pad, eager, warp)
        for r, i in enumerate(idx):
            out[i] = (enc[i], gen[r])
        if progress is not None:
            progress.update(n)
    model.train(was_training)
    return out


def _decode(model, cache: _StaticCache, valid: torch.Tensor, width: int, last: torch.Tensor, logits, gen: list[list[int]],
            max_new_tokens: int, stops: torch.Tensor, pad: int, eager: bool, warp=None,
            first: torch.Tensor | None = None) -> None:
    """Decode every row of ``cache`` (its tokens right-aligned to column ``width``; ``last``: each row's position of
    its last token) until it emits an end-of-turn token or ``gen[r]`` holds ``max_new_tokens``, appending to ``gen``.
    The first tokens come from ``logits`` (greedy, or sampled through ``warp``), or are ``first`` when given."""
    n = len(gen)
    device = valid.device
    sampling = warp is not None
    # physical rows of the cache: which batch row each holds, and whether it is still decoding
    row_of = torch.arange(n, device=device)
    live = torch.ones(n, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        if first is not None and step == 0:
            nxt = first
        elif sampling:
            nxt = torch.multinomial(torch.softmax(warp(None, logits), dim=-1), num_samples=1).squeeze(1)
        else:
            nxt = logits.argmax(dim=-1)
        nxt = torch.where(live, nxt, pad)  # as generate does: finished rows are fed padding
        for r, t in zip(row_of[live].tolist(), nxt[live].tolist()):
            gen[r].append(t)
        full = torch.tensor([len(gen[r]) >= max_new_tokens for r in row_of.tolist()], device=device)
        live = live & ~torch.isin(nxt, stops) & ~full
        if not bool(live.any()):
            break
        if not sampling and int(live.sum()) <= COMPACT_AT * live.numel():  # compact: finished rows leave the cache
            sel = live.nonzero().flatten()
            cache.keep(sel)
            row_of, live, valid, last, nxt = row_of[sel], live[sel], valid[sel], last[sel], nxt[sel]
        col = width + step
        valid[:, col] = True
        last = last + 1
        logits = _forward(model, nxt[:, None], last, valid[:, : col + 1], cache, eager)


def _stream(model, enc: list[list[int]], max_new_tokens: int, batch_size: int, pad: int, stops: torch.Tensor,
            eager: bool, share_prefix: bool, device, dtype, progress) -> list[tuple[list[int], list[int]]]:
    """Greedy decoding with refill (continuous batching): prompts run longest first; whenever a quarter of the rows
    have finished and prompts are waiting, the cache is rebuilt with the live rows and as many new ones as fit,
    each new prompt right-aligned to end at the current column (so it decodes in step with the others: every row
    writes its next token to the same column), the columns no live row reads any more dropped. A row's attention
    sees its own columns only and its positions count its own tokens, so each row's arithmetic is ``generate``'s.
    Written by hand: transformers' continuous batching (``generate_batch``) runs its own paged cache and scheduler,
    without this loop's shared-prefix prefill, and does not promise ``generate``'s tokens."""
    conf = model.config
    layers, heads = conf.num_hidden_layers, conf.num_key_value_heads
    dim = getattr(conf, "head_dim", None) or conf.hidden_size // conf.num_attention_heads
    order = sorted(range(len(enc)), key=lambda i: (-len(enc[i]), i))  # a later prompt fits before the column
    out: list[tuple[list[int], list[int]]] = [([], [])] * len(enc)
    waiting = 0  # order[waiting:] have not started
    rows: list[int] = []  # the prompt each physical row decodes
    gen: dict[int, list[int]] = {}
    cache = _StaticCache(layers, 0, heads, 0, dim, dtype, device)
    valid = torch.zeros((0, 0), dtype=torch.bool, device=device)
    last = torch.zeros((0, 1), dtype=torch.long, device=device)  # each row's position of its last token
    live = torch.zeros(0, dtype=torch.bool, device=device)
    logits = torch.zeros((0, conf.vocab_size), device=device)
    col = 0  # the column every row writes its next token to
    while True:
        if rows:
            nxt = torch.where(live, logits.argmax(dim=-1), pad)  # finished rows are fed padding until dropped
            stop = torch.isin(nxt, stops)
            for r in live.nonzero().flatten().tolist():
                i = rows[r]
                gen[i].append(int(nxt[r]))
                if bool(stop[r]) or len(gen[i]) >= max_new_tokens:
                    live[r] = False
                    out[i] = (enc[i], gen.pop(i))
                    if progress is not None:
                        progress.update(1)
            if bool(live.any()):
                valid[:, col] = True
                last = last + 1
                cache.filled = col
                logits = _forward(model, nxt[:, None], last, valid[:, : col + 1], cache, eager)
                col += 1
        n_live = int(live.sum())
        if waiting < len(order) and n_live <= 0.75 * batch_size:
            sel = live.nonzero().flatten()
            new = order[waiting: waiting + batch_size - n_live]
            waiting += len(new)
            need = max(len(enc[i]) for i in new)
            if n_live:
                drop = min(col - need, int(valid[sel].float().argmax(1).min()))  # columns no live row reads
                col -= drop
            else:
                drop, col = 0, need
            length = col + max_new_tokens
            fresh = _StaticCache(layers, n_live + len(new), heads, length, dim, dtype, device)
            vfresh = torch.zeros((n_live + len(new), length), dtype=torch.bool, device=device)
            if n_live:
                for layer in range(layers):
                    fresh.k[layer][:n_live, :, :col] = cache.k[layer][sel, :, drop: drop + col]
                    fresh.v[layer][:n_live, :, :col] = cache.v[layer][sel, :, drop: drop + col]
                vfresh[:n_live, :col] = valid[sel, drop: drop + col]
            for r, i in enumerate(new):
                vfresh[n_live + r, col - len(enc[i]): col] = True
            cache, valid = fresh, vfresh
            head = _prefill(model, [enc[i] for i in new], cache, list(range(n_live, n_live + len(new))), col, eager,
                            pad, device, depth=0 if share_prefix else SHARE_DEPTH)
            logits = torch.cat([logits[sel], head])
            last = torch.cat([last[sel], torch.tensor([[len(enc[i]) - 1] for i in new], device=device)])
            rows = [rows[r] for r in sel.tolist()] + new
            live = torch.ones(len(rows), dtype=torch.bool, device=device)
            gen.update({i: [] for i in new})
        elif not n_live:
            break
        elif n_live <= 0.75 * len(rows):  # nothing waiting: finished rows leave the cache
            sel = live.nonzero().flatten()
            cache.keep(sel)
            valid, last, logits, live = valid[sel], last[sel], logits[sel], live[sel]
            rows = [rows[r] for r in sel.tolist()]
    return out
