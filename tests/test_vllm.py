"""The vllm backend gives the same greedy outputs as the transformers backend (needs vllm and a GPU;
skipped elsewhere), and asking for it where it is missing is one clear line."""

import importlib.util

import pytest
import torch

from inweights.cli import main

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(HAVE_VLLM, reason="vllm is installed")
def test_vllm_backend_missing_is_one_line(root, capsys):
    assert main(["validate", str(root / "configs/smoke.yaml"), "--set", "eval.backend=vllm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vllm" in err[0] and "pip install vllm" in err[0]


def test_auto_backend_falls_back_to_lean():
    from inweights.eval.generate import choose_backend

    expected = "vllm" if HAVE_VLLM and torch.cuda.is_available() else "lean"
    assert choose_backend("auto") == expected


@pytest.mark.skipif(not (HAVE_VLLM and torch.cuda.is_available()), reason="needs vllm and a CUDA GPU")
def test_vllm_matches_transformers_greedy(tmp_path):
    from inweights.config import TinyConfig
    from inweights.eval.generate import generate, generate_vllm
    from inweights.models import build_tiny, save_model, train_tokenizer

    texts = ["def foo(x):\n    a = (x + 3) % 10\n    return a", "What does foo return for x = 4?"] * 20
    tok = train_tokenizer(texts, 320)
    model = build_tiny(TinyConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=320),
                       tok, 0)
    save_model(model, tok, tmp_path / "m")
    prompts = [[{"role": "user", "content": f"What does foo return for x = {i}?"}] for i in range(10)]
    ref = generate(model.cuda(), tok, prompts, max_new_tokens=16, batch_size=4)
    got = generate_vllm(str(tmp_path / "m"), tok, prompts, max_new_tokens=16, dtype="float32")
    assert got == ref


@pytest.mark.slow
def test_an_evaluation_on_vllm_counts_its_tokens_from_the_texts(root, tmp_path, monkeypatch):
    """Where vllm generates (here a stand-in that answers every probe alike), the evaluation still counts its work:
    each prompt as the model reads it, each output's tokens counted again from its text."""
    import json

    import inweights.eval.generate as gen
    from inweights.train.data import prompt_ids

    seen = []

    def fake_vllm(model_dir, tok, prompts, **kw):
        seen.append((tok, list(prompts)))
        return ["a = 1\nAnswer: 1"] * len(prompts)

    monkeypatch.setattr(gen, "choose_backend", lambda name: "vllm")
    monkeypatch.setattr(gen, "generate_vllm", fake_vllm)
    out = tmp_path / "run"
    assert main(["run", str(root / "configs/smoke.yaml"), "--out", str(out), "--set", "recipes=[stage2_only]",
                 "--set", "eval.positive_control=null"]) == 0
    ev = json.loads(next((out / "stages").glob("*/eval.json")).read_text())["record"]
    tok, prompts = seen[-1]
    per_output = len(tok("a = 1\nAnswer: 1", add_special_tokens=False)["input_ids"])
    assert ev["backend"] == "vllm"
    assert ev["tokens"] == {"prompt": sum(len(prompt_ids(tok, p)) for p in prompts), "generated": per_output * len(prompts)}
