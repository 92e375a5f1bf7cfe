"""The training loop: one stage of optimiser steps on an objective, on `accelerate`.

An objective (``Objective``) says where a stage's batches come from and what a slice of one costs: the
default is SFT on a stream of packed rows (``PackedCE``); ``train.distill.PairObjective`` distils a teacher
that reads another prompt (rule distillation), or trains on unpacked prompt/answer pairs. The loop owns
everything else — device placement, optimiser, schedule, clipping, accumulation, checkpoints, logging.
The same code runs on a CPU, one GPU or several processes (``accelerate launch`` / ``torchrun``).
A stage checkpoints its full state (model, optimiser, scheduler, RNG, data stream) every
``save_every`` steps, so a run killed mid-stage and resumed ends with the same weights.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

from inweights.config import TrainConfig
from inweights.core.errors import UserError
from inweights.core.progress import progress as progress_bar
from inweights.core.provenance import bf16_supported
from inweights.train.data import IGNORE, PackedBatches

_ACCELERATOR: Accelerator | None = None


def get_accelerator() -> Accelerator:
    """One Accelerator per process (accelerate's state is a process-wide singleton).

    Mixed precision is not set here but per stage (``autocast``), so a stage's numerics never depend
    on which stage happened to create the singleton first.
    """
    global _ACCELERATOR
    if _ACCELERATOR is None:
        # accelerate recognises a multi-process CPU job (gloo) only when asked for the CPU explicitly
        multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        # step_scheduler_with_optimizer=False: otherwise accelerate steps the LR schedule once per process
        # per optimiser step (it assumes the global batch grows with the process count; ours is fixed)
        _ACCELERATOR = Accelerator(mixed_precision="no", cpu=multi_cpu, step_scheduler_with_optimizer=False)
    return _ACCELERATOR


def autocast(acc: Accelerator, bf16: bool):
    """bf16 autocast where the hardware runs it fast, else a no-op context."""
    enabled = bf16 and bf16_supported()
    return torch.autocast(device_type=acc.device.type, dtype=torch.bfloat16, enabled=enabled)


def packed_logits(model, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Logits for packed rows, each example attending only to itself.

    use_cache=False matters: with a cache, transformers ignores packed-sequence position ids and lets
    packed examples attend to each other, with restarted positions that make earlier examples look
    like part of the current one (this silently stalled learning until it was found).
    """
    return model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits



# Families whose causal-LM forward is exactly ``lm_head(model(...).last_hidden_state)`` (no logit soft-capping,
# no scaling of the hidden state before the head): for them the loss can call the decoder and the head apart.
_HEAD_ON_HIDDEN = {"llama", "mistral", "qwen2", "qwen3"}


def _decoder_and_head(model):
    """(decoder, output layer) of an unwrapped causal LM of a family in ``_HEAD_ON_HIDDEN``, else None.

    Only a bare ``PreTrainedModel`` (or a ``PeftModel`` around one) qualifies: under DDP, FSDP or DeepSpeed the
    wrapper's own forward must run (gradient hooks, sharding), so those keep the full-logits path.
    """
    from peft import PeftModel
    from transformers import PreTrainedModel

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    if not isinstance(base, PreTrainedModel) or getattr(base.config, "model_type", None) not in _HEAD_ON_HIDDEN:
        return None
    decoder, head = getattr(base, "model", None), base.get_output_embeddings()
    if decoder is None or head is None:
        return None
    return decoder, head


def step_loss(model, input_ids: torch.Tensor, position_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over the target positions (``labels != IGNORE``) of packed rows.

    The output layer runs only on the hidden states of target positions: in our SFT data most positions are
    prompts or padding, and the vocabulary projection plus its fp32 softmax over every position was the largest
    avoidable cost of a step. Same loss as ``cross_entropy(packed_logits(...))`` up to float rounding (tested);
    models outside ``_decoder_and_head`` take that full-logits path.
    """
    targets = labels[:, 1:]
    split = _decoder_and_head(model)
    if split is None:
        logits = packed_logits(model, input_ids, position_ids)[:, :-1]
        logits, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)  # a wrapper has no .config
    else:
        decoder, head = split
        hidden = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
        keep = targets != IGNORE
        logits, targets = head(hidden[:, :-1][keep]), targets[keep]
    with torch.autocast(device_type=logits.device.type, enabled=False):  # the loss in fp32, as before
        return torch.nn.functional.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="sum")


def _compile(model, backend: str = "inductor"):
    """``torch.compile`` the decoder in place (``nn.Module.compile``: parameters and state-dict keys unchanged),
    for the models ``_decoder_and_head`` splits; returns the compiled module, or None."""
    split = _decoder_and_head(model)
    if split is None:
        return None
    split[0].compile(backend=backend)
    return split[0]


def _fused_ok(acc: Accelerator, params: list) -> bool:
    """torch's fused AdamW (one kernel over all parameters): on CPU and CUDA, not where an engine owns the
    optimiser step (DeepSpeed) or shards parameters (FSDP)."""
    if acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        return False
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


class Objective:
    """What a stage minimises. A batch is this process's rows of one step; the loop slices it into micro-batches
    and averages the summed loss over the step's ``targets`` (all processes together). The hooks below the
    required methods have the defaults SFT needs; GRPO (``train.grpo.GRPOObjective``) overrides them: it brings
    its own optimiser, takes several optimiser steps on each generated batch, normalises its loss itself and logs
    every step."""

    updates_per_batch: int = 1  # optimiser steps on each batch (GRPO's ``iterations``)
    compilable: bool = True  # whether ``train.compile`` may compile the model for this objective

    # ------------------------------------------------------------------ required
    def next_batch(self) -> Any:
        raise NotImplementedError

    def rows(self, batch) -> int:
        raise NotImplementedError

    def targets(self, batch) -> torch.Tensor:  # the count the loss is averaged over (a 0-d tensor)
        raise NotImplementedError

    def tokens(self, batch) -> int:  # tokens processed, for throughput
        raise NotImplementedError

    def slice(self, batch, start: int, n: int, device) -> Any:
        raise NotImplementedError

    def loss(self, model, micro) -> torch.Tensor:  # summed over the micro-batch's targets
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ optional, with defaults
    def stats(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """What the stage's summary adds (``history``: the records logged, resumed ones included)."""
        return {}

    def normaliser(self, batch, acc: Accelerator) -> torch.Tensor:
        """What the summed loss of a step is divided by: the step's targets over every process."""
        n = self.targets(batch).to(acc.device)
        return acc.reduce(n, reduction="sum") if acc.num_processes > 1 else n

    def micro_rows(self, cfg: TrainConfig, world: int) -> int:
        """Rows per forward pass on this process."""
        if cfg.batch_size % (cfg.grad_accum * world):
            raise UserError(f"train.batch_size {cfg.batch_size} must be divisible by grad_accum x processes "
                            f"({cfg.grad_accum} x {world})")
        return cfg.batch_size // cfg.grad_accum // world

    def optimizer(self, model, lr: float, cfg: TrainConfig, acc: Accelerator) -> torch.optim.Optimizer | None:
        """The stage's optimiser; None: the loop's AdamW (no decay on biases and norms)."""
        return None

    def begin(self, model, acc: Accelerator) -> None:
        """Called once the model is prepared (placed, wrapped), before the first step."""

    def record(self, step: int, steps: int, loss: float, lr: float, rate: float, cfg: TrainConfig,
               desc: str) -> dict[str, Any] | None:
        """The step's log record (``metrics.jsonl``), or None for a step that logs nothing."""
        if step % cfg.log_every == 0 or step == steps or step == 1:
            return {"stage": desc, "step": step, "loss": loss, "lr": lr, "tok_s": rate}
        return None


class PackedCE(Objective):
    """SFT: next-token cross-entropy on the target tokens of packed rows (``train.data.PackedBatches``)."""

    def __init__(self, batches: PackedBatches):
        self.batches = batches

    def next_batch(self):
        return next(self.batches)

    def rows(self, batch) -> int:
        return batch["input_ids"].shape[0]

    def targets(self, batch) -> torch.Tensor:
        return (batch["labels"][:, 1:] != IGNORE).sum()

    def tokens(self, batch) -> int:
        return int(batch["input_ids"].numel())

    def slice(self, batch, start, n, device):
        return {k: v[start : start + n].to(device) for k, v in batch.items()}

    def loss(self, model, mb) -> torch.Tensor:
        return step_loss(model, mb["input_ids"], mb["position_ids"], mb["labels"])

    def state_dict(self):
        return self.batches.state_dict()

    def load_state_dict(self, state):
        self.batches.load_state_dict(state)

    def stats(self, history):
        return {"truncated_examples": self.batches.truncated,
                "padding_fraction": self.batches.padding / max(self.batches.slots, 1)}


def train_stage(
    model,
    batches: PackedBatches | Objective,
    steps: int,
    cfg: TrainConfig,
    out_dir: Path | None,
    *,
    lr: float | None = None,
    save_every: int = 100,
    desc: str = "train",
    on_step: Callable[[int, Any], bool] | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    trainable_rows: list[int] | None = None,
    warmup_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``steps`` steps on ``batches`` (packed rows: SFT) or an ``Objective`` (each step takes the objective's
    ``updates_per_batch`` optimiser steps on one batch); resume from ``out_dir/ckpt`` when it exists (``out_dir``
    None: no checkpoints).

    ``on_step(step, model)`` runs after each step; returning True stops the stage early (gates).
    ``warmup_steps`` overrides ``cfg.warmup_frac``. Returns a summary: losses per logged step, tokens,
    seconds, whether stopped early.
    """
    objective = batches if isinstance(batches, Objective) else PackedCE(batches)
    acc = get_accelerator()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    model.train()
    if cfg.freeze_embeddings:
        for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
            if emb is not None:
                emb.weight.requires_grad_(False)
    if trainable_rows is not None:  # only these rows of the (tied) embedding matrix learn; nothing decays
        for p in model.parameters():
            p.requires_grad_(False)
        emb = model.get_input_embeddings().weight
        emb.requires_grad_(True)
        keep = torch.zeros(emb.shape[0], 1, dtype=emb.dtype, device=emb.device)
        keep[trainable_rows] = 1
        emb.register_hook(lambda g: g * keep.to(g.dtype))
    params = [p for p in model.parameters() if p.requires_grad]
    if trainable_rows is not None:
        params = []
    opt = objective.optimizer(model, lr or cfg.lr, cfg, acc)
    if opt is None:
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0},
             *([{"params": [model.get_input_embeddings().weight], "weight_decay": 0.0}] if trainable_rows else [])],
            lr=lr or cfg.lr,
            betas=(0.9, 0.95),
            fused=_fused_ok(acc, [*params, *([model.get_input_embeddings().weight] if trainable_rows else [])]) or None,
        )
    updates = objective.updates_per_batch
    sched = get_cosine_with_min_lr_schedule_with_warmup(
        opt,
        num_warmup_steps=int(cfg.warmup_frac * steps * updates) if warmup_steps is None else warmup_steps,
        num_training_steps=steps * updates,
        min_lr_rate=cfg.min_lr_ratio,
    )
    acc.free_memory()  # forget the previous stage's model and optimiser
    model, opt, sched = acc.prepare(model, opt, sched)
    compiled = _compile(model, cfg.compile_backend) if cfg.compile and objective.compilable else None
    acc.gradient_accumulation_steps = 1  # we accumulate by hand over micro-batches
    objective.begin(model, acc)

    ckpt = out_dir / "ckpt" if out_dir is not None else None
    step, history, tokens, elapsed = 0, [], 0, 0.0
    if ckpt is not None and acc.is_main_process:
        recover_checkpoint(ckpt)
    acc.wait_for_everyone()
    if ckpt is not None and (ckpt / "progress.json").is_file():
        acc.load_state(str(ckpt))
        prog = json.loads((ckpt / "progress.json").read_text())
        step, history, tokens, elapsed = prog["step"], prog["history"], prog["tokens"], prog["elapsed"]
        objective.load_state_dict(prog["data"])
        if on_step is not None and prog.get("hook") is not None and hasattr(on_step, "load_state_dict"):
            on_step.load_state_dict(prog["hook"])
    if log is not None and hasattr(log, "rewind"):  # what the interrupted run logged after its checkpoint comes again
        log.rewind(step)

    world = acc.num_processes
    micro = objective.micro_rows(cfg, world)  # rows per forward on this process
    if acc.distributed_type == DistributedType.DEEPSPEED and cfg.grad_accum != 1:
        # DeepSpeed steps its optimiser inside backward on its own accumulation count
        raise UserError("train.grad_accum must be 1 under DeepSpeed (raise batch_size or use more GPUs)")
    bar = progress_bar(total=steps, initial=step, desc=desc, unit="step",
                       disable=not (acc.is_main_process and progress))
    stopped_early = False
    t0 = time.perf_counter()
    run_tokens = 0
    while step < steps:
        batch = objective.next_batch()  # rows for this process: batch_size / world
        # token-level mean over the whole global step (all micro-batches, all processes), in fp32:
        # DDP averages gradients over processes, so each process scales its sum by world / global count
        n_target = objective.normaliser(batch, acc)
        loss_sum = torch.zeros((), device=acc.device)
        starts = range(0, objective.rows(batch), micro)
        for _ in range(updates):
            for i in starts:
                mb = objective.slice(batch, i, micro, acc.device)
                # gradients are synchronised once per update, on the last micro-batch
                sync = contextlib.nullcontext() if i == starts[-1] else acc.no_sync(model)
                with sync:
                    with autocast(acc, cfg.bf16):
                        loss = objective.loss(model, mb)
                    loss = loss * world / n_target.clamp(min=1)
                    acc.backward(loss)
                loss_sum += loss.detach()
            if not starts and params:  # no rows on this process this step: it still takes part in the update
                (sum(p.sum() for p in params) * 0).backward()
            if cfg.grad_clip:
                acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        step += 1
        ntok = objective.tokens(batch) * world
        tokens += ntok
        run_tokens += ntok
        loss_val = acc.reduce(loss_sum, reduction="mean").item() / updates
        rate = run_tokens / max(time.perf_counter() - t0, 1e-9)
        rec = objective.record(step, steps, loss_val, sched.get_last_lr()[0], rate, cfg, desc)
        if rec is not None:
            history.append(rec)
            if log and acc.is_main_process:
                log(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{rate:,.0f}")
        bar.update(1)
        if not math.isfinite(loss_val):
            raise FloatingPointError(f"loss became {loss_val} at step {step} of {desc}")
        stop = bool(on_step(step, acc.unwrap_model(model))) if on_step is not None else False
        if stop:
            stopped_early = True
        if ckpt is not None and step % save_every == 0 and step < steps and not stop:
            save_checkpoint(acc, ckpt, step, history, tokens, elapsed + time.perf_counter() - t0, objective, on_step)
        if stop:
            break
    bar.close()
    if compiled is not None:  # the model leaves the stage as it came (a later stage or evaluation runs it eagerly)
        compiled._compiled_call_impl = None
    acc.wait_for_everyone()
    # sharded engines (FSDP, DeepSpeed ZeRO-3) hold no full copy anywhere: gather one for saving
    state_dict = None
    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        state_dict = acc.get_state_dict(model)
    if ckpt is not None and ckpt.exists() and acc.is_main_process:
        shutil.rmtree(ckpt, ignore_errors=True)
    seconds = elapsed + time.perf_counter() - t0
    return {
        "steps": step,
        "tokens": tokens,
        "seconds": seconds,
        "tok_s": run_tokens / max(time.perf_counter() - t0, 1e-9),
        "history": history,
        "stopped_early": stopped_early,
        "engine": f"{acc.distributed_type.value} x{world}",
        **objective.stats(history),
        "model": acc.unwrap_model(model),
        "state_dict": state_dict,
    }


def recover_checkpoint(ckpt: Path) -> None:
    """After an interrupted ``save_checkpoint``: a complete ``ckpt.tmp`` (its progress.json is written last) with
    no complete ``ckpt`` becomes the checkpoint; any other leftover is removed."""
    tmp, old = ckpt.with_name(ckpt.name + ".tmp"), ckpt.with_name(ckpt.name + ".old.tmp")
    if not (ckpt / "progress.json").is_file() and (tmp / "progress.json").is_file():
        shutil.rmtree(ckpt, ignore_errors=True)
        os.replace(tmp, ckpt)
    for stray in (tmp, old):
        shutil.rmtree(stray, ignore_errors=True)


def save_checkpoint(acc, ckpt: Path, step, history, tokens, elapsed, objective, hook) -> None:
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    if acc.is_main_process:
        prog = {
            "step": step,
            "history": history,
            "tokens": tokens,
            "elapsed": elapsed,
            "data": objective.state_dict(),
            "hook": hook.state_dict() if hasattr(hook, "state_dict") else None,
        }
        _atomic_json(tmp / "progress.json", prog)  # written last: a tmp with it is complete
        # swap without a moment where no complete checkpoint exists: an interrupt between the two renames leaves
        # ``ckpt.tmp`` complete and no ``ckpt``, which a resume promotes (``rundir.clean_stray``)
        old = ckpt.with_name(ckpt.name + ".old.tmp")
        if ckpt.exists():
            os.replace(ckpt, old)
        os.replace(tmp, ckpt)
        shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
