"""From records to packed, loss-masked token rows.

A record is rendered with the tokenizer's chat template; the loss covers the assistant turn only
(``exec``/``in_context``/``demos``) or the whole document (``decl``). Examples are packed whole into
rows of ``max_len`` tokens; position ids restart at 0 for each example, which transformers turns into
a block-diagonal causal mask, so packed examples never attend to each other.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import torch

IGNORE = -100


def render(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def tokenize_record(tokenizer, record: dict[str, Any], loss_on: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one record; ``loss_on`` is 'completion' or 'all'."""
    prompt = render(tokenizer, record["prompt"], add_generation_prompt=True)
    full = render(tokenizer, record["messages"])
    if not full.startswith(prompt):
        raise ValueError("chat template does not render the prompt as a prefix of the conversation")
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    ids = p_ids + c_ids
    if loss_on == "all":
        labels = list(ids)
    else:
        labels = [IGNORE] * len(p_ids) + list(c_ids)
    return ids, labels


class PackedBatches:
    """Infinite, resumable stream of packed batches drawn from an example sampler.

    ``sample(rng)`` returns one (input_ids, labels) example. The stream's whole state is the RNG
    state plus the example carried over from the last row, so a resumed run sees the same batches.
    """

    def __init__(self, sample: Callable[[random.Random], tuple[list[int], list[int]]], seed: int,
                 rows: int, max_len: int, pad_id: int):
        self.sample, self.rows, self.max_len, self.pad_id = sample, rows, max_len, pad_id
        self.rng = random.Random(seed)
        self.carry: tuple[list[int], list[int]] | None = None
        self.truncated = 0

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate(), "carry": self.carry, "truncated": self.truncated}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(_as_tuple(state["rng"]))
        self.carry = tuple(state["carry"]) if state["carry"] is not None else None
        self.truncated = state["truncated"]

    def _next_example(self) -> tuple[list[int], list[int]]:
        if self.carry is not None:
            ex, self.carry = self.carry, None
            return ex
        ids, labels = self.sample(self.rng)
        if len(ids) > self.max_len:
            self.truncated += 1
            ids, labels = ids[: self.max_len], labels[: self.max_len]
        return ids, labels

    def _row(self) -> tuple[list[int], list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        while True:
            ex_ids, ex_labels = self._next_example()
            if ids and len(ids) + len(ex_ids) > self.max_len:
                self.carry = (ex_ids, ex_labels)
                break
            ids += ex_ids
            labels += ex_labels
            pos += list(range(len(ex_ids)))
            if len(ids) >= self.max_len:
                break
        pad = self.max_len - len(ids)
        # padding is its own "example" (positions restart) with no loss
        return ids + [self.pad_id] * pad, labels + [IGNORE] * pad, pos + list(range(pad))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        rows = [self._row() for _ in range(self.rows)]
        return {
            "input_ids": torch.tensor([r[0] for r in rows]),
            "labels": torch.tensor([r[1] for r in rows]),
            "position_ids": torch.tensor([r[2] for r in rows]),
        }


def _as_tuple(x: Any) -> Any:
    """random.setstate needs tuples; a state that went through JSON comes back as lists."""
    return tuple(_as_tuple(i) for i in x) if isinstance(x, list) else x
