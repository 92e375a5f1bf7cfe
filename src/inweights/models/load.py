"""Build, load and save models. Checkpoints are `save_pretrained` folders plain transformers loads."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from inweights.config import LoraConfig, TinyConfig
from inweights.errors import UserError


def build_tiny(cfg: TinyConfig, tokenizer, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    conf = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(conf)


def load_model(path: str | Path, dtype: str = "float32", lora: LoraConfig | None = None):
    """A local Hugging Face causal LM and its tokenizer; optionally wrapped with a fresh LoRA adapter."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise UserError(f"model path {p} is not a Hugging Face model folder (no config.json)")
    try:
        tok = AutoTokenizer.from_pretrained(p)
        model = AutoModelForCausalLM.from_pretrained(p, dtype=getattr(torch, dtype))
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise UserError(f"cannot load model from {p}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if lora is not None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        model = get_peft_model(
            model,
            PeftLoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    return model, tok


def save_model(model, tokenizer, path: str | Path) -> None:
    """A `save_pretrained` folder; for a LoRA model, the adapter under adapter/ and the merged weights
    at the top level, so plain transformers loads the folder either way."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        import copy

        model.save_pretrained(path / "adapter")
        # A merged copy keeps the stage loadable by plain transformers (merging in place would
        # drop the adapter the next stage keeps training).
        copy.deepcopy(model).merge_and_unload().save_pretrained(path)
    else:
        model.save_pretrained(path)
    tokenizer.save_pretrained(path)
