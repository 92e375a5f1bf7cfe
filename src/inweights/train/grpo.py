"""Group-relative policy optimisation (GRPO; Shao et al. 2024, DeepSeekMath), one stage at a time.

Written here rather than taken from TRL's GRPOTrainer because a stage must share everything else with our
SFT stages: the accelerate set-up, the curriculum's prompt stream, the same generation backend as the
evaluator, LoRA adapters as the reference model, and per-step logs in the run's metrics.jsonl. The trainer
never sees a domain: it gets ``sample(rng) -> (chat prompt, reward(text) -> float)``.

Per step: draw P prompts, sample G completions each (temperature, top-p), reward them, and normalise the
rewards within each group, A = (r - mean) / (std + eps); then ``iterations`` optimiser steps on

    L = -min(rho A, clip(rho, 1 - eps, 1 + eps_high) A) + beta * k3,   rho = pi / pi_old,
    k3 = exp(ref - logp) - (ref - logp) - 1   (an unbiased, non-negative estimate of KL(pi || ref)),

averaged per completion then over completions (``grpo``) or over all tokens (``dapo``). With ``dynamic_sampling``
(DAPO), groups whose rewards all agree are replaced by fresh draws before the update. Each step logs the share of
all-equal groups (``zero_std_groups``): the part of the batch GRPO cannot learn from. The loss, gradients and
updates agree with TRL's GRPOTrainer on the same batches (tests/test_grpo_trl_parity.py).
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from inweights.config import GRPOConfig, TrainConfig
from inweights.core.errors import UserError
from inweights.train.loop import Objective, autocast, train_stage

Prompt = list[dict[str, str]]
Sample = Callable[[random.Random], tuple[Prompt, Callable[[str], float]]]
# (model, prompts, seed) -> [(prompt ids, completion ids)] in the order given
GenerateFn = Callable[[Any, list[Prompt], int], list[tuple[list[int], list[int]]]]


def group_advantages(rewards: torch.Tensor, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Advantages for rewards of shape [prompts, group]: centred on the group mean, divided by the group's
    (unbiased) std when ``scale``. A group whose rewards are all equal gets exactly zero."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale or rewards.numel() == 0:  # no groups (dynamic sampling found none that disagree): nothing to scale
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + eps)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy || reference) (Schulman 2020): >= 0, zero where they agree."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def token_logps(model, rows: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of each row's completion tokens under ``model``: ([B, T], mask [B, T]), T the
    longest completion. Rows are prompt + completion, right-padded (positions then count from 0 for every row)."""
    device = next(model.parameters()).device
    width = max(len(p) + len(c) for p, c in rows)
    tmax = max(max(len(c) for _, c in rows), 1)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (p, c) in enumerate(rows):
        ids[r, : len(p) + len(c)] = torch.tensor(p + c)
        attn[r, : len(p) + len(c)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False).logits
    out = torch.zeros((len(rows), tmax), device=device)
    mask = torch.zeros((len(rows), tmax), device=device)
    for r, (p, c) in enumerate(rows):
        if not c:
            continue
        # the logits at position i predict token i + 1: completion token j sits at len(p) + j
        lg = logits[r, len(p) - 1 : len(p) + len(c) - 1].float()
        tgt = torch.tensor(c, device=device)
        out[r, : len(c)] = lg.log_softmax(-1).gather(-1, tgt[:, None])[:, 0]
        mask[r, : len(c)] = 1
    return out, mask


def grpo_loss(logp, old_logp, ref_logp, adv, mask, cfg: GRPOConfig, n_rows: int, n_tokens: float):
    """(loss, stats) for one micro-batch; normalised by the whole batch's rows or tokens, so micro-batch
    losses sum to the batch loss."""
    ratio = torch.exp(logp - old_logp)
    hi = cfg.clip_eps_high if cfg.clip_eps_high is not None else cfg.clip_eps
    a = adv[:, None]
    per_tok = -torch.minimum(ratio * a, ratio.clamp(1 - cfg.clip_eps, 1 + hi) * a)
    kl = k3_kl(logp, ref_logp) if ref_logp is not None else torch.zeros_like(logp)
    if ref_logp is not None and cfg.beta > 0:
        per_tok = per_tok + cfg.beta * kl
    if cfg.loss_type == "grpo":
        loss = ((per_tok * mask).sum(1) / mask.sum(1).clamp(min=1)).sum() / n_rows
    else:
        loss = (per_tok * mask).sum() / max(n_tokens, 1.0)
    clipped = ((ratio < 1 - cfg.clip_eps) | (ratio > 1 + hi)).float()
    stats = {"kl": float((kl.detach() * mask).sum()), "clipped": float((clipped * mask).sum()), "tokens": float(mask.sum())}
    return loss, stats


def _draw_groups(sample: Sample, rng: random.Random, generate_fn: GenerateFn, model, tokenizer, cfg: GRPOConfig,
                 gen_seed: int, rank: int, world: int):
    """This step's groups: ``prompts_per_step`` prompts (the same draws on every process, each process sampling its
    share), ``group_size`` completions each, rewarded. With ``dynamic_sampling`` (DAPO), groups whose rewards all
    agree are dropped and more prompts drawn, at most ``max_draws`` times, until ``prompts_per_step`` groups carry
    signal (a process keeps at most its share). Returns (rows, rewards [groups, G] of the kept groups, every reward
    sampled, groups drawn, of them all-equal, draws made)."""
    g = cfg.group_size
    rows: list[tuple[list[int], list[int]]] = []
    kept: list[torch.Tensor] = []
    every: list[torch.Tensor] = []
    n_groups = n_zero = draws = 0
    need = len(range(cfg.prompts_per_step)[rank::world])  # this process's share of the groups
    for d in range(cfg.max_draws if cfg.dynamic_sampling else 1):
        drawn = [sample(rng) for _ in range(cfg.prompts_per_step)]
        mine = drawn[rank::world]
        draws += 1
        prompts = [p for p, _ in mine for _ in range(g)]
        got = generate_fn(model, prompts, (gen_seed + d * 7_919) % 2**63) if prompts else []
        texts = [tokenizer.decode(c, skip_special_tokens=True) for _, c in got]
        r = torch.tensor([float(mine[i // g][1](t)) for i, t in enumerate(texts)])
        every.append(r)
        for j, grp in enumerate(r.view(-1, g) if len(got) else torch.zeros(0, g)):
            n_groups += 1
            flat = bool((grp == grp[0]).all())
            n_zero += flat
            if (cfg.dynamic_sampling and flat) or len(kept) >= need:
                continue
            kept.append(grp)
            rows += got[j * g : (j + 1) * g]
        if len(kept) >= need:
            break
    grouped = torch.stack(kept) if kept else torch.zeros(0, g)
    return rows, grouped, torch.cat(every) if every else torch.zeros(0), n_groups, n_zero, draws


class _Stream:
    """The prompt stream's position (its RNG state), saved and restored with a checkpoint."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def state_dict(self):
        version, internal, gauss = self.rng.getstate()
        return [version, list(internal), gauss]

    def load_state_dict(self, s):
        self.rng.setstate((s[0], tuple(s[1]), s[2]))


@contextlib.contextmanager
def _adapter_off(model):
    with model.disable_adapter():
        yield


class GRPOObjective(Objective):
    """GRPO as an objective of the one training loop (``train.loop.train_stage``), as distillation is: a batch is
    one step's groups — prompts drawn from the stream, completions sampled by the policy, rewarded, with their
    advantages and (for ``iterations`` > 1) the sampling policy's log-probabilities — and the loop takes
    ``iterations`` optimiser steps on it. The loop owns placement, clipping, the schedule, checkpoints (the prompt
    stream is this objective's state) and logging; GRPO brings its optimiser (AdamW, betas (0.9, 0.99), every
    weight decayed), its micro-batches (``grpo.micro_batch`` completions), its own normalisation (by the whole
    batch's completions or tokens, over every process) and a log record every step.

    The reference model for the KL term is the starting model: the adapter switched off under LoRA, else a frozen
    copy (made only when ``beta`` > 0). Each process takes its share of every step's prompts."""

    compilable = False  # generation runs the policy between updates

    def __init__(self, tokenizer, sample: Sample, cfg: GRPOConfig, tcfg: TrainConfig, *, seed: int,
                 generate_fn: GenerateFn | None = None):
        self.tok, self.sample, self.cfg, self.tcfg, self.seed = tokenizer, sample, cfg, tcfg, seed
        self.updates_per_batch = cfg.iterations
        self.rng = random.Random(seed)
        self.stream = _Stream(self.rng)
        self.step = 0
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if generate_fn is None:
            from inweights.eval.generate import generate_ids

            def generate_fn(m, prompts, s):
                return generate_ids(m, tokenizer, prompts, max_new_tokens=cfg.max_completion_length,
                                    batch_size=len(prompts), temperature=cfg.temperature, top_p=cfg.top_p, seed=s)
        self.generate_fn = generate_fn

    def optimizer(self, model, lr, cfg, acc):
        self.params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(self.params, lr=lr, betas=(0.9, 0.99), weight_decay=self.tcfg.weight_decay)

    def begin(self, model, acc) -> None:
        self.model, self.acc, self.raw = model, acc, acc.unwrap_model(model)
        self.lora = hasattr(self.raw, "disable_adapter") and hasattr(self.raw, "peft_config")
        self.ref = None
        if self.cfg.beta > 0 and not self.lora:
            self.ref = copy.deepcopy(self.raw).eval().requires_grad_(False).to(acc.device)
        if self.cfg.dynamic_sampling and acc.num_processes > 1:  # each process would redraw on its own groups
            raise UserError("grpo.dynamic_sampling runs in one process only (the processes' prompt streams would "
                            "diverge); set it false for multi-process runs")

    def micro_rows(self, cfg, world) -> int:
        return self.cfg.micro_batch

    def next_batch(self) -> dict[str, Any]:
        if self.step is None:
            raise UserError("this GRPO checkpoint was written by an older inweights: remove the stage's ckpt/ folder "
                            "to train the stage again")
        self.step += 1
        acc, cfg, world, rank = self.acc, self.cfg, self.acc.num_processes, self.acc.process_index
        t_gen = time.perf_counter()
        rows, grouped, all_rewards, n_groups, n_zero, draws = _draw_groups(
            self.sample, self.rng, self.generate_fn, self.raw, self.tok, cfg,
            (self.seed * 1_000_003 + self.step * 101 + rank) % 2**63, rank, world)
        gen_s = time.perf_counter() - t_gen
        adv = group_advantages(grouped, cfg.scale_rewards).reshape(-1).to(acc.device)
        n_rows, n_tok = len(rows), float(sum(len(c) for _, c in rows))
        if world > 1:  # normalisers over the global batch: DDP averages gradients over processes
            g = acc.reduce(torch.tensor([n_rows, n_tok], device=acc.device, dtype=torch.float), reduction="sum")
            n_rows_g, n_tok_g = int(g[0].item()), float(g[1].item())
        else:
            n_rows_g, n_tok_g = n_rows, n_tok
        old, refs = {}, {}
        with torch.no_grad():
            for ci, i in enumerate(range(0, n_rows, cfg.micro_batch)):
                sub = rows[i : i + cfg.micro_batch]
                with autocast(acc, self.tcfg.bf16):
                    if cfg.iterations > 1:
                        old[ci] = token_logps(self.raw, sub, self.pad)[0]
                    if cfg.beta > 0:
                        if self.lora:
                            with _adapter_off(self.raw):
                                refs[ci] = token_logps(self.raw, sub, self.pad)[0]
                        else:
                            refs[ci] = token_logps(self.ref, sub, self.pad)[0]
        self.model.train()
        self.agg = {"loss": 0.0, "kl": 0.0, "clipped": 0.0, "tokens": 0.0}
        self.last = {"rows": rows, "adv": adv, "old": old, "refs": refs, "n_rows_g": n_rows_g, "n_tok_g": n_tok_g,
                     "grouped": grouped, "all_rewards": all_rewards, "n_groups": n_groups, "n_zero": n_zero,
                     "draws": draws, "gen_s": gen_s}
        return self.last

    def rows(self, batch) -> int:
        return len(batch["rows"])

    def targets(self, batch) -> torch.Tensor:
        return torch.tensor(float(len(batch["rows"])))

    def normaliser(self, batch, acc) -> torch.Tensor:
        return torch.ones((), device=acc.device)  # ``grpo_loss`` is normalised by the whole batch already

    def tokens(self, batch) -> int:
        return int(sum(len(p) + len(c) for p, c in batch["rows"]))

    def slice(self, batch, start, n, device) -> dict[str, Any]:
        ci = start // self.cfg.micro_batch
        return {"rows": batch["rows"][start : start + n], "adv": batch["adv"][start : start + n],
                "old": batch["old"].get(ci), "ref": batch["refs"].get(ci), "n_rows_g": batch["n_rows_g"],
                "n_tok_g": batch["n_tok_g"]}

    def loss(self, model, mb) -> torch.Tensor:
        logp, mask = token_logps(model, mb["rows"], self.pad)
        old = mb["old"] if self.cfg.iterations > 1 else logp.detach()
        with torch.autocast(device_type=logp.device.type, enabled=False):  # the loss in fp32
            loss, st = grpo_loss(logp, old, mb["ref"], mb["adv"], mask, self.cfg, mb["n_rows_g"], mb["n_tok_g"])
        self.agg["loss"] += loss.item()
        for k in ("kl", "clipped", "tokens"):
            self.agg[k] += st[k]
        return loss

    def record(self, step, steps, loss, lr, rate, cfg, desc) -> dict[str, Any]:
        b, acc = self.last, self.acc
        rows, all_rewards, grouped = b["rows"], b["all_rewards"], b["grouped"]
        lens = [len(c) for _, c in rows]
        stats = torch.tensor([all_rewards.sum().item(), (all_rewards ** 2).sum().item(), float(len(all_rewards)),
                              float(sum(lens)), self.agg["kl"], self.agg["clipped"], self.agg["tokens"],
                              float(b["n_zero"]), float(b["n_groups"]), float(len(rows)), float(grouped.shape[0]),
                              float(b["draws"])], device=acc.device)
        if acc.num_processes > 1:
            stats = acc.reduce(stats, reduction="sum")
        s = stats.tolist()
        n = max(s[2], 1.0)
        mean = s[0] / n
        # reward: over every completion sampled this step (what the policy does), kept or not; completion_len: the
        # trained ones; zero_std_groups: the share of all drawn groups whose rewards agreed (no signal)
        return {"stage": desc, "step": step, "objective": "grpo", "reward_mean": mean,
                "reward_std": math.sqrt(max(s[1] / n - mean * mean, 0.0)), "completion_len": s[3] / max(s[9], 1.0),
                "kl": s[4] / max(s[6], 1.0), "clip_frac": s[5] / max(s[6], 1.0),
                "zero_std_groups": s[7] / max(s[8], 1.0), "groups_trained": int(s[10]),
                "draws": s[11] / acc.num_processes, "loss": self.agg["loss"] / self.cfg.iterations, "lr": lr,
                "gen_s": round(b["gen_s"], 3), "tok_s": rate}

    def state_dict(self) -> dict[str, Any]:
        return {"stream": self.stream.state_dict(), "step": self.step}

    def load_state_dict(self, state) -> None:
        if isinstance(state, list):  # a checkpoint of the loop GRPO had before it was an objective: no step count
            self.stream.load_state_dict(state)
            self.step = None
            return
        self.stream.load_state_dict(state["stream"])
        self.step = state["step"]

    def stats(self, history) -> dict[str, Any]:
        return {"reward_first": history[0]["reward_mean"] if history else None,
                "reward_last": history[-1]["reward_mean"] if history else None}


def train_grpo(model, tokenizer, sample: Sample, steps: int, cfg: GRPOConfig, tcfg: TrainConfig, *, lr: float,
               seed: int, desc: str = "grpo", log: Callable[[dict[str, Any]], None] | None = None,
               generate_fn: GenerateFn | None = None, out_dir: Path | None = None,
               save_every: int = 100) -> dict[str, Any]:
    """Train ``steps`` GRPO steps (``GRPOObjective`` on ``train_stage``); returns ``train_stage``'s summary plus the
    first and last step's mean reward. With ``out_dir``, the full state (model, optimiser, scheduler, RNGs, prompt
    stream) is checkpointed every ``save_every`` steps and a rerun resumes from it, ending with the same weights as
    an uninterrupted run."""
    objective = GRPOObjective(tokenizer, sample, cfg, tcfg, seed=seed, generate_fn=generate_fn)
    return train_stage(model, objective, steps, tcfg, out_dir, lr=lr, save_every=save_every, desc=desc, log=log)
