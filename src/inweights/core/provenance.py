"""What a run's numbers depend on besides its config: package versions, the commit, the machine.

"Same seed, same metrics" holds per machine: CPU kernels (bf16 in particular: the AVX-512-BF16 path and the
fallback round differently), thread counts and library versions change the last digits of every loss, and
sampling amplifies them. ``summary.json`` therefore records the machine next to the numbers.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = ("inweights", "torch", "transformers", "tokenizers", "accelerate", "peft", "pydantic", "trl", "vllm",
            "numpy", "lark", "networkx")
# the CPU features that decide which kernels torch runs (bf16 matmuls in particular)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "neon", "asimd", "sve")


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _cpu() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model name") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "arch": platform.machine(), "cores": os.cpu_count(),
            "flags": [f for f in CPU_FLAGS if f in flags]}


def _git() -> dict[str, Any] | None:
    """The commit of the checkout the package runs from (an editable install), or None (an installed wheel)."""
    here = Path(__file__).resolve().parents[3]
    if not (here / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, check=False,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=False, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit or None, "dirty": bool(dirty)} if commit else None


def bf16_supported() -> bool:
    """Whether bf16 autocast runs fast here: a GPU that supports it, or a CPU with avx512_bf16 / AMX kernels
    (elsewhere it is emulated and ~8x slower than fp32, so stages run in fp32)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in info or "amx_bf16" in info


def provenance() -> dict[str, Any]:
    """A JSON-ready record of the software and the machine (no timestamps: the summary says when)."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": _versions(),
        "git": _git(),
        "cpu": _cpu(),
        "torch": {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
                  "bf16_autocast": bf16_supported(), "mkldnn": torch.backends.mkldnn.is_available(),
                  "cuda": torch.version.cuda if cuda else None,
                  "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []},
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                                           "WORLD_SIZE") if k in os.environ},
    }
