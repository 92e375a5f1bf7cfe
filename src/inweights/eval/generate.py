"""Batched greedy generation with a KV cache (transformers' `generate`), prompts sorted by length."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from inweights.train.data import render


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[list[dict[str, str]]],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress=None,
) -> list[str]:
    """Greedy completions for chat prompts, in the order given."""
    texts = [render(tokenizer, p, add_generation_prompt=True) for p in prompts]
    enc = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))  # similar lengths share a batch: less padding
    out: list[str] = [""] * len(enc)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):  # left padding, so every row continues from its last column
            ids[r, width - len(enc[i]) :] = torch.tensor(enc[i])
            mask[r, width - len(enc[i]) :] = 1
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=pad,
            use_cache=True,
        )
        for r, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[r, width:], skip_special_tokens=True)
        if progress is not None:
            progress.update(len(idx))
    model.train(was_training)
    return out
