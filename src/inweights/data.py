"""Dataset export (`inweights data`) and reading units back from a file.

Export layout (every file JSONL with chat ``messages`` plus ``prompt``/``completion``, which
``datasets.load_dataset("json", data_files=...)`` and TRL read as they are)::

    units.jsonl                          one program per line (id, pointer, source, group, inputs)
    train/{view}_{group}.jsonl           decl (every template), exec and in_context (train inputs)
    probes/{group}_{mode}_{format}.jsonl held-out inputs, exactly what the evaluator asks
    manifest.json                        seed, config, counts per group and view, sha256 per file

Same seed and config -> byte-identical files (no timestamps, fixed key order, seeded templates).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

from inweights import views
from inweights.config import ExperimentConfig, dump_config
from inweights.core.errors import UserError
from inweights.core.io import read_jsonl
from inweights.core.seeds import derive_seed
from inweights.domains.base import Unit
from inweights.eval.probes import build_probes

_V = r"[a-wx]"
_S = r"[a-ws]"
LINE_PATTERNS = [
    re.compile(rf"^[a-w] = \({_V} [-+*] \d+\) % \d+( if {_V} > \d+ else \({_V} [-+*] \d+\) % \d+)?$"),
    re.compile(rf"^[a-w] = ''\.join\(chr\(\(ord\(ch\) - 97 \+ \d+\) % \d+ \+ 97\) for ch in {_S}\)$"),
    re.compile(rf"^[a-w] = {_S}\[::-1\]$"),
    re.compile(rf"^[a-w] = {_S}\.translate\(str\.maketrans\('[a-z]+', '[a-z]+'\)\)$"),
    re.compile(rf"^[a-w] = {_S}\[\d:\] \+ {_S}\[:\d\]$"),
]
HEADER = re.compile(r"^def ([a-z_][a-z0-9_]*)\(([xs])\):$")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(_dumps(r) + "\n" for r in records).encode()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def unit_record(u: Unit) -> dict[str, Any]:
    return {"id": u.id, "family": u.family, "pointer": u.pointer, "group": u.group, "source": u.instruction,
            "train_inputs": list(u.train_inputs), "test_inputs": list(u.test_inputs)}


def _staging(out: Path) -> Path:
    """An empty ``<out>.partial`` folder to write into (``out`` must not hold anything yet)."""
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output folder {out} exists and is not empty")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _publish(cfg: ExperimentConfig, tmp: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last and rename the folder into place: a half-written export never looks done."""
    manifest["config"] = dump_config(cfg)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)


def export(cfg: ExperimentConfig, out: Path, domain, units: list[Unit]) -> dict[str, Any]:
    """Write the dataset into ``out`` atomically (a temp folder renamed at the end)."""
    tmp = _staging(out)
    files: dict[str, list[dict[str, Any]]] = {"units.jsonl": [unit_record(u) for u in units]}
    for group in ("with_io", "without_io"):
        chosen = [u for u in units if u.group == group]
        rng = random.Random(derive_seed(cfg.seed, "export", group))
        # every unit once with each pointer template
        decl = [views.decl(domain, u, rng, template=t) for u in chosen for t in range(len(domain.decl_templates))]
        files[f"train/decl_{group}.jsonl"] = decl
        files[f"train/exec_{group}.jsonl"] = [views.execution(domain, u, x, f, rng)
                                              for u in chosen for x in u.train_inputs for f in ("direct", "cot")]
        files[f"train/in_context_{group}.jsonl"] = [views.in_context(domain, u, x, f, rng)
                                                    for u in chosen for x in u.train_inputs for f in ("direct", "cot")]
    for p in build_probes(domain, units, cfg.eval, cfg.seed):
        files.setdefault(f"probes/{p['cell'].replace('/', '_')}.jsonl", []).append(p)
    manifest: dict[str, Any] = {"seed": cfg.seed, "domain": cfg.domain.name, "files": {}}
    for name, recs in files.items():
        sha = _write_jsonl(tmp / name, recs)
        manifest["files"][name] = {"records": len(recs), "sha256": sha}
    manifest["counts"] = {g: sum(u.group == g for u in units) for g in ("with_io", "without_io")}
    _publish(cfg, tmp, out, manifest)
    return manifest


def export_planning(cfg: ExperimentConfig, out: Path, domain, units: list[Unit]) -> dict[str, Any]:
    """Planning instances in the AsyncHow release layout (``asynchow_{natural,graph,python}_{train,test}.jsonl``,
    records ``{"question", "answer"}`` aligned by line; NL/Graph answers as timedelta lists, Code answers as
    minutes), which ``planning.asynchow_dir`` reads back, plus chat-format SFT files with the chain of thought
    (``chat/{split}_{representation}.jsonl``)."""
    from inweights.domains.planning import _show

    tmp = _staging(out)
    files: dict[str, list[dict[str, Any]]] = {}
    names = {"nl": "natural", "graph": "graph", "code": "python"}
    for split in ("train", "test"):
        chosen = [u for u in units if u.group == split]
        rng = random.Random(derive_seed(cfg.seed, "export", split))
        for x in domain.all_inputs:
            recs = [views.execution(domain, u, x, "cot", rng) for u in chosen]
            released = []
            for u, r in zip(chosen, recs):
                lo, hi = domain.gold(u, x)  # an interval for months and years
                answer: Any = float(lo) if x == "code" else \
                    f"[datetime.timedelta(seconds={_show(lo * 60)}), datetime.timedelta(seconds={_show(hi * 60)})]"
                released.append({"question": r["prompt"][0]["content"], "answer": answer})
            files[f"asynchow_{names[x]}_{split}.jsonl"] = released
            files[f"chat/{split}_{x}.jsonl"] = recs
    manifest: dict[str, Any] = {"seed": cfg.seed, "domain": "planning", "files": {}}
    for name, recs in files.items():
        manifest["files"][name] = {"records": len(recs), "sha256": _write_jsonl(tmp / name, recs)}
    manifest["counts"] = {g: sum(u.group == g for u in units) for g in ("train", "test")}
    _publish(cfg, tmp, out, manifest)
    return manifest


def check_source(src: str) -> tuple[str, str]:
    """(name, param) if ``src`` is a program of the generator's grammar; raises ValueError otherwise.

    Only programs of that fixed, side-effect-free shape are executed in-process; anything else is
    untrusted code, which must only ever run in the sandbox.
    """
    lines = src.split("\n")
    m = HEADER.match(lines[0]) if lines else None
    if not m or len(lines) < 3:
        raise ValueError("not a 'def name(x):' program")
    body = [ln[4:] if ln.startswith("    ") else None for ln in lines[1:]]
    if any(b is None for b in body) or not body[-1].startswith("return "):
        raise ValueError("body must be indented statements ending in return")
    for b in body[:-1]:
        if not any(p.match(b) for p in LINE_PATTERNS):
            raise ValueError(f"statement outside the generator's grammar: {b!r}")
    if not re.fullmatch(r"return [a-w]", body[-1]):
        raise ValueError("return must name one variable")
    return m.group(1), m.group(2)


def read_units(path: Path, domain) -> list[Unit]:
    """Program units from a JSONL file (``units.jsonl`` of an export, or your own), under the loader policy
    (``inweights.core.rejects``): a record that is not a program of the generator's grammar, or whose inputs do not
    run, is rejected with its line; a duplicate name too."""
    from inweights.core import rejects

    units, names, ids = [], set(), set()
    for where, rec in read_jsonl(path, "data file", lenient=True):
        if rec is None:
            continue
        try:
            bad = next((f"field '{k}' must be {t.__name__}" for k, t in
                        (("source", str), ("group", str), ("train_inputs", list), ("test_inputs", list))
                        if k in rec and not isinstance(rec[k], t)), None)
            if bad:
                raise ValueError(bad)
            name, param = check_source(rec["source"])
            group = rec["group"]
            if group not in ("with_io", "without_io"):
                raise ValueError(f"group must be with_io or without_io, not {group!r}")
            fam = "arith" if param == "x" else "cipher"
            u = Unit(id=str(rec.get("id", name)), family=fam, pointer=name, instruction=rec["source"], group=group,
                     train_inputs=tuple(rec["train_inputs"]), test_inputs=tuple(rec["test_inputs"]),
                     meta={"param": param, "n_statements": rec["source"].count("\n") - 1})
            if not u.test_inputs:
                raise ValueError("test_inputs is empty")
            for x in u.train_inputs + u.test_inputs:
                domain.run(u, x)
            if name in names:
                raise ValueError(f"a second program named {name}")
            if u.id in ids:
                raise ValueError(f"a second record with id {u.id}")
        except KeyError as e:
            rejects.reject(where, f"missing field {e}")
            continue
        except (ValueError, TypeError) as e:
            rejects.reject(where, str(e))
            continue
        names.add(name)
        ids.add(u.id)
        units.append(u)
    rejects.check_any_loaded(len(units), f"data file {path}")
    return units
