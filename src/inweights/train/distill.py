"""The ``distill`` objective: a teacher that sees extra context, a student that does not.

Teacher and student read different prompts but the same gold answer (teacher forcing). Each row is
``prompt + answer`` right-padded; the answer's first token sits at ``prompt_len`` in its own row, so
the logits that predict answer token j sit at ``prompt_len - 1 + j`` — in the student's row and in the
teacher's row alike. Rows are aligned through these positions (gathered), never through padding.
Shifting by one this way is what makes the first answer token count (the paper's released code masks
without the shift and never distils it).

    loss = tau^2 * KL(p_teacher^tau || p_student^tau)           (forward KL, full vocabulary)
         + beta  * mean over layers and positions of || h_s/|h_s| - h_t/|h_t| ||^2
         + ce_weight * cross-entropy(student, gold answer)

averaged over answer tokens. Written by hand: the pieces are a few tensor ops, and no library
(TRL's GKD trainer included) aligns two different prompts on one answer or matches hidden states.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from inweights.train.loop import Objective


@dataclass
class PairBatch:
    """Padded student and teacher rows of the same examples and where their answers are."""

    s_ids: torch.Tensor  # (B, Ls)
    s_mask: torch.Tensor
    t_ids: torch.Tensor  # (B, Lt)
    t_mask: torch.Tensor
    s_pos: torch.Tensor  # (N,) flat indices b * Ls + position predicting an answer token
    t_pos: torch.Tensor  # (N,) the same answer tokens in the teacher's rows
    targets: torch.Tensor  # (N,) the gold answer tokens
    rows: torch.Tensor | None = None  # which of an objective's examples each row is (set by ``PairObjective``)

    def to(self, device) -> PairBatch:
        return PairBatch(**{k: v.to(device) if v is not None else None for k, v in self.__dict__.items()})


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def answer_positions(prompt_lens: list[int], answer_lens: list[int], width: int) -> torch.Tensor:
    """Flat indices of the positions whose logits predict each answer token (the first included)."""
    idx = [b * width + p - 1 + j for b, (p, a) in enumerate(zip(prompt_lens, answer_lens)) for j in range(a)]
    return torch.tensor(idx, dtype=torch.long)


def make_pair_batch(student_prompts: list[list[int]], teacher_prompts: list[list[int]],
                    answers: list[list[int]], pad_id: int) -> PairBatch:
    if not (len(student_prompts) == len(teacher_prompts) == len(answers)):
        raise ValueError("student, teacher and answer lists differ in length")
    if any(not p for p in student_prompts + teacher_prompts) or any(not a for a in answers):
        raise ValueError("empty prompt or answer")
    s_ids, s_mask = _pad([p + a for p, a in zip(student_prompts, answers)], pad_id)
    t_ids, t_mask = _pad([p + a for p, a in zip(teacher_prompts, answers)], pad_id)
    alen = [len(a) for a in answers]
    return PairBatch(
        s_ids, s_mask, t_ids, t_mask,
        answer_positions([len(p) for p in student_prompts], alen, s_ids.shape[1]),
        answer_positions([len(p) for p in teacher_prompts], alen, t_ids.shape[1]),
        torch.tensor([t for a in answers for t in a], dtype=torch.long),
    )


def forward(model, ids: torch.Tensor, mask: torch.Tensor, hidden: bool):
    """Right-padded rows: positions are 0..len-1 for every row, so no position ids are needed."""
    return model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden, use_cache=False)


def default_layers(n_hidden: int) -> list[int]:
    """hidden_states has n_layers + 1 entries (embeddings first); all but the last layer's output."""
    return list(range(1, n_hidden - 1))


def teacher_rows(t_logits: torch.Tensor, batch: PairBatch, t_hidden=None,
                 layers: list[int] | None = None) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """The teacher's logits (N, V) and, given its hidden states, each layer's (N, H) at the batch's answer
    positions, in answer-token order."""
    t = t_logits.reshape(-1, t_logits.shape[-1]).index_select(0, batch.t_pos).float().detach()
    if t_hidden is None:
        return t, None
    layers = layers if layers is not None else default_layers(len(t_hidden))
    return t, [t_hidden[li].reshape(-1, t_hidden[li].shape[-1]).index_select(0, batch.t_pos).float().detach()
               for li in layers]


def distill_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, batch: PairBatch, *, tau: float = 1.0,
                 beta: float = 0.0, s_hidden=None, t_hidden=None, layers: list[int] | None = None,
                 ce_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """The objective on answer positions; returns the total and its parts (``kl``, ``hidden``, ``ce``)."""
    if beta > 0 and (s_hidden is None or t_hidden is None):
        raise ValueError("beta > 0 needs the hidden states of both models")
    t, ht = teacher_rows(t_logits, batch, t_hidden if beta > 0 else None, layers)
    return distill_loss_rows(s_logits, t, batch, tau=tau, beta=beta, s_hidden=s_hidden, t_hidden_rows=ht,
                             layers=layers, ce_weight=ce_weight)


def distill_loss_rows(s_logits: torch.Tensor, t: torch.Tensor, batch: PairBatch, *, tau: float = 1.0,
                      beta: float = 0.0, s_hidden=None, t_hidden_rows: list[torch.Tensor] | None = None,
                      layers: list[int] | None = None, ce_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """``distill_loss`` with the teacher's side already gathered (``teacher_rows``; computed once and kept, when
    the teacher cannot change)."""
    vocab = s_logits.shape[-1]
    s = s_logits.reshape(-1, vocab).index_select(0, batch.s_pos).float()
    if t.shape[-1] != vocab:
        raise ValueError(f"teacher vocabulary {t.shape[-1]} != student vocabulary {vocab}")
    log_ps = F.log_softmax(s / tau, dim=-1)
    log_pt = F.log_softmax(t / tau, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean() * tau * tau
    zero = kl.new_zeros(())
    hid = zero
    if beta > 0:
        if s_hidden is None or t_hidden_rows is None:
            raise ValueError("beta > 0 needs the hidden states of both models")
        layers = layers if layers is not None else default_layers(len(s_hidden))
        if len(layers) != len(t_hidden_rows):
            raise ValueError(f"{len(t_hidden_rows)} teacher layers for {len(layers)} student layers")
        parts = []
        for li, ht in zip(layers, t_hidden_rows):
            hs = s_hidden[li].reshape(-1, s_hidden[li].shape[-1]).index_select(0, batch.s_pos).float()
            parts.append((F.normalize(hs, dim=-1) - F.normalize(ht, dim=-1)).pow(2).sum(-1).mean())
        hid = torch.stack(parts).mean()
    ce = F.cross_entropy(s, batch.targets) if ce_weight > 0 else zero
    return {"loss": kl + beta * hid + ce_weight * ce, "kl": kl.detach(), "hidden": hid.detach(), "ce": ce.detach()}


class PairObjective(Objective):
    """A stage objective (``train.loop.Objective``) over tokenized (student prompt, teacher prompt, answer)
    examples, in epochs: each epoch visits every example once in a seeded shuffled order, ``batch_size`` at a
    time (the last batch of an epoch may be short).

    ``teacher=None``: cross-entropy of the gold answer after the student prompt (SFT on unpacked pairs).
    Otherwise the ``distill_loss`` of the student reading the student prompt against the teacher reading the
    teacher prompt: ``teacher`` is a frozen model, or ``"adapter_off"`` (the trained model itself with its
    LoRA adapter disabled). ``parts`` accumulates each term's per-example mean over the current epoch.

    The teacher is frozen, so what it gives each example never changes: at the first step its logits and hidden
    states at every example's answer positions are computed once — in fixed chunks of examples in index order,
    in eval mode, so the same examples give the same values however the stage was interrupted and resumed — and
    kept for every epoch (an epoch then costs the student's passes only), unless they would take more than
    ``cache_bytes`` (long answers over a large vocabulary), when the teacher runs beside the student every step.
    """

    cache_bytes = 2 << 30

    def __init__(self, examples: list[tuple[list[int], list[int], list[int]]], batch_size: int, seed: int,
                 pad_id: int, *, teacher=None, tau: float = 1.0, beta: float = 0.0,
                 layers: list[int] | None = None, ce_weight: float = 0.0):
        if not examples:
            raise ValueError("no training examples")
        self.examples, self.batch_size, self.seed, self.pad_id = examples, batch_size, seed, pad_id
        self.teacher, self.tau, self.beta, self.layers, self.ce_weight = teacher, tau, beta, layers, ce_weight
        self.steps_per_epoch = math.ceil(len(examples) / batch_size)
        self._teacher_cache: list[tuple[torch.Tensor, list[torch.Tensor] | None]] | None = None
        self._reset(0, 0)

    def _reset(self, epoch: int, pos: int) -> None:
        # one generator over the whole stage (epoch e's order is its e-th shuffle): a resume replays the shuffles
        self.rng = random.Random(self.seed)
        self.epoch, self.pos, self.order = 0, 0, []
        for _ in range(epoch + (1 if pos else 0)):
            self._shuffle()
        self.epoch, self.pos = epoch, pos
        self.parts = {"loss": 0.0, "kl": 0.0, "hidden": 0.0, "ce": 0.0}

    def _shuffle(self) -> None:
        self.order = list(range(len(self.examples)))
        self.rng.shuffle(self.order)

    def next_batch(self) -> list[int]:
        if self.pos == 0:
            self._shuffle()
        batch = self.order[self.pos : self.pos + self.batch_size]
        self.pos += len(batch)
        if self.pos >= len(self.order):
            self.epoch, self.pos = self.epoch + 1, 0
        return batch

    def rows(self, batch) -> int:
        return len(batch)

    def targets(self, batch) -> torch.Tensor:
        return torch.tensor(sum(len(self.examples[i][2]) for i in batch))

    def tokens(self, batch) -> int:
        return sum(len(s) + len(t) + 2 * len(a) if self.teacher is not None else len(s) + len(a)
                   for s, t, a in (self.examples[i] for i in batch))

    def slice(self, batch, start, n, device) -> PairBatch:
        rows = batch[start : start + n]
        exs = [self.examples[i] for i in rows]
        mb = make_pair_batch([s for s, _, _ in exs], [t for _, t, _ in exs], [a for _, _, a in exs], self.pad_id)
        mb.rows = torch.tensor(rows, dtype=torch.long)
        return mb.to(device)

    def _teacher_model(self, model):
        """The frozen teacher and a context that makes it one (the adapter off, for ``"adapter_off"``)."""
        import contextlib

        if self.teacher == "adapter_off":
            inner = getattr(model, "module", model)  # under DDP the PEFT model is wrapped
            return inner, inner.disable_adapter()
        return self.teacher, contextlib.nullcontext()

    def _teacher_side(self, model, mb: PairBatch) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The teacher's logits and hidden states at ``mb``'s answer positions (``teacher_rows``): from the cache
        when it fits (filled at the first call), else from a forward beside the student's."""
        need_h = self.beta > 0
        if self._teacher_cache is None and mb.rows is not None:
            size = self._cache_size(model)
            self._teacher_cache = self._fill_cache(model, mb.s_ids.device) if size <= self.cache_bytes else []
        if self._teacher_cache:
            rows = mb.rows.tolist()
            t = torch.cat([self._teacher_cache[i][0] for i in rows])
            if not need_h:
                return t, None
            n_layers = len(self._teacher_cache[rows[0]][1])
            return t, [torch.cat([self._teacher_cache[i][1][li] for i in rows]) for li in range(n_layers)]
        teacher, ctx = self._teacher_model(model)
        with torch.no_grad(), ctx:
            out = forward(teacher, mb.t_ids, mb.t_mask, need_h)
        return teacher_rows(out.logits, mb, out.hidden_states if need_h else None, self.layers)

    def _cache_size(self, model) -> float:
        """Bytes the teacher's side of every example would take (fp32 logits, and hidden states when used)."""
        config = getattr(getattr(model, "module", model), "config", None)
        vocab, width, n_layers = (getattr(config, a, None) for a in ("vocab_size", "hidden_size", "num_hidden_layers"))
        if None in (vocab, width, n_layers):
            return math.inf  # a model that does not say its sizes: no cache
        layers = len(self.layers) if self.layers is not None else n_layers - 1
        per_token = vocab + (layers * width if self.beta > 0 else 0)
        return 4 * per_token * sum(len(a) for _, _, a in self.examples)

    def _fill_cache(self, model, device) -> list[tuple[torch.Tensor, list[torch.Tensor] | None]]:
        need_h = self.beta > 0
        teacher, ctx = self._teacher_model(model)
        was_training = teacher.training
        teacher.eval()  # a frozen teacher: no dropout
        cache = []
        try:
            with torch.no_grad(), ctx:
                for start in range(0, len(self.examples), self.batch_size):
                    exs = self.examples[start : start + self.batch_size]
                    mb = make_pair_batch([t for _, t, _ in exs], [t for _, t, _ in exs], [a for _, _, a in exs],
                                         self.pad_id).to(device)
                    out = forward(teacher, mb.t_ids, mb.t_mask, need_h)
                    t, ht = teacher_rows(out.logits, mb, out.hidden_states if need_h else None, self.layers)
                    ends = torch.tensor([len(a) for _, _, a in exs]).cumsum(0).tolist()
                    for lo, hi in zip([0] + ends[:-1], ends):
                        cache.append((t[lo:hi].clone(), [h[lo:hi].clone() for h in ht] if ht is not None else None))
        finally:
            teacher.train(was_training)
        return cache

    def loss(self, model, mb: PairBatch) -> torch.Tensor:
        n = mb.targets.numel()
        share = mb.s_ids.shape[0] / len(self.examples)  # of the epoch's examples: parts are per-example means
        if self.teacher is None:
            logits = forward(model, mb.s_ids, mb.s_mask, hidden=False).logits
            s = logits.reshape(-1, logits.shape[-1]).index_select(0, mb.s_pos).float()
            ce = F.cross_entropy(s, mb.targets, reduction="sum")
            self.parts["loss"] += float(ce.detach()) / n * share
            return ce
        need_h = self.beta > 0
        t, t_hidden = self._teacher_side(model, mb)
        s_out = forward(model, mb.s_ids, mb.s_mask, need_h)
        out = distill_loss_rows(s_out.logits, t, mb, tau=self.tau, beta=self.beta,
                                s_hidden=s_out.hidden_states if need_h else None, t_hidden_rows=t_hidden,
                                layers=self.layers, ce_weight=self.ce_weight)
        for key in self.parts:
            self.parts[key] += float(out[key].detach()) * share
        return out["loss"] * n

    def take_parts(self) -> dict[str, float]:
        """The epoch's loss terms so far, reset for the next epoch."""
        parts, self.parts = self.parts, dict.fromkeys(self.parts, 0.0)
        return parts

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._reset(state["epoch"], state["pos"])

    def stats(self, history) -> dict[str, Any]:
        return {"truncated_examples": 0, "padding_fraction": 0.0}
