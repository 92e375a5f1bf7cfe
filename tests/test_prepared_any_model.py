"""Prepared bases for any model (issue 37): a pretrained model -- here a local Hugging Face folder standing in for
one (the shipped tiny base, which is a plain save_pretrained folder) -- prepared with a LoRA adapter or fully,
recorded with the weights it belongs to, started from by an experiment, and refused on other weights."""

import json
import shutil

import pytest
import torch
import yaml

from inweights.cli import main
from inweights.core.errors import UserError
from inweights.models import load_model
from inweights.models.load import CHAIN_FILE, weights_digest


def _prepare_cfg(folder, model_path, lora=True, name="prep_any"):
    cfg = {
        "name": name, "kind": "prepare", "seed": 7,
        "domain": {"programs": {"min_statements": 1, "max_statements": 2, "cond_prob": 0.0}},
        "model": {"path": str(model_path), **({"lora": {"r": 4, "alpha": 8, "target_modules": ["all-linear"]}}
                                               if lora else {})},
        "train": {"batch_size": 2, "max_len": 256, "lr": 1e-3, "log_every": 1, "threads": 1},
        "prepare": {"max_steps": 2, "eval_every": 2, "eval_programs": 4, "gate": 0.5},
        "eval": {"batch_size": 8, "max_new_tokens": 8},
    }
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    path = folder / "configs" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _experiment_cfg(folder, model_path, prepared="configs/prep_any.yaml"):
    cfg = {
        "name": "exp_any", "seed": 0,
        "domain": {"programs": {"n_programs": 8, "without_io_fraction": 0.25, "min_statements": 1,
                                "max_statements": 2, "cond_prob": 0.0}},
        "model": {"path": str(model_path), "prepared_base": prepared,
                  "lora": {"r": 4, "alpha": 8, "target_modules": ["all-linear"]}},
        "train": {"batch_size": 2, "max_len": 256, "lr": 1e-3, "log_every": 1, "threads": 1},
        "pbb": {"stage1_steps": 1, "stage2_steps": 1},
        "recipes": ["stage2_only"],
        "eval": {"batch_size": 32, "max_new_tokens": 8, "formats": ["direct"], "max_units_per_group": 2,
                 "train_inputs": 0, "doc_context": False},
    }
    path = folder / "configs" / "exp_any.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def pretrained(root, tmp_path_factory):
    """A local model folder (a copy, so a test may change its weights)."""
    d = tmp_path_factory.mktemp("pretrained") / "model"
    shutil.copytree(root / "prepared" / "prepare_tiny", d)
    return d


@pytest.fixture(scope="module")
def built(pretrained, tmp_path_factory):
    """A LoRA prepared base of that folder, built by ``inweights prepare``."""
    home = tmp_path_factory.mktemp("home")
    cfg = _prepare_cfg(home, pretrained)
    assert main(["prepare", str(cfg)]) in (0, 1)  # 2 steps: the gate need not pass
    return home, home / "prepared" / "prep_any"


def test_lora_prepared_base_is_an_adapter_naming_its_weights(built, pretrained):
    _, d = built
    rec = json.loads((d / "prepare.json").read_text())
    chain = json.loads((d / CHAIN_FILE).read_text())
    assert (d / "adapter_model.safetensors").is_file() and not (d / "model.safetensors").exists()
    assert not (d / "README.md").exists()  # no boilerplate model card
    assert chain["base"] == str(pretrained.resolve())
    assert chain["base_identity"] == {"weights_sha256": weights_digest(pretrained)}
    assert rec["base_model"]["identity"] == chain["base_identity"] and rec["base_model"]["lora"]["r"] == 4
    assert rec["weights_sha256"] == weights_digest(d) and rec["steps"] == 2
    assert [h["step"] for h in rec["gate_history"]] == [2]  # the curve, as for the tiny bases
    merged, _ = load_model(d)  # follows the chain: the base's weights with the adapter merged in
    base, _ = load_model(pretrained)
    diffs = [(a - b).abs().max().item() for a, b in zip(merged.parameters(), base.parameters())]
    assert max(diffs) > 0  # the adapter trained something
    assert all(p.requires_grad for p in merged.parameters())  # a full fine-tune of the merged weights trains them


def test_experiment_starts_from_the_prepared_adapter(built, pretrained, capsys):
    home, d = built
    cfg = _experiment_cfg(home, pretrained)
    out = home / "runs" / "exp"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prepared"]["weights_sha256"] == json.loads((d / "prepare.json").read_text())["weights_sha256"]
    # the stage trained a new adapter on the merged prepared weights, chained to the prepared base's folder
    stage = next((out / "stages").iterdir())
    assert json.loads((stage / "model" / CHAIN_FILE).read_text())["base"] == str(d)


def test_a_prepared_base_of_other_weights_is_refused(built, pretrained, tmp_path, capsys):
    home, d = built
    changed = tmp_path / "changed"
    shutil.copytree(pretrained, changed)
    # the same folder path in the prepare record, other weights there: refused where the base is loaded
    saved = pretrained.with_name("saved")
    shutil.move(pretrained, saved)
    try:
        model, tok = load_model(changed)
        with torch.no_grad():
            next(model.parameters()).add_(0.01)
        model.save_pretrained(pretrained)
        tok.save_pretrained(pretrained)
        with pytest.raises(UserError, match="prepared on weights sha256"):
            load_model(d)
        out = tmp_path / "run"
        assert main(["run", str(_experiment_cfg(home, pretrained)), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "was prepared on weights sha256" in err[0] and "rebuild it" in err[0]
        assert not (out / "summary.json").exists()
    finally:
        shutil.rmtree(pretrained, ignore_errors=True)
        shutil.move(saved, pretrained)


def test_a_prepared_base_of_another_model_is_refused(built, root, capsys):
    home, _ = built
    cfg = _experiment_cfg(home, root / "prepared" / "prepare_grammars")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "prepares" in err and "use a prepare config of the same model" in err


def test_full_fine_tuned_prepared_base_is_a_plain_folder(pretrained, tmp_path):
    cfg = _prepare_cfg(tmp_path, pretrained, lora=False, name="prep_full")
    assert main(["prepare", str(cfg)]) in (0, 1)
    d = tmp_path / "prepared" / "prep_full"
    rec = json.loads((d / "prepare.json").read_text())
    assert (d / "model.safetensors").is_file() and not (d / CHAIN_FILE).exists()
    assert rec["base_model"]["lora"] is None and rec["base_model"]["identity"]["weights_sha256"]
    assert rec["weights_sha256"] == weights_digest(d)
    load_model(d)


def test_a_killed_lora_preparation_resumes_to_the_same_adapter(pretrained, tmp_path, monkeypatch):
    from inweights import prepare

    ref_home, home = tmp_path / "ref", tmp_path / "killed"
    for h in (ref_home, home):
        cfg = _prepare_cfg(h, pretrained)
        text = cfg.read_text().replace("max_steps: 2", "max_steps: 4")
        cfg.write_text(text)
    assert main(["prepare", str(ref_home / "configs" / "prep_any.yaml")]) in (0, 1)

    class Boom(Exception):
        pass

    real = prepare.PrepareGate.__call__

    def kill(self, step, model):
        if step == 3:
            raise Boom
        return real(self, step, model)

    monkeypatch.setattr(prepare.PrepareGate, "__call__", kill)
    with pytest.raises(Boom):
        main(["prepare", str(home / "configs" / "prep_any.yaml")])
    monkeypatch.setattr(prepare.PrepareGate, "__call__", real)
    assert main(["prepare", str(home / "configs" / "prep_any.yaml")]) in (0, 1)  # continues from step 2
    a = json.loads((ref_home / "prepared" / "prep_any" / "prepare.json").read_text())
    b = json.loads((home / "prepared" / "prep_any" / "prepare.json").read_text())
    assert a["weights_sha256"] == b["weights_sha256"] and a["gate_history"] == b["gate_history"]
