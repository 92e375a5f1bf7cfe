"""Batched greedy generation with a KV cache (transformers' `generate`), prompts sorted by length."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch

from inweights.train.data import end_of_turn_ids, prompt_ids, render  # noqa: F401 - prompt_ids: callers import it from here


@torch.no_grad()
def generate_ids(
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
    backend: str = "lean",
    drafts: Sequence[Sequence[int] | None] | None = None,
    draft_stats: dict[str, Any] | None = None,
    draft_kinds: Sequence[Hashable] | None = None,
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) per chat prompt, in the order given: greedy, or sampled at
    ``temperature`` (seeded, so the same prompts, model and seed give the same samples on a CPU). A
    completion ends with its end-of-turn token when the model emitted one (training on it teaches stopping),
    and is cut at ``max_new_tokens`` otherwise. ``backend``: ``lean`` (``eval/decode.py``, the default: the same
    tokens as ``generate``, less work around the model; models it cannot drive fall back to ``generate``) or
    ``transformers`` (its ``generate``, the reference). ``drafts`` (lean, greedy): a completion per prompt the model
    may write (a probe's gold), verified first (``eval/draft.py``): the same tokens, the agreeing part cheaper;
    ``draft_kinds``: a kind per prompt (a probe's cell), whose drafts stop once that kind's are mostly rejected;
    ``draft_stats`` counts their tokens offered and accepted."""
    from inweights.eval.decode import lean_generate_ids, supports

    if backend == "lean" and supports(model):
        if drafts is not None and temperature == 0:
            from inweights.eval.draft import draft_generate_ids

            return draft_generate_ids(model, tokenizer, prompts, drafts, max_new_tokens=max_new_tokens,
                                      batch_size=batch_size, progress=progress, draft_stats=draft_stats,
                                      kinds=draft_kinds)
        return lean_generate_ids(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                 progress=progress, temperature=temperature, top_p=top_p, seed=seed)
    enc = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))  # similar lengths share a batch: less padding
    out: list[tuple[list[int], list[int]]] = [([], [])] * len(enc)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    stops = sorted(end_of_turn_ids(tokenizer))
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
            eos_token_id=stops,
            pad_token_id=pad,
            use_cache=True,
        )
        for r, i in enumerate(idx):
            row = gen[r, width:].tolist()
            cut = next((j + 1 for j, t in enumerate(row) if t in stops), len(row))
            out[i] = (enc[i], row[:cut])
        if progress is not None:
            progress.update(len(idx))
    model.train(was_training)
    return out


def generate(model, tokenizer, prompts: Sequence[list[dict[str, str]]], *, counts: dict[str, int] | None = None,
             **kw) -> list[str]:
    """Completion texts for chat prompts (see ``generate_ids`` for the arguments). ``counts`` adds up the tokens
    read (``prompt``: each chat prompt as the model reads it) and written (``generated``)."""
    pairs = generate_ids(model, tokenizer, prompts, **kw)
    if counts is not None:
        counts["prompt"] = counts.get("prompt", 0) + sum(len(e) for e, _ in pairs)
        counts["generated"] = counts.get("generated", 0) + sum(len(c) for _, c in pairs)
    return [tokenizer.decode(c, skip_special_tokens=True) for _, c in pairs]


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def choose_backend(name: str) -> str:
    """'auto' means vllm when it is installed and a CUDA GPU is visible, else lean (which hands models it cannot
    drive to transformers' ``generate``)."""
    if name == "auto":
        return "vllm" if vllm_available() and torch.cuda.is_available() else "lean"
    if name == "vllm" and not vllm_available():
        from inweights.core.errors import UserError

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
    ids = [prompt_ids(tokenizer, p) for p in prompts]
    outs = llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=False)
    texts = []
    for o in outs:
        # transformers' decode of the same ids, so both backends produce the same text for the same tokens
        toks = [t for t in o.outputs[0].token_ids if t not in end_of_turn_ids(tokenizer)]
        texts.append(tokenizer.decode(toks, skip_special_tokens=True))
    del llm
    return texts


class VllmPolicy:
    """GRPO sampling with vllm: one engine per stage, the policy's current weights pushed into it before
    every step (as TRL's colocated mode does), so samples come from the policy being trained.

    Not exercised in this repository's tests (they run without a GPU); the weight push goes through the
    engine's in-process model, whose attribute path differs across vllm versions: both known ones are tried.
    """

    def __init__(self, model_dir: str, tokenizer, *, max_new_tokens: int, temperature: float, top_p: float,
                 dtype: str = "auto", seed: int = 0, gpu_memory_utilization: float = 0.3):
        from vllm import LLM

        self.tok, self.max_new_tokens, self.temperature, self.top_p = tokenizer, max_new_tokens, temperature, top_p
        self.llm = LLM(model=str(model_dir), tokenizer=str(model_dir), dtype=dtype, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True)

    def _push(self, model) -> None:
        from inweights.core.errors import UserError

        weights = list(model.state_dict().items())
        engine = self.llm.llm_engine
        for path in ("model_executor.driver_worker.model_runner.model",
                     "model_executor.driver_worker.worker.model_runner.model"):
            obj = engine
            try:
                for part in path.split("."):
                    obj = getattr(obj, part)
            except AttributeError:
                continue
            obj.load_weights(weights)
            return
        if hasattr(self.llm, "collective_rpc"):  # vllm V1 engine: run the load inside the worker
            self.llm.collective_rpc(lambda self_, w=weights: self_.model_runner.model.load_weights(w))
            return
        raise UserError("grpo with eval.backend vllm: this vllm version exposes no way to load new weights into "
                        "the engine; use eval.backend transformers")

    def __call__(self, model, prompts, seed: int):
        from vllm import SamplingParams

        if hasattr(model, "peft_config"):
            from inweights.core.errors import UserError

            raise UserError("grpo with eval.backend vllm needs full fine-tuning (no model.lora); use transformers")
        self._push(model)
        stops = sorted(end_of_turn_ids(self.tok))
        params = SamplingParams(temperature=self.temperature, top_p=self.top_p, seed=seed,
                                max_tokens=self.max_new_tokens, stop_token_ids=stops)
        ids = [prompt_ids(self.tok, p) for p in prompts]
        outs = self.llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=False)
        return [(i, list(o.outputs[0].token_ids)) for i, o in zip(ids, outs)]
