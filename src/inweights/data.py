"""Dataset export (`inweights data`) and reading units back from a file.

Export layout (every file JSONL with chat ``messages`` plus ``prompt``/``completion``, which
``datasets.load_dataset("json", data_files=...)`` and TRL read as they are)::

    units.jsonl                          one program per line (id, pointer, source, group, inputs)
    train/{view}_{group}.jsonl           what PBB trains on: decl (every template) of both groups; exec and
                                         in_context (train inputs) of with_io programs
    heldout/{view}_without_io.jsonl      exec and in_context of without_io programs: never train on these (a
                                         without_io program trained on its I/O is a with_io one: the comparison
                                         is void); kept for analysis and controls that mean to train on them
    probes/{group}_{mode}_{format}.jsonl held-out inputs, exactly what the evaluator asks
    manifest.json                        seed, config, counts per group and view, sha256 per file

Same seed and config -> byte-identical files (no timestamps, fixed key order, seeded templates).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inweights import views
from inweights.config import ExperimentConfig, dump_config
from inweights.core.errors import UserError
from inweights.core.io import writing
from inweights.core.seeds import derive_seed
from inweights.domains.base import Unit
from inweights.domains.capabilities import ReleaseLayout, supports
from inweights.eval.probes import build_probes


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> str:
    data = "".join(_dumps(r) + "\n" for r in records).encode()
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
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


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """``with staged(out) as tmp``: the staging folder (``_staging``), removed again if the block fails (bad input,
    a full disk, a bug), so a failed export leaves nothing behind; ``_publish`` moves it into place."""
    tmp = _staging(out)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(cfg: ExperimentConfig, tmp: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last and rename the folder into place: a half-written export never looks done."""
    manifest["config"] = dump_config(cfg)
    with writing(tmp / "manifest.json"):
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)


def export(cfg: ExperimentConfig, out: Path, domain, units: list[Unit]) -> dict[str, Any]:
    """Write the dataset into ``out`` atomically (a temp folder renamed at the end): the domain's own release
    layout where it has one (``Domain.release_files``), the PBB layout above otherwise."""
    with staged(out) as tmp:
        own = domain.release_files(units, cfg.seed, views.execution) if supports(domain, ReleaseLayout) else None
        files = own if own is not None else pbb_files(cfg, domain, units)
        manifest: dict[str, Any] = {"seed": cfg.seed, "domain": cfg.domain.name, "files": {}}
        for name, recs in files.items():
            sha = _write_jsonl(tmp / name, recs)
            manifest["files"][name] = {"records": len(recs), "sha256": sha}
        manifest["counts"] = {g: sum(u.group == g for u in units) for g in domain.groups}
        if any(n.startswith("heldout/") for n in files):
            manifest["heldout"] = HELDOUT_NOTE
        _publish(cfg, tmp, out, manifest)
    return manifest


HELDOUT_NOTE = ("heldout/: the execution of without_io programs. Never train on these files: a without_io program "
                "whose input/output pairs are trained on is a with_io one, and the in-weights comparison is void. "
                "train/ holds everything the PBB recipes may train on; probes/ what the evaluator asks.")


def pbb_files(cfg: ExperimentConfig, domain, units: list[Unit]) -> dict[str, list[dict[str, Any]]]:
    files: dict[str, list[dict[str, Any]]] = {"units.jsonl": [unit_record(u) for u in units]}
    for group in ("with_io", "without_io"):
        chosen = [u for u in units if u.group == group]
        rng = random.Random(derive_seed(cfg.seed, "export", group))
        # every unit once with each pointer template
        decl = [views.decl(domain, u, rng, template=t) for u in chosen for t in range(len(domain.decl_templates))]
        files[f"train/decl_{group}.jsonl"] = decl
        # a without_io program's execution is held out: only its source may be trained on (the export keeps it
        # apart, so "train on everything under train/" keeps the comparison)
        where = "train" if group == "with_io" else "heldout"
        files[f"{where}/exec_{group}.jsonl"] = [views.execution(domain, u, x, f, rng)
                                                for u in chosen for x in u.train_inputs for f in ("direct", "cot")]
        files[f"{where}/in_context_{group}.jsonl"] = [views.in_context(domain, u, x, f, rng) for u in chosen
                                                      for x in u.train_inputs for f in ("direct", "cot")]
    for p in build_probes(domain, units, cfg.eval, cfg.seed):
        files.setdefault(f"probes/{p['cell'].replace('/', '_')}.jsonl", []).append(p)
    return files


# ---------------------------------------------------------------------------- TRL layout
TRL_COLUMNS = ("prompt", "completion", "unit", "view", "group", "format", "answer")
# views trained with the loss on the whole document (``curriculum``: decl is read as a document, not answered)
WHOLE_DOCUMENT_VIEWS = ("decl",)


def _is_chat(x: Any) -> bool:
    return isinstance(x, list) and bool(x) and all(isinstance(m, dict) and "role" in m and "content" in m for m in x)


def trl_record(rec: dict[str, Any]) -> dict[str, Any]:
    """One record in TRL's conversational prompt-completion layout, with the same string columns in every file
    (``TRL_COLUMNS``): no ``messages`` beside ``prompt``/``completion`` (TRL's chat-template helpers would pick
    one layout and fail on the other), no column that some records lack or type differently."""
    def s(v: Any) -> str:
        return "" if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)

    return {"prompt": rec["prompt"], "completion": rec["completion"], "unit": s(rec.get("unit", rec.get("task"))),
            "view": s(rec.get("view")), "group": s(rec.get("group")), "format": s(rec.get("format")),
            "answer": s(rec.get("answer"))}


def trl_note(views_in_file: set[str]) -> dict[str, Any]:
    whole = views_in_file & set(WHOLE_DOCUMENT_VIEWS)
    if whole and whole != views_in_file:
        raise ValueError(f"a file mixes whole-document views {sorted(whole)} with others {sorted(views_in_file - whole)}")
    if whole:
        return {"layout": "conversational prompt-completion", "completion_only_loss": False,
                "note": "inweights trains these documents with the loss on every token: set "
                        "SFTConfig(completion_only_loss=False) (TRL's default for this layout is True)"}
    return {"layout": "conversational prompt-completion", "completion_only_loss": True,
            "note": "loss on the completion only (TRL's default). TRL also trains what the chat template writes "
                    "after the assistant turn's end-of-turn token (a newline); inweights does not"}


def export_trl(cfg: ExperimentConfig, out: Path, write_native) -> dict[str, Any]:
    """``inweights data --format trl``: the native export (``write_native(folder)``) converted file by file to
    ``trl_record``s, with a ``trl`` note per file in the manifest (layout, the ``completion_only_loss`` that matches
    our training). Files without chat records (units.jsonl, a release layout's question/answer files) are listed
    under ``skipped``. Written like every export: staged, the manifest last, renamed into place."""
    import tempfile

    with staged(out) as tmp, tempfile.TemporaryDirectory(dir=tmp.parent, prefix=f".{out.name}.native-") as nat:
        native_dir = Path(nat) / "native"
        native = write_native(native_dir)
        manifest: dict[str, Any] = {"seed": native.get("seed"), "domain": native.get("domain"), "format": "trl",
                                    "files": {}, "skipped": {}}
        for name in sorted(native["files"]):
            recs = [json.loads(ln) for ln in (native_dir / name).read_text().splitlines() if ln.strip()]
            if not recs or not all(_is_chat(r.get("prompt")) and _is_chat(r.get("completion")) for r in recs):
                manifest["skipped"][name] = "no chat prompt/completion records (not training data for TRL)"
                continue
            try:
                note = trl_note({str(r.get("view")) for r in recs})
            except ValueError as e:
                raise UserError(f"inweights data --format trl: {name}: {e}") from None
            sha = _write_jsonl(tmp / name, [trl_record(r) for r in recs])
            manifest["files"][name] = {"records": len(recs), "sha256": sha, "trl": note}
        manifest["counts"] = native.get("counts")
        if "heldout" in native:
            manifest["heldout"] = native["heldout"]
        _publish(cfg, tmp, out, manifest)
    return manifest
