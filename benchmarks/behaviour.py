"""Behaviour fingerprints: does a change (a refactor, issue 39's) leave every regime's results as they were?

``run`` runs the shipped smoke configs of every regime — ``smoke`` (PBB), ``smoke_planning`` (symbolic -> NL
curricula, SFT and GRPO), ``smoke_rules`` (rule distillation) and ``smoke_ilf`` (ILF) — each into a fresh folder,
and writes one fingerprint per config: its ``summary.json`` without what legitimately changes between two runs
(timings, throughput, provenance, the run folder's path), every line of ``metrics.jsonl`` so cleaned (stage or
model, step, loss, lr: exact floats), the sha256 of every samples file and of every other record a regime keeps
(rule distillation's ``cells.jsonl``, ILF's ``steps/*.json``, evaluations), cleaned the same way. ``compare`` says which parts of two
fingerprints differ (exit 1) or that none does (exit 0). Same seed, same machine: the fingerprints of two commits
with the same behaviour are equal; run both commits on the same machine.

Usage:
  python benchmarks/behaviour.py run --out /tmp/fp_before.json [--configs smoke smoke_ilf] [--keep DIR]
  python benchmarks/behaviour.py compare /tmp/fp_before.json /tmp/fp_after.json [--parts summary metrics samples]

Each smoke config takes seconds to tens of seconds on 2 cores; a whole run ~1 min. Nothing is asserted here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONFIGS = ("smoke", "smoke_planning", "smoke_rules", "smoke_ilf")
# keys whose values change between two runs of the same code: times, speeds, where and on what it ran
VOLATILE = ("seconds", "time", "wall", "tok_s", "tokens_per_s", "per_s", "provenance", "host", "pid", "date",
            "resumed", "eta", "elapsed")


def _volatile(key: str) -> bool:
    k = key.lower()
    return any(v in k for v in VOLATILE) or k.endswith(("_s", "_ms"))  # gen_s: seconds of generation


def _clean(value: Any, run: str) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v, run) for k, v in value.items() if not _volatile(k)}
    if isinstance(value, list):
        return [_clean(v, run) for v in value]
    if isinstance(value, str):
        return value.replace(run, "<run>")
    return value


def fingerprint(run_dir: Path) -> dict[str, Any]:
    run = str(run_dir)
    summary = _clean(json.loads((run_dir / "summary.json").read_text()), run)
    metrics = run_dir / "metrics.jsonl"
    lines = [_clean(json.loads(x), run) for x in (metrics.read_text().splitlines() if metrics.is_file() else [])]
    samples, records = {}, {}
    for p in sorted(run_dir.rglob("samples*.jsonl")):
        text = p.read_text().replace(run, "<run>")
        samples[str(p.relative_to(run_dir))] = hashlib.sha256(text.encode()).hexdigest()
    # every other record a regime keeps (rule distillation's cells.jsonl, ILF's steps/*.json, evaluations), cleaned
    skip = {"summary.json", "metrics.jsonl", "status.json", "models.json", "prepare.json"}
    for p in sorted([*run_dir.rglob("*.json"), *run_dir.rglob("*.jsonl")]):
        rel = str(p.relative_to(run_dir))
        if p.name in skip or p.name.startswith("samples") or "/model/" in f"/{rel}" or "/models/" in f"/{rel}":
            continue
        text = p.read_text()
        try:
            data = ([json.loads(x) for x in text.splitlines()] if p.suffix == ".jsonl" else json.loads(text))
        except ValueError:
            continue
        canon = json.dumps(_clean(data, run), sort_keys=True)
        records[rel] = hashlib.sha256(canon.encode()).hexdigest()
    return {"summary": summary, "metrics": lines, "samples": samples, "records": records}


def run(configs: list[str], out: Path, keep: Path | None) -> int:
    root = keep or Path(tempfile.mkdtemp(prefix="inweights-behaviour-"))
    result: dict[str, Any] = {}
    for name in configs:
        folder = root / name
        cmd = [sys.executable, "-m", "inweights.cli", "run", str(HERE.parent / "configs" / f"{name}.yaml"),
               "--out", str(folder), "-q"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{name}: the run failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
            result[name] = {"failed": proc.returncode}
            continue
        result[name] = fingerprint(folder)
        fp = result[name]
        print(f"{name}: {sum('loss' in r for r in fp['metrics'])} loss lines, {len(fp['samples'])} samples files, "
              f"{len(fp['records'])} other records")
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


def _diff(a: Any, b: Any, where: str, out: list[str], limit: int = 20) -> None:
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}/{k}: only in {'the second' if k not in a else 'the first'}")
            else:
                _diff(a[k], b[k], f"{where}/{k}", out, limit)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{where}[{i}]", out, limit)
    elif a != b:
        out.append(f"{where}: {json.dumps(a)[:120]} != {json.dumps(b)[:120]}")


def _fail(text: str):
    print(f"behaviour: {text}", file=sys.stderr)
    raise SystemExit(2)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        _fail(f"{path}: not a fingerprint file ({getattr(e, 'strerror', None) or e})")
    if not isinstance(data, dict):
        _fail(f"{path}: not a fingerprint file (not a JSON object)")
    return data


PARTS = ("summary", "metrics", "samples", "records")


def compare(a_path: Path, b_path: Path, parts: tuple[str, ...] = PARTS) -> int:
    """``parts``: what is compared of each config's fingerprint (a change of where records are kept — issue 39's
    one resume scheme — is compared on summary, metrics and samples)."""
    a, b = _read(a_path), _read(b_path)

    def only(fp: dict[str, Any]) -> dict[str, Any]:
        return {name: {k: v for k, v in f.items() if k in parts or k == "failed"} if isinstance(f, dict) else f
                for name, f in fp.items()}

    a, b = only(a), only(b)
    diffs: list[str] = []
    _diff(a, b, "", diffs)
    for name in sorted(set(a) | set(b)):
        same = a.get(name) == b.get(name)
        print(f"{name}: {'same' if same else 'DIFFERENT'}")
    for d in diffs:
        print("  " + d)
    return 0 if not diffs else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    r.add_argument("--keep", type=Path, help="run folders here (default: a temporary folder)")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    args = ap.parse_args()
    if args.cmd == "run" and not args.out.parent.is_dir():
        _fail(f"--out {args.out}: its folder does not exist")
    return run(args.configs, args.out, args.keep) if args.cmd == "run" else compare(args.a, args.b, tuple(args.parts))


if __name__ == "__main__":
    sys.exit(main())
