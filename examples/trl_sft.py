"""Train on an inweights export with TRL's SFTTrainer, with the loss masks inweights' own stages use.

    inweights data programs --config configs/smoke.yaml --out data/smoke --format trl
    python examples/trl_sft.py data/smoke prepared/prepare_tiny --out runs/trl_sft --max-steps 50

A PBB stage mixes two losses in one stage: a declaration (``train/decl_*``) is a document, trained on every token;
an execution example (``train/exec_*``, ``train/in_context_*``) is trained on its answer only. SFTTrainer takes one
``completion_only_loss`` per dataset, so this script tokenizes every record itself with inweights' own
``tokenize_record`` (the chat template, and the mask each file's manifest note names) and hands TRL a pre-tokenized
dataset with a ``labels`` column, which TRL 1.16 trains on as it is. It reads every file under ``train/`` — by
construction everything a PBB recipe may train on; ``heldout/`` (the execution of without_io programs) is never read.
What differs from an inweights stage: examples are not packed into rows, and the order, schedule and optimiser are
TRL's (``--lr``, cosine). Prints the number of examples and the final training loss.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def tokenized(export: Path, tokenizer) -> list[dict[str, list[int]]]:
    """Every record of every ``train/`` file as input ids and labels (-100 where inweights puts no loss)."""
    from inweights.train.data import tokenize_record

    manifest = json.loads((export / "manifest.json").read_text())
    rows = []
    for name, info in sorted(manifest["files"].items()):
        if not name.startswith("train/"):
            continue
        scope = "completion" if info.get("trl", {}).get("completion_only_loss", True) else "all"
        for line in (export / name).read_text().splitlines():
            rec = json.loads(line)
            ids, labels = tokenize_record(tokenizer, {**rec, "messages": rec["prompt"] + rec["completion"]}, scope)
            rows.append({"input_ids": ids, "labels": labels})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path, help="an `inweights data --format trl` folder")
    ap.add_argument("model", help="a Hugging Face model folder (or hub id)")
    ap.add_argument("--out", required=True, help="TRL's output folder")
    ap.add_argument("--max-steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args(argv)

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    if not (args.export / "manifest.json").is_file():
        print(f"{args.export}: not an `inweights data --format trl` folder (no manifest.json)", file=sys.stderr)
        return 2
    tok = AutoTokenizer.from_pretrained(args.model)
    rows = tokenized(args.export, tok)
    if not rows:
        print(f"{args.export}: no train/ files in its manifest", file=sys.stderr)
        return 2
    config = SFTConfig(output_dir=args.out, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
                       learning_rate=args.lr, lr_scheduler_type="cosine", report_to=[], save_strategy="no",
                       logging_steps=10, use_cpu=True, disable_tqdm=True, max_length=None)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(args.model), args=config,
                         train_dataset=Dataset.from_list(rows), processing_class=tok)
    result = trainer.train()
    trainer.save_model(args.out)
    print(f"{len(rows)} examples, {result.global_step} steps, final training loss {result.training_loss:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
