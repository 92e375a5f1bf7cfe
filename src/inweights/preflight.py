"""The checks ``inweights run`` makes before any work starts, which each regime's ``check`` composes
(``inweights.regimes.preflight`` is the entry point; ``inweights validate`` calls the same, so the two cannot
disagree: a config that validates does not crash later on something that could be known now).

Checked: the data files (read under the loader policy), the model and backend, every recipe's stages (names,
suffixes, groups that must hold units), the memory that model × batch × max_len needs against what the machine
has, and the share of training examples that ``train.max_len`` would cut.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inweights.config import ExperimentConfig
from inweights.core.errors import UserError

TRUNCATION_SAMPLE = 200  # training examples drawn per stage to measure the share max_len would cut
TRUNCATION_WARN = 0.05


def check_units_and_stages(cfg: ExperimentConfig, config_path: Path | None, quiet: bool = False,
                           stages_of: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """The checks of a run on a domain's units: data files, model, prepared base, memory and, for a regime that
    trains stages (``stages_of(cfg, domain, units) -> {name: StageConfig}``, each checked by the regime), the eval
    groups and the share of the stages' examples ``train.max_len`` cuts."""
    from inweights.runs import load_units, resolve_prepared

    found: dict[str, Any] = {}

    domain, units = load_units(cfg, quiet=quiet)
    check_model(cfg)
    if cfg.model.prepared_base:
        resolve_prepared(cfg, config_path)
    check_memory(cfg)
    if stages_of is not None:
        check_eval_groups(cfg, domain, units)
        by_name = stages_of(cfg, domain, units)
        found["truncated"] = check_truncation(cfg, domain, units, by_name, config_path, quiet)
    return found


def check_model(cfg) -> None:
    """Model and backend problems found before any work starts (missing folder or package, a LoRA
    target module the model does not have)."""
    from inweights.eval.generate import choose_backend
    from inweights.models.load import check_lora_for_source, check_source

    check_source(cfg.model)
    choose_backend(cfg.eval.backend)
    if cfg.model.lora and cfg.model.path:
        check_lora_for_source(cfg.model.path, cfg.model.lora)


# ------------------------------------------------------------------------------------------------- probes
def check_eval_groups(cfg: ExperimentConfig, domain, units) -> None:
    """Every group in ``eval.groups`` yields probes: a group with no units, or none with a held-out input, would
    be measured on nothing (a report of 0 probes is no result)."""
    for group in cfg.eval.groups:
        chosen = [u for u in units if u.group == group]
        if not chosen:
            raise UserError(f"config error at eval.groups: group {group} has no units {domain.why_empty(group)}, so "
                            f"it yields no probes; remove it from eval.groups")
        if not any(u.test_inputs for u in chosen[: cfg.eval.max_units_per_group]):
            raise UserError(f"config error at eval.groups: the {group} units have no held-out inputs, so the group "
                            f"yields no probes; remove it from eval.groups")


# ------------------------------------------------------------------------------------------------ memory
def _local_folder(m) -> Path | None:
    """The model's folder when it is on disk already, without converting or downloading anything (``validate`` does
    no work): a preset's converted folder, or ``model.path``; None otherwise (a hub id, a preset not yet converted)."""
    if m.preset not in (None, "tiny"):
        from inweights.models.presets import PRESET_FOLDERS

        folder = PRESET_FOLDERS[m.preset]()
        return folder if (folder / "config.json").is_file() else None
    return Path(m.path) if m.path is not None else None


def _dims(cfg: ExperimentConfig) -> dict[str, int] | None:
    """hidden, layers, intermediate, vocab, heads of the model the config trains (None: not known offline)."""
    m = cfg.model
    if m.preset == "tiny":
        t = m.tiny
        return {"hidden": t.hidden_size, "layers": t.num_layers, "inter": t.intermediate_size,
                "vocab": t.vocab_size, "heads": t.num_heads, "kv_heads": t.num_heads}
    import json

    source = _local_folder(m)
    if source is None:
        return None
    try:
        conf = json.loads((source / "config.json").read_text())
    except (OSError, ValueError):
        return None
    try:
        heads = int(conf["num_attention_heads"])
        return {"hidden": int(conf["hidden_size"]), "layers": int(conf["num_hidden_layers"]),
                "inter": int(conf.get("intermediate_size", 4 * conf["hidden_size"])),
                "vocab": int(conf["vocab_size"]), "heads": heads,
                "kv_heads": int(conf.get("num_key_value_heads", heads))}
    except (KeyError, TypeError, ValueError):
        return None


def training_bytes(cfg: ExperimentConfig) -> int | None:
    """A rough upper estimate of the memory one training process needs: fp32 weights, gradients and AdamW
    moments of the trained parameters, the activations of one micro-batch kept for backward (Korthikanti et
    al. 2022: ~34·s·b·h + 5·a·s²·b bytes per layer with 16-bit activations, doubled for fp32 here) and its
    fp32 logits. It only has to tell "fits" from "absurd": the check fires at available memory."""
    d = _dims(cfg)
    if d is None:
        return None
    h, L, inter, v = d["hidden"], d["layers"], d["inter"], d["vocab"]
    kv = h * d["kv_heads"] // d["heads"]
    params = v * h + L * (2 * h * h + 2 * h * kv + 3 * h * inter)
    trained = params if cfg.model.lora is None else params // 50
    rows = max(1, cfg.train.batch_size // cfg.train.grad_accum)
    s = cfg.train.max_len
    act = L * (2 * (34 * s * rows * h) + 2 * 5 * d["heads"] * s * s * rows)
    logits = 4 * rows * s * v
    return 4 * params + 12 * trained + act + logits


def available_bytes() -> int | None:
    """Memory this process can use: the GPU's free memory when one is visible, else MemAvailable."""
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[0])
    except Exception:  # noqa: BLE001, S110 - no usable GPU: fall back to host memory
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def check_memory(cfg: ExperimentConfig) -> None:
    need, have = training_bytes(cfg), available_bytes()
    if need is None or have is None or need <= have:
        return
    gib = 2**30
    raise UserError(f"model x train.batch_size x train.max_len needs about {need / gib:,.1f} GiB of memory to train, "
                    f"this machine has {have / gib:,.1f} GiB available: lower train.batch_size (or raise "
                    f"train.grad_accum), train.max_len, or the model size")


# -------------------------------------------------------------------------------------------- truncation
def _tokenizer(cfg: ExperimentConfig, domain, units, config_path: Path | None):
    """The tokenizer the run will use, where it can be had without training anything (None otherwise)."""
    m = cfg.model
    if m.preset == "tiny" and not m.prepared_base:
        from inweights.curriculum import corpus_texts
        from inweights.models import train_tokenizer

        return train_tokenizer(corpus_texts(domain, units, cfg.seed), m.tiny.vocab_size)  # as the run does
    from transformers import AutoTokenizer

    if m.preset == "tiny":
        from inweights.runs import resolve_prepared

        folder = resolve_prepared(cfg, config_path)[1]
    else:
        folder = _local_folder(m)
    if folder is None:
        return None
    if not (folder / "tokenizer_config.json").is_file() and not (folder / "tokenizer.json").is_file():
        return None  # not built yet (a prepared base the run will train first) or a hub id
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError):
        return None


def check_truncation(cfg: ExperimentConfig, domain, units, stages: dict[str, Any], config_path: Path | None,
                     quiet: bool = False) -> dict[str, float] | None:
    """Share of each SFT stage's training examples longer than ``train.max_len`` (they are cut): every one cut
    is an error, more than 5% a warning."""
    from inweights.curriculum import TokenCache, stage_sampler

    sft = {n: st for n, st in stages.items() if st.objective != "grpo"}
    if not sft:
        return None
    tok = _tokenizer(cfg, domain, units, config_path)
    if tok is None:
        return None
    tokens = TokenCache(tok)
    shares = {}
    for name, st in sft.items():
        try:
            sample = stage_sampler(st, domain, units, tokens, cfg.seed)
        except ValueError as e:
            raise UserError(str(e)) from None
        rng = random.Random(cfg.seed)
        lengths = sorted(len(sample(rng)[0]) for _ in range(TRUNCATION_SAMPLE))
        cut = sum(n > cfg.train.max_len for n in lengths) / len(lengths)
        shares[name] = cut
        if cut == 1.0:
            raise UserError(f"train.max_len {cfg.train.max_len} cuts every training example of stage {name} (the "
                            f"median is {lengths[len(lengths) // 2]} tokens): raise train.max_len")
        if cut > TRUNCATION_WARN and not quiet:
            print(f"inweights: warning: train.max_len {cfg.train.max_len} cuts {cut:.0%} of stage {name}'s training "
                  f"examples (the longest is {lengths[-1]} tokens)", file=sys.stderr)
    return shares
