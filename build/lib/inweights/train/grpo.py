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
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

from inweights.config import GRPOConfig, TrainConfig
from inweights.core.errors import UserError
from inweights.core.progress import progress
from inweights.train.loop import autocast, get_accelerator, recover_checkpoint, save_checkpoint

Prompt = list[dict[str, str]]
Sample = Callable[[random.Random], tuple[Prompt, Callable[[str], float]]]
# (model, prompts, seed) -> [(prompt ids, completion ids)] in the order given
GenerateFn = Callable[[Any, list[Prompt], int], list[tuple[list[int], list[int]]]]


def group_advantages(rewards: torch.Tensor, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Advantages for rewards of shape [prompts, group]: centred on the group mean, divided by the group's
    (unbiased) std when ``scale``. A group whose rewards are all equal gets exactly zero."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale:
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


def train_grpo(
    model,
    tokenizer,
    sample: Sample,
    steps: int,
    cfg: GRPOConfig,
    tcfg: TrainConfig,
    *,
    lr: float,
    seed: int,
    desc: str = "grpo",
    log: Callable[[dict[str, Any]], None] | None = None,
    generate_fn: GenerateFn | None = None,
    out_dir: Path | None = None,
    save_every: int = 100,
) -> dict[str, Any]:
    """Train ``steps`` GRPO steps; returns the same summary as ``train_stage`` plus per-step rewards.

    The reference model for the KL term is the starting model: the adapter switched off under LoRA, else a
    frozen copy (made only when ``beta`` > 0). Each process takes its share of every step's prompts.
    With ``out_dir``, the full state (model, optimiser, scheduler, RNGs, prompt stream) is checkpointed every
    ``save_every`` steps and a rerun resumes from it, ending with the same weights as an uninterrupted run."""
    from inweights.eval.generate import generate_ids

    acc = get_accelerator()
    lora = hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
    ref = None
    if cfg.beta > 0 and not lora:
        ref = copy.deepcopy(model).eval().requires_grad_(False).to(acc.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=tcfg.weight_decay)
    total = steps * cfg.iterations
    sched = get_cosine_with_min_lr_schedule_with_warmup(
        opt, num_warmup_steps=int(tcfg.warmup_frac * total), num_training_steps=total, min_lr_rate=tcfg.min_lr_ratio)
    acc.free_memory()
    model, opt, sched = acc.prepare(model, opt, sched)
    raw = acc.unwrap_model(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if generate_fn is None:
        def generate_fn(m, prompts, s):
            return generate_ids(m, tokenizer, prompts, max_new_tokens=cfg.max_completion_length,
                                batch_size=len(prompts), temperature=cfg.temperature, top_p=cfg.top_p, seed=s)
    rng = random.Random(seed)
    stream = _Stream(rng)
    world, rank = acc.num_processes, acc.process_index
    if cfg.dynamic_sampling and world > 1:  # each process would redraw on its own groups: the shared stream would split
        raise UserError("grpo.dynamic_sampling runs in one process only (the processes' prompt streams would diverge); "
                        "set it false for multi-process runs")
    history: list[dict[str, Any]] = []
    tokens, start, elapsed = 0, 0, 0.0
    ckpt = out_dir / "ckpt" if out_dir is not None else None
    if ckpt is not None and acc.is_main_process:
        recover_checkpoint(ckpt)
    acc.wait_for_everyone()
    if ckpt is not None and (ckpt / "progress.json").is_file():
        acc.load_state(str(ckpt))
        prog = json.loads((ckpt / "progress.json").read_text())
        start, history, tokens, elapsed = prog["step"], prog["history"], prog["tokens"], prog["elapsed"]
        stream.load_state_dict(prog["data"])
    if log is not None and hasattr(log, "rewind"):  # what the interrupted run logged after its checkpoint comes again
        log.rewind(start)
    t0 = time.perf_counter()
    bar = progress(total=steps, initial=start, desc=desc, unit="step", disable=not acc.is_main_process)
    for step in range(start + 1, steps + 1):
        t_gen = time.perf_counter()
        rows, grouped, all_rewards, n_groups, n_zero, draws = _draw_groups(
            sample, rng, generate_fn, raw, tokenizer, cfg, (seed * 1_000_003 + step * 101 + rank) % 2**63, rank, world)
        gen_s = time.perf_counter() - t_gen
        adv = group_advantages(grouped, cfg.scale_rewards).reshape(-1).to(acc.device)
        n_rows = len(rows)
        n_tok = float(sum(len(c) for _, c in rows))
        if world > 1:  # normalisers over the global batch: DDP averages gradients over processes
            g = acc.reduce(torch.tensor([n_rows, n_tok], device=acc.device, dtype=torch.float), reduction="sum")
            n_rows_g, n_tok_g = int(g[0].item()), float(g[1].item())
        else:
            n_rows_g, n_tok_g = n_rows, n_tok
        chunks = [list(range(i, min(i + cfg.micro_batch, n_rows))) for i in range(0, n_rows, cfg.micro_batch)]
        old, refs = {}, {}
        needs_old = cfg.iterations > 1
        with torch.no_grad():
            for ci, idx in enumerate(chunks):
                sub = [rows[i] for i in idx]
                with autocast(acc, tcfg.bf16):
                    if needs_old:
                        old[ci] = token_logps(raw, sub, pad)[0]
                    if cfg.beta > 0:
                        if lora:
                            with _adapter_off(raw):
                                refs[ci] = token_logps(raw, sub, pad)[0]
                        else:
                            refs[ci] = token_logps(ref, sub, pad)[0]
        model.train()
        agg = {"loss": 0.0, "kl": 0.0, "clipped": 0.0, "tokens": 0.0}
        for _ in range(cfg.iterations):
            for ci, idx in enumerate(chunks):
                sub = [rows[i] for i in idx]
                sync = contextlib.nullcontext() if ci == len(chunks) - 1 else acc.no_sync(model)
                with sync:
                    with autocast(acc, tcfg.bf16):
                        logp, mask = token_logps(model, sub, pad)
                    o = old[ci] if needs_old else logp.detach()
                    loss, st = grpo_loss(logp, o, refs.get(ci), adv[idx[0] : idx[-1] + 1], mask, cfg,
                                         n_rows_g, n_tok_g)
                    acc.backward(loss * world)
                agg["loss"] += loss.item()
                for k in ("kl", "clipped", "tokens"):
                    agg[k] += st[k]
            if not chunks:  # this process had no prompts: still take part in the collective step
                (sum(p.sum() for p in params) * 0).backward()
            if tcfg.grad_clip:
                acc.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        tokens += int(sum(len(p) + len(c) for p, c in rows)) * world
        lens = [len(c) for _, c in rows]
        stats = torch.tensor([all_rewards.sum().item(), (all_rewards ** 2).sum().item(), float(len(all_rewards)),
                              float(sum(lens)), agg["kl"], agg["clipped"], agg["tokens"], float(n_zero), float(n_groups),
                              float(n_rows), float(grouped.shape[0]), float(draws)], device=acc.device)
        if world > 1:
            stats = acc.reduce(stats, reduction="sum")
        s = stats.tolist()
        n = max(s[2], 1.0)
        mean = s[0] / n
        # reward: over every completion sampled this step (what the policy does), kept or not; completion_len: the
        # trained ones; zero_std_groups: the share of all drawn groups whose rewards agreed (no signal)
        rec = {"stage": desc, "step": step, "objective": "grpo", "reward_mean": mean,
               "reward_std": math.sqrt(max(s[1] / n - mean * mean, 0.0)), "completion_len": s[3] / max(s[9], 1.0),
               "kl": s[4] / max(s[6], 1.0), "clip_frac": s[5] / max(s[6], 1.0),
               "zero_std_groups": s[7] / max(s[8], 1.0), "groups_trained": int(s[10]), "draws": s[11] / world,
               "loss": agg["loss"] / cfg.iterations,
               "lr": sched.get_last_lr()[0], "gen_s": round(gen_s, 3),
               "tok_s": tokens / max(time.perf_counter() - t0, 1e-9)}
        history.append(rec)
        if log and acc.is_main_process:
            log(rec)
        bar.set_postfix(reward=f"{mean:.3f}", len=f"{rec['completion_len']:.0f}", kl=f"{rec['kl']:.4f}")
        bar.update(1)
        if not math.isfinite(rec["loss"]):
            raise FloatingPointError(f"GRPO loss became {rec['loss']} at step {step} of {desc}")
        if ckpt is not None and step % save_every == 0 and step < steps:
            save_checkpoint(acc, ckpt, step, history, tokens, elapsed + time.perf_counter() - t0, stream, None)
    bar.close()
    if ckpt is not None and ckpt.exists() and acc.is_main_process:
        shutil.rmtree(ckpt, ignore_errors=True)
    acc.wait_for_everyone()
    from accelerate.utils import DistributedType

    state_dict = acc.get_state_dict(model) if acc.distributed_type in (DistributedType.FSDP,
                                                                        DistributedType.DEEPSPEED) else None
    seconds = elapsed + time.perf_counter() - t0
    return {"steps": steps, "tokens": tokens, "seconds": seconds, "tok_s": tokens / max(seconds, 1e-9),
            "history": history, "stopped_early": False, "engine": f"{acc.distributed_type.value} x{world}",
            "model": acc.unwrap_model(model), "state_dict": state_dict,
            "reward_first": history[0]["reward_mean"] if history else None,
            "reward_last": history[-1]["reward_mean"] if history else None}
