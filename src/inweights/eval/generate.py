"""Batched greedy generation with a KV cache (transformers' `generate`), prompts sorted by length."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from inweights.train.data import end_of_turn_ids, render


@torch.no_grad()
def generate(
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
) -> list[str]:
    """Completions for chat prompts, in the order given: greedy, or sampled at ``temperature`` (seeded,
    so the same prompts, model and seed give the same samples on a CPU)."""
    texts = [render(tokenizer, p, add_generation_prompt=True) for p in prompts]
    enc = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))  # similar lengths share a batch: less padding
    out: list[str] = [""] * len(enc)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    sampling = temperature > 0
    if sampling:
        torch.manual_seed(seed)
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
            do_sample=sampling,
            **({"temperature": temperature, "top_p": top_p, "top_k": 0} if sampling else {}),
            eos_token_id=sorted(end_of_turn_ids(tokenizer)),
            pad_token_id=pad,
            use_cache=True,
        )
        for r, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[r, width:], skip_special_tokens=True)
        if progress is not None:
            progress.update(len(idx))
    model.train(was_training)
    return out


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def choose_backend(name: str) -> str:
    """'auto' means vllm when it is installed and a CUDA GPU is visible, else transformers."""
    if name == "auto":
        return "vllm" if vllm_available() and torch.cuda.is_available() else "transformers"
    if name == "vllm" and not vllm_available():
        from inweights.errors import UserError

        raise UserError("eval.backend vllm: the vllm package is not installed (pip install vllm, on a machine "
                        "with a CUDA GPU), or set eval.backend to transformers or auto")
    return name


def generate_vllm(model_dir: str, tokenizer, prompts: Sequence[list[dict[str, str]]], *, max_new_tokens: int,
                  dtype: str = "auto", seed: int = 0, gpu_memory_utilization: float = 0.5,
                  temperature: float = 0.0, top_p: float = 1.0) -> list[str]:
    """Completions with vllm (greedy at temperature 0). Prompts go in as token ids tokenized here, exactly as the
    transformers backend tokenizes them, so the two see the same input."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model_dir), tokenizer=str(model_dir), dtype=dtype, seed=seed,
              gpu_memory_utilization=gpu_memory_utilization)
    params = SamplingParams(temperature=temperature, top_p=top_p, seed=seed, max_tokens=max_new_tokens, stop_token_ids=sorted(end_of_turn_ids(tokenizer)),
                            skip_special_tokens=True)
    ids = [tokenizer(render(tokenizer, p, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
           for p in prompts]
    outs = llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=False)
    texts = []
    for o in outs:
        # transformers' decode of the same ids, so both backends produce the same text for the same tokens
        toks = [t for t in o.outputs[0].token_ids if t not in end_of_turn_ids(tokenizer)]
        texts.append(tokenizer.decode(toks, skip_special_tokens=True))
    del llm
    return texts
