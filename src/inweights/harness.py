"""A config's probes as lm-evaluation-harness tasks: evaluate an inweights-trained model (or any model) where people
already evaluate models, with the toolkit's own scoring.

``inweights export-task CONFIG --out DIR`` writes, for every probe cell of the config's units (group / mode /
format, as a run's report names them):

- ``DIR/data/<cell>.jsonl``: one document per probe — ``prompt`` (the user turn a run's probe shows), ``answer``,
  ``target`` (the full reference completion), ``unit`` and ``input`` (JSON text);
- ``DIR/<task>.yaml``: an lm-eval ``generate_until`` task over that file, greedy, the run's generation budget;
- ``DIR/utils.py``: its ``process_results``, which scores a completion with the domain's own semantics (the
  answer after ``Answer:`` executed, parsed or compared exactly as ``inweights run`` does), by rebuilding the
  units from ``DIR/config.yaml`` (from the directory the export ran in, recorded in ``DIR/export.json``, so relative
  data paths resolve the same; a unit whose answer differs from the exported one stops the scoring with the reason);
- ``DIR/README.md``: the task names and the command.

Run them with the chat template (the probes are chat turns)::

    lm_eval --model hf --model_args pretrained=RUN/export/proactive --include_path DIR \\
        --tasks inweights_NAME --apply_chat_template

lm-eval reads the JSONL through ``datasets`` (no network). Why not lm-eval's own ``exact_match``: a grammar's
answer is any string the grammar accepts and a program's is checked by value; only the domain knows.
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

from inweights.core.errors import UserError

UTILS = '''"""Scoring for the inweights tasks beside this file (written by `inweights export-task`)."""
from pathlib import Path

from inweights.harness import scorer

HERE = Path(__file__).resolve().parent


def process_results(doc, results):
    return {"acc": scorer(str(HERE)).score(doc, results[0])}
'''


def task_name(cfg_name: str, cell: str) -> str:
    return "inweights_" + re.sub(r"[^A-Za-z0-9_]", "_", f"{cfg_name}_{cell}")


def task_yaml(name: str, group: str, data: Path, max_new_tokens: int) -> str:
    """One lm-eval task (YAML); ``process_results`` is lm-eval's ``!function`` tag for a Python function."""
    return "\n".join([
        f"task: {name}",
        f"tag: {group}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(str(data))}",
        "test_split: test",
        "output_type: generate_until",
        'doc_to_text: "{{prompt}}"',
        'doc_to_target: "{{answer}}"',
        "process_results: !function utils.process_results",
        "generation_kwargs:",
        '  until: ["\\n\\n"]',  # (lm-eval's default, said so it does not warn) and the model's end of turn
        "  do_sample: false",
        f"  max_gen_toks: {max_new_tokens}",
        "metric_list:",
        "  - metric: acc",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        "  version: 1.0",
        ""])


def export_task(config: str | Path, out: Path, overrides: list[str] | None = None,
                cells: list[str] | None = None) -> dict[str, Any]:
    """Write the lm-eval tasks of a config's probes to ``out``; returns {task name: number of probes}."""
    from inweights.config import dump_config, load_config
    from inweights.core.io import check_out
    from inweights.eval.probes import build_probes
    from inweights.runs import load_units

    cfg = load_config(config, overrides)
    domain, units = load_units(cfg, quiet=True)
    probes = [p for p in build_probes(domain, units, cfg.eval, cfg.seed) if p["mode"] != "doc_context"]
    probes = [p for p in probes if not p["cell"].endswith("/train")]  # training inputs: a diagnostic, not a test
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for p in probes:
        by_cell.setdefault(p["cell"], []).append(p)
    if cells:
        unknown = [c for c in cells if c not in by_cell]
        if unknown:
            raise UserError(f"--cell {', '.join(unknown)}: not a probe cell of this config "
                            f"(it has: {', '.join(by_cell)})")
        by_cell = {c: by_cell[c] for c in cells}
    for cell, ps in by_cell.items():  # checked before anything is written
        if any(len(p["prompt"]) != 1 for p in ps):
            raise UserError(f"{cell}: probes with a prefilled assistant turn cannot be exported as tasks")
    out = check_out(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(cfg))
    (out / "utils.py").write_text(UTILS)
    group = task_name(cfg.name, "all")[: -len("_all")]
    written = {}
    for cell, ps in by_cell.items():
        stem = cell.replace("/", "_")
        data = (out / "data" / f"{stem}.jsonl").resolve()
        lines = []
        for i, p in enumerate(ps):
            lines.append(json.dumps({"id": i, "prompt": p["prompt"][0]["content"], "answer": str(p["answer"]),
                                     "target": p["completion"][0]["content"], "unit": p["unit"],
                                     "input": json.dumps(p["input"]), "cell": cell}) + "\n")
        data.write_text("".join(lines))
        name = task_name(cfg.name, cell)
        (out / f"{stem}.yaml").write_text(task_yaml(name, group, data, cfg.eval.max_new_tokens))
        written[name] = len(ps)
    # where the export ran: the config's relative data paths resolve from there when the tasks are scored
    (out / "export.json").write_text(json.dumps({"workdir": os.getcwd(), "tasks": written}, indent=1) + "\n")
    rows = "\n".join(f"| `{n}` | {k} |" for n, k in written.items())
    (out / "README.md").write_text(
        f"# lm-evaluation-harness tasks of `{cfg.name}`\n\nWritten by `inweights export-task`; scored by the "
        f"{domain.name} domain's own semantics (`utils.py`). Every task is tagged `{group}`.\n\n"
        f"    lm_eval --model hf --model_args pretrained=MODEL_DIR --include_path {out.resolve()} \\\n"
        f"        --tasks {group} --apply_chat_template\n\n| task | probes |\n|---|---|\n{rows}\n")
    return written


class Scorer:
    """The domain's verdict on one exported probe: the units rebuilt from the exported config."""

    def __init__(self, folder: str | Path):
        from inweights.config import load_config
        from inweights.core.io import read_json_object
        from inweights.runs import load_units

        folder = Path(folder)
        workdir = read_json_object(folder / "export.json", "exported task record").get("workdir")
        here = os.getcwd()
        try:
            if isinstance(workdir, str) and Path(workdir).is_dir():
                os.chdir(workdir)
            self.domain, units = load_units(load_config(folder / "config.yaml"), quiet=True)
        finally:
            os.chdir(here)
        self.units = {u.id: u for u in units}

    def score(self, doc: dict[str, Any], completion: str) -> float:
        unit = self.units.get(doc["unit"])
        x = None if unit is None else _like(unit, json.loads(doc["input"]))
        if unit is None or str(self.domain.answer_text(unit, x)) != doc["answer"]:
            raise UserError(f"exported probe {doc.get('cell')}#{doc.get('id')}: the units rebuilt from the exported "
                            f"config differ from the export (unit {doc['unit']}); export the tasks again")
        pred = self.domain.extract_answer(completion)
        return float(bool(self.domain.score(unit, x, pred)))


def _like(unit, x: Any) -> Any:
    """``x`` as the unit holds it (JSON turns a tuple input into a list)."""
    for y in (*unit.test_inputs, *unit.train_inputs):
        if y == x or (isinstance(y, tuple) and isinstance(x, list) and list(y) == x):
            return y
    return x


@cache
def scorer(folder: str) -> Scorer:
    """The scorer of an export folder, built once per process."""
    return Scorer(folder)


def check_scores(out: Path) -> tuple[int, int]:
    """(right, total) when every exported probe's own reference completion is scored: a check of the export."""
    s = Scorer(out)
    right = total = 0
    for f in sorted((out / "data").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            doc = json.loads(line)
            right += int(s.score(doc, doc["target"]))
            total += 1
    return right, total


__all__ = ["Scorer", "check_scores", "export_task", "scorer", "task_name"]
