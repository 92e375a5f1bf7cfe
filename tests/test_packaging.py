"""The package as a user installs it: a wheel with its configs, py.typed and LICENSE, installed into a fresh
virtual environment outside the checkout, runs a shipped config by name."""

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, **kw)
    assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


@pytest.mark.slow
def test_wheel_installed_outside_the_checkout_runs_smoke(root, tmp_path):
    # built from a copy of what the sdist holds (setuptools writes build/ beside the sources; never in the checkout)
    src = tmp_path / "src_tree"
    shutil.copytree(root / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(root / f, src / f)
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp_path / "dist")], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("inweights-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "inweights/py.typed" in names and "inweights/configs/smoke.yaml" in names
    assert "inweights/configs/gpu/pbb_programs_qwen2.5-0.5b_lora.yaml" in names
    assert any(n.endswith((".dist-info/licenses/LICENSE", ".dist-info/LICENSE")) for n in names)
    # a fresh environment: the wheel itself, its dependencies taken from this environment's site-packages
    # (a path in a .pth file: its own .pth files, among them this checkout's editable finder, are not run)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    site = Path(_run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                     ).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-q",
          str(wheel)])
    where = _run([str(venv / "bin" / "python"), "-c", "import inweights; print(inweights.__file__)"], cwd=tmp_path)
    assert where.stdout.strip().startswith(str(site)), where.stdout  # the wheel's copy, not the checkout
    listing = _run([str(venv / "bin" / "inweights"), "configs"], cwd=tmp_path).stdout
    assert "smoke" in listing and "pbb_programs" in listing
    quiet = _run([str(venv / "bin" / "inweights"), "validate", "smoke", "--quiet"], cwd=tmp_path)
    assert "ok (experiment 'smoke')" in quiet.stdout and not quiet.stderr.strip()
    # the documented Python API (examples/quickstart.py), run by the installed package: a shipped config by name,
    # sections merged over it, the run read back
    ex = _run([str(venv / "bin" / "python"), str(root / "examples" / "quickstart.py"), str(tmp_path / "run")],
              cwd=tmp_path)
    assert "state: finished" in ex.stdout and "proactive" in ex.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["provenance"]["git"] is None  # an installed wheel is no checkout
    assert set(summary["rows"]) == {"base", "proactive"}
    assert summary["provenance"]["packages"]["inweights"] == "0.1.0"


def test_gpu_check_dry_run(root, tmp_path):
    """benchmarks/gpu_check.py, the script a GPU session runs first, works (on the CPU, its cheap parts)."""
    out = tmp_path / "gpu_check.json"
    proc = _run([sys.executable, str(root / "benchmarks" / "gpu_check.py"), "--allow-cpu", "--steps", "3",
                 "--only", "environment", "train_bf16_lora", "vllm_generate", "--out", str(out)], cwd=root)
    rec = json.loads(out.read_text())
    assert rec["parts"]["environment"]["ok"] and rec["parts"]["train_bf16_lora"]["ok"], rec
    assert rec["parts"]["train_bf16_lora"]["trainable_params"] < 100_000  # LoRA: the adapters only
    assert rec["parts"]["vllm_generate"]["ok"] is None  # skipped here, and says why
    assert "| train_bf16_lora | pass |" in proc.stdout
