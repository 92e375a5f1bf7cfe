"""From records to packed, loss-masked token rows.

A record is rendered with the tokenizer's chat template; the loss covers the assistant turn only
(``exec``/``in_context``/``demos``) or the whole document (``decl``). Examples are packed whole into
rows of ``max_len`` tokens (best fit from a look-ahead buffer); position ids restart at 0 for each example, which transformers turns into
a block-diagonal causal mask, so packed examples never attend to each other.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import torch

IGNORE = -100


# For tokenizers without a chat template (base models): a plain layout, the assistant turn ended by EOS.
PLAIN_USER = "### User:\n{content}\n\n"
PLAIN_ASSISTANT = "### Assistant:\n"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """Text of a conversation: the tokenizer's chat template when it has one, else the plain layout."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    text = ""
    for m in messages:
        if m["role"] == "assistant":
            text += PLAIN_ASSISTANT + m["content"] + (tokenizer.eos_token or "")
        else:
            text += PLAIN_USER.format(content=m["content"])
    if add_generation_prompt:
        text += PLAIN_ASSISTANT
    return text


def end_of_turn_ids(tokenizer) -> set[int]:
    """Ids that end an assistant turn (and generation): EOS, and special tokens a chat template closes
    turns with when they differ from EOS (e.g. <|eot_id|>, <|im_end|>)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for t in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        i = tokenizer.convert_tokens_to_ids(t)
        if isinstance(i, int) and i != tokenizer.unk_token_id and t in tokenizer.all_special_tokens + list(
                tokenizer.get_added_vocab()):
            ids.add(i)
    return ids


def tokenize_record(tokenizer, record: dict[str, Any], loss_on: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one record; ``loss_on`` is 'completion' or 'all'.

    The prompt is tokenized exactly as at generation time (rendered with the generation prompt), the
    rest separately after it, so training sees the token boundary inference sees. With 'completion'
    the loss covers the assistant turn exactly: its content and the token that ends it; what a
    template writes after the turn (a newline) gets no loss, since the model never generates it.
    """
    prompt = render(tokenizer, record["prompt"], add_generation_prompt=True)
    full = render(tokenizer, record["messages"])
    if not full.startswith(prompt):
        raise ValueError("chat template does not render the prompt as a prefix of the conversation")
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    ids = p_ids + c_ids
    if loss_on == "all":
        return ids, list(ids)
    ends = end_of_turn_ids(tokenizer)
    cut = next((i + 1 for i, t in enumerate(c_ids) if t in ends), None)
    if cut is None:
        raise ValueError("the rendered assistant turn has no end-of-turn token (EOS); generation could not stop")
    labels = [IGNORE] * len(p_ids) + c_ids[:cut] + [IGNORE] * (len(c_ids) - cut)
    return ids, labels


class PackedBatches:
    """Infinite, resumable stream of packed batches drawn from an example sampler.

    ``sample(rng)`` returns one (input_ids, labels) example. With ``shard=(rank, world)`` every
    process builds the same global batch of ``rows`` rows and yields its own contiguous share, so the
    union over processes is exactly what one process would train on. Rows are filled best-fit from a small
    look-ahead buffer of examples (largest that still fits first), which leaves little padding while
    keeping examples whole. The whole state is the RNG state plus the buffer, so a resumed run sees the
    same batches.
    """

    def __init__(self, sample: Callable[[random.Random], tuple[list[int], list[int]]], seed: int,
                 rows: int, max_len: int, pad_id: int, lookahead: int = 32, shard: tuple[int, int] = (0, 1)):
        self.sample, self.rows, self.max_len, self.pad_id = sample, rows, max_len, pad_id
        self.rank, self.world = shard
        if rows % self.world:
            raise ValueError(f"{rows} rows per step cannot be split evenly across {self.world} processes")
        self.lookahead = lookahead
        self.rng = random.Random(seed)
        self.buffer: list[tuple[list[int], list[int]]] = []
        self.truncated = 0
        self.padding = 0
        self.slots = 0

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate(), "buffer": [(list(a), list(b)) for a, b in self.buffer],
                "truncated": self.truncated,
                "padding": self.padding, "slots": self.slots}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(_as_tuple(state["rng"]))
        self.buffer = [(list(a), list(b)) for a, b in state["buffer"]]
        self.truncated, self.padding, self.slots = state["truncated"], state["padding"], state["slots"]

    def _fill(self) -> None:
        while len(self.buffer) < self.lookahead:
            ids, labels = self.sample(self.rng)
            # an example's first token has nothing of its own before it: in a packed row its "prediction"
            # would come from the previous example, so it never counts
            labels = [IGNORE] + list(labels[1:])
            if len(ids) > self.max_len:
                self.truncated += 1
                ids, labels = ids[: self.max_len], labels[: self.max_len]
            self.buffer.append((ids, labels))

    def _row(self) -> tuple[list[int], list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        self._fill()
        # the oldest example always goes first, so nothing waits in the buffer for ever
        first = self.buffer.pop(0)
        ids, labels, pos = list(first[0]), list(first[1]), list(range(len(first[0])))
        while True:
            room = self.max_len - len(ids)
            best = max((i for i, ex in enumerate(self.buffer) if len(ex[0]) <= room),
                       key=lambda i: len(self.buffer[i][0]), default=None)
            if best is None:
                break
            ex_ids, ex_labels = self.buffer.pop(best)
            ids += ex_ids
            labels += ex_labels
            pos += list(range(len(ex_ids)))
            self._fill()
        pad = self.max_len - len(ids)
        self.padding += pad
        self.slots += self.max_len
        # padding is its own "example" (positions restart) with no loss
        return ids + [self.pad_id] * pad, labels + [IGNORE] * pad, pos + list(range(pad))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        rows = [self._row() for _ in range(self.rows)]
        per = self.rows // self.world
        rows = rows[self.rank * per : (self.rank + 1) * per]
        return {
            "input_ids": torch.tensor([r[0] for r in rows]),
            "labels": torch.tensor([r[1] for r in rows]),
            "position_ids": torch.tensor([r[2] for r in rows]),
        }


def _as_tuple(x: Any) -> Any:
    """random.setstate needs tuples; a state that went through JSON comes back as lists."""
    return tuple(_as_tuple(i) for i in x) if isinstance(x, list) else x


def prompt_ids(tokenizer, prompt: list[dict[str, str]]) -> list[int]:
    """Token ids of a chat prompt with the generation prompt. A prompt whose last message is the assistant's is a
    *prefill*: the model continues that text, tokenized after the generation prompt exactly as training tokenizes
    a completion (the two parts separately), so a forced prefix meets the model at the token boundary it learned."""
    if prompt and prompt[-1]["role"] == "assistant":
        head = render(tokenizer, prompt[:-1], add_generation_prompt=True)
        return (tokenizer(head, add_special_tokens=False)["input_ids"]
                + tokenizer(prompt[-1]["content"], add_special_tokens=False)["input_ids"])
    return tokenizer(render(tokenizer, prompt, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
