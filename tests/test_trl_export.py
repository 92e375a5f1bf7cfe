"""`inweights data --format trl`: files TRL reads as they are, trained on by TRL's SFTTrainer with the token masks
our own training uses (differences named and bounded)."""

import json

import pytest

from inweights.cli import main
from inweights.data import TRL_COLUMNS
from inweights.train.data import IGNORE, end_of_turn_ids, tokenize_record

pytest.importorskip("trl", reason="TRL is not installed (pip install trl)")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, root):
    out = tmp_path_factory.mktemp("trl") / "data"
    assert main(["data", "programs", "--config", str(root / "configs/smoke.yaml"), "--out", str(out),
                 "--format", "trl"]) == 0
    return out, json.loads((out / "manifest.json").read_text())


def test_files_are_one_layout_with_consistent_columns(exported):
    from datasets import load_dataset

    out, manifest = exported
    assert manifest["format"] == "trl" and "units.jsonl" in manifest["skipped"]
    files = sorted(str(out / n) for n in manifest["files"])
    both = load_dataset("json", data_files=files, split="train")  # every file together: no CastError
    assert set(both.column_names) == set(TRL_COLUMNS)
    assert len(both) == sum(f["records"] for f in manifest["files"].values())
    notes = {n: f["trl"]["completion_only_loss"] for n, f in manifest["files"].items()}
    assert notes["train/decl_with_io.jsonl"] is False and notes["train/exec_with_io.jsonl"] is True
    # held-out material never sits under train/: training on all of train/ keeps the comparison
    assert not any(n.startswith("train/") and n.endswith("without_io.jsonl") and "decl" not in n
                   for n in manifest["files"])
    assert "heldout/exec_without_io.jsonl" in manifest["files"] and "Never train" in manifest["heldout"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["train/decl_with_io.jsonl", "heldout/in_context_without_io.jsonl"])
def test_trl_trains_on_each_kind_with_our_token_masks(exported, root, tmp_path, name):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    from trl.data_utils import maybe_apply_chat_template

    out, manifest = exported
    base = root / "prepared" / "prepare_tiny"
    tok = AutoTokenizer.from_pretrained(base)
    ds = load_dataset("json", data_files=str(out / name), split="train")
    rendered = maybe_apply_chat_template(ds[0], tok)  # TRL's chat-template helper takes the records as they are
    assert isinstance(rendered["prompt"], str) and isinstance(rendered["completion"], str)
    completion_only = manifest["files"][name]["trl"]["completion_only_loss"]
    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=2, per_device_train_batch_size=2, report_to=[],
                     use_cpu=True, save_strategy="no", logging_steps=1, max_length=512,
                     completion_only_loss=completion_only, disable_tqdm=True)
    model = AutoModelForCausalLM.from_pretrained(base)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    ends = set(end_of_turn_ids(tok))
    assert len(trainer.train_dataset) == len(ds)  # nothing dropped, so rows line up with the file
    for i in range(min(16, len(ds))):
        rec = ds[i]
        ids, labels = tokenize_record(tok, {**rec, "messages": rec["prompt"] + rec["completion"]},
                                      "completion" if completion_only else "all")
        row = trainer.train_dataset[i]
        assert row["input_ids"] == ids, i  # the same tokens
        # TRL 1.16 writes the labels it will train on (-100: no loss); older releases a completion mask
        theirs = ([int(x != -100) for x in row["labels"]] if "labels" in row else
                  row["completion_mask"] if completion_only else [1] * len(ids))
        ours = [int(x != IGNORE) for x in labels]
        if not completion_only:
            assert theirs == ours
            continue
        # TRL's mask covers ours and, beyond it, only what the template writes after the end-of-turn token
        last = max(j for j, m in enumerate(ours) if m)
        assert ids[last] in ends
        assert theirs[: last + 1] == ours[: last + 1] and all(theirs[last + 1:]), i
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss == result.training_loss  # finite, not NaN


@pytest.mark.slow
def test_the_sfttrainer_example_trains_every_train_file_with_our_masks(exported, root, tmp_path):
    """examples/trl_sft.py: TRL trains the export's train/ files with inweights' masks (documents on every token,
    answers on the completion), never a heldout/ file; its labels are ours token for token."""
    import importlib.util

    from transformers import AutoTokenizer

    out, manifest = exported
    spec = importlib.util.spec_from_file_location("trl_sft", root / "examples" / "trl_sft.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tok = AutoTokenizer.from_pretrained(root / "prepared" / "prepare_tiny")
    rows = mod.tokenized(out, tok)
    train_records = sum(f["records"] for n, f in manifest["files"].items() if n.startswith("train/"))
    assert len(rows) == train_records < sum(f["records"] for f in manifest["files"].values())
    docs = manifest["files"]["train/decl_with_io.jsonl"]["records"]
    assert all(r["labels"] == r["input_ids"] for r in rows[:docs])  # decl_* sorts first: every token trained
    assert all(-100 in r["labels"] and r["labels"] != r["input_ids"] for r in rows[-5:])  # answers: the completion
    assert mod.main([str(out), str(root / "prepared" / "prepare_tiny"), "--out", str(tmp_path / "sft"),
                     "--max-steps", "2", "--batch-size", "2"]) == 0
    assert mod.main([str(tmp_path), str(root / "prepared" / "prepare_tiny"), "--out", str(tmp_path / "x")]) == 2
