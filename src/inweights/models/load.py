"""Build, load and save models. Checkpoints are `save_pretrained` folders plain transformers loads.

A model *source* is what ``from_pretrained`` accepts: a local folder or a hub id. With LoRA a stage
saves only its adapter (plus the tokenizer) and ``inweights.json`` naming the source it was trained on;
``load_model`` follows that chain, merging each adapter in order, so stages stay small on disk and
``inweights export RUN --merge`` writes the merged weights when a standalone folder is wanted.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from inweights.config import LoraConfig, ModelConfig, TinyConfig
from inweights.core.errors import UserError

CHAIN_FILE = "inweights.json"

# peft reads transformers' deprecated ``is_gradient_checkpointing`` on every adapter it wraps or loads: one
# FutureWarning per process that says nothing to a user of this toolkit
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def build_tiny(cfg: TinyConfig, tokenizer, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    conf = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(conf)


# ---------------------------------------------------------------------------- sources
def check_folder(folder: str | Path, what: str) -> None:
    """A ``save_pretrained`` folder's files checked without loading it: config.json is a JSON object and every
    ``*.safetensors`` file is whole (its header parses and the file holds every tensor the header lists), so a
    damaged folder is one line before any work, not a traceback from the loader."""
    from inweights.core.io import read_json_object

    p = Path(folder)
    if (p / "config.json").is_file():
        read_json_object(p / "config.json", f"{what}: model config")
    for f in sorted(p.glob("*.safetensors")):
        problem = _safetensors_problem(f)
        if problem:
            raise UserError(f"{what}: {f} is damaged ({problem}); write the model again")


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not whole, or None. The format: 8 bytes little-endian header length, a JSON
    header of name -> {dtype, shape, data_offsets}, then the data (read by hand: safetensors' own reader reports
    truncation only when a tensor is loaded)."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "shorter than its header"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return "cut inside its header"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        return f"unreadable header: {e}"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    ends = [t["data_offsets"][1] for k, t in header.items()
            if k != "__metadata__" and isinstance(t, dict) and isinstance(t.get("data_offsets"), list)]
    if ends and 8 + n + max(ends) > size:
        return f"cut short: {size} bytes, its header needs {8 + n + max(ends)}"
    return None


def check_source(m: ModelConfig) -> None:
    """Cheap checks run before any work starts (missing folder, missing package, damaged files)."""
    if m.path is not None and not (Path(m.path) / "config.json").is_file():
        raise UserError(f"model.path: {m.path} is not a Hugging Face model folder (no config.json); "
                        f"point it at a folder written by save_pretrained")
    if m.path is not None:
        check_folder(m.path, "model.path")
    if m.preset == "smollm2-135m":
        from inweights.models.presets import smollm2_gguf

        smollm2_gguf()
    if m.name is not None:  # reachable (network or HF cache)? Fails fast, before any work
        try:
            AutoConfig.from_pretrained(m.name, **({"revision": m.revision} if m.revision else {}))
        except (OSError, ValueError) as e:
            raise _fail(m.name, e) from None


PRESET_PREFIX = "preset:"


def base_ref(m: ModelConfig) -> str:
    """How an adapter's chain file names the model ``m`` describes: ``preset:NAME`` for a preset (resolved on the
    machine that loads it, so a shipped adapter works on any machine), else the folder or the hub id."""
    if m.preset is not None and m.preset != "tiny":
        return PRESET_PREFIX + m.preset
    if m.path is not None:
        return str(Path(m.path).resolve())
    assert m.name is not None
    return m.name


def weights_digest(folder: str | Path) -> str:
    """sha256 of a model folder's weights: of its one ``*.safetensors`` file, or of the sorted per-file digests
    when the weights are sharded (or an adapter's ``adapter_model.safetensors``)."""
    from inweights.core.io import sha256_file

    files = sorted(Path(folder).glob("*.safetensors")) or sorted(Path(folder).glob("*.bin"))
    if not files:
        raise UserError(f"{folder}: no weights (*.safetensors or *.bin) in this model folder")
    if len(files) == 1:
        return sha256_file(files[0])
    import hashlib

    return hashlib.sha256("".join(f"{f.name}:{sha256_file(f)}\n" for f in files).encode()).hexdigest()


def _cached_digest(folder: Path) -> str:
    """``weights_digest`` of a local folder, remembered under the cache root by (path, sizes, mtimes): hashing a
    large model on every load would cost seconds each time."""
    import hashlib

    from inweights.models.presets import cache_root

    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.glob("*.safetensors"))]
    key = hashlib.sha256(json.dumps([str(folder), stats]).encode()).hexdigest()
    memo = cache_root() / "digests" / f"{key}.txt"
    if memo.is_file():
        return memo.read_text().strip()
    digest = weights_digest(folder)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(digest + "\n")
    except OSError:  # a read-only cache only costs the hashing again
        pass
    return digest


def ref_identity(ref: str, revision: str | None = None) -> dict[str, Any]:
    """What identifies the weights behind a base reference (``base_ref``): a preset's source file digest, a
    folder's weights digest, a hub id with its revision."""
    if ref.startswith(PRESET_PREFIX):
        from inweights.models.presets import PRESETS

        name = ref[len(PRESET_PREFIX):]
        if name not in PRESETS:
            raise UserError(f"unknown model preset {name!r} (known: {', '.join(sorted(PRESETS))})")
        src = json.loads((PRESETS[name]() / "source.json").read_text())
        return {"preset": name, "sha256": src["sha256"]}
    p = Path(ref)
    if p.is_dir():
        return {"weights_sha256": _cached_digest(p)}
    return {"name": ref, "revision": revision}


def model_identity(m: ModelConfig) -> dict[str, Any]:
    """``ref_identity`` of the model a config names (the tiny preset: ``{"preset": "tiny"}``, its weights are the
    prepared base's own)."""
    if m.preset == "tiny":
        return {"preset": "tiny"}
    return ref_identity(base_ref(m), m.revision)


def describe_identity(ident: dict[str, Any] | None) -> str:
    if not ident:
        return "the tiny preset"
    if "preset" in ident:
        return f"preset {ident['preset']}" + (f" (source sha256 {ident['sha256'][:12]})" if ident.get("sha256") else "")
    if "weights_sha256" in ident:
        return f"weights sha256 {ident['weights_sha256'][:12]}"
    return f"{ident.get('name')}" + (f"@{ident['revision']}" if ident.get("revision") else "")


def resolve_ref(ref: str) -> str:
    """The folder (or hub id) a base reference loads from: a preset is converted/located on this machine."""
    if ref.startswith(PRESET_PREFIX):
        ref_identity(ref)  # an unknown preset is one line
        from inweights.models.presets import PRESETS

        return str(PRESETS[ref[len(PRESET_PREFIX):]]())
    return ref


def resolve_source(m: ModelConfig) -> tuple[str, dict[str, Any]]:
    """(source for from_pretrained, identity that changes when the weights change) of a non-tiny model."""
    check_source(m)
    if m.preset is not None and m.preset != "tiny":
        from inweights.models.presets import PRESETS

        d = PRESETS[m.preset]()
        return str(d), {"preset": m.preset, "source": json.loads((d / "source.json").read_text())}
    if m.path is not None:
        p = Path(m.path).resolve()
        return str(p), {"path": str(p), "mtime": (p / "config.json").stat().st_mtime}
    assert m.name is not None
    return m.name, {"name": m.name, "revision": m.revision}


def _load_kwargs(dtype: str, attn: str | None, revision: str | None) -> dict[str, Any]:
    kw: dict[str, Any] = {"dtype": getattr(torch, dtype)}
    if attn:
        kw["attn_implementation"] = attn
    if revision:
        kw["revision"] = revision
    return kw


def _fail(source: str, e: Exception) -> UserError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    hint = ""
    if not Path(source).exists():
        hint = " (a hub id needs network or a filled Hugging Face cache; offline, use model.path)"
    return UserError(f"cannot load model {source}: {first}{hint}")


def load_model(source: str | Path, dtype: str = "float32", lora: LoraConfig | None = None,
               attn_implementation: str | None = None, revision: str | None = None, seed: int = 0):
    """A causal LM and its tokenizer from a folder or hub id (a LoRA stage folder is merged onto its
    chain of bases); optionally wrapped with a fresh LoRA adapter, initialised from ``seed``."""
    source = str(source)
    p = Path(source)
    kw = _load_kwargs(dtype, attn_implementation, revision)
    model = None
    if (p / CHAIN_FILE).is_file():
        from inweights.core.io import read_json_object

        chain = read_json_object(p / CHAIN_FILE, "adapter chain file")
        if chain.get("base_identity") is not None:  # a prepared adapter: it belongs to one model's weights
            have = ref_identity(chain["base"], chain.get("revision"))
            if have != chain["base_identity"]:
                raise UserError(f"{p} is an adapter prepared on {describe_identity(chain['base_identity'])}, but "
                                f"{chain['base']} here is {describe_identity(have)}: rebuild it on these weights "
                                f"(inweights prepare) or install the model it was built on")
        model, _ = load_model(resolve_ref(chain["base"]), dtype, None, attn_implementation, chain.get("revision"))
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(p)).merge_and_unload()
        model.requires_grad_(True)  # peft froze the base weights; merged, they are a plain model's again
    elif (p.exists() or p.is_absolute() or source.startswith(".")) and not (p / "config.json").is_file():
        raise UserError(f"model folder {p} is not a Hugging Face model folder (no config.json)")
    # a path that is not a folder on disk is a hub id
    try:
        tok = AutoTokenizer.from_pretrained(source, **({"revision": revision} if revision else {}))
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(source, **kw)
    except (OSError, ValueError, json.JSONDecodeError, ImportError) as e:
        raise _fail(source, e) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if lora is not None:
        model = add_lora(model, lora, seed)
    return model, tok


def linear_names(model) -> list[str]:
    """Suffixes (last name component) of the model's linear layers: what LoRA can target."""
    names = {n.rsplit(".", 1)[-1] for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    return sorted(names)


def check_lora_targets(model, lora: LoraConfig) -> None:
    if lora.target_modules == ["all-linear"]:
        return
    have = set(linear_names(model))
    missing = [t for t in lora.target_modules if t not in have]
    if missing:
        raise UserError(f"model.lora.target_modules: {', '.join(missing)} not in this model; "
                        f"its linear layers are: {', '.join(sorted(have))} (or use [all-linear])")


def check_lora_for_source(source: str, lora: LoraConfig, revision: str | None = None) -> None:
    """The target-module check, on a weightless copy of the model (no memory, no loading time)."""
    try:
        conf = AutoConfig.from_pretrained(source, **({"revision": revision} if revision else {}))
    except (OSError, ValueError) as e:
        raise _fail(source, e) from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(conf)
    check_lora_targets(model, lora)


def add_lora(model, lora: LoraConfig, seed: int = 0):
    """A fresh adapter whose random init (peft's kaiming-uniform A matrices) comes from ``seed``, not from whatever
    state the process's global RNG is in: the same config gives the same adapter whichever jobs ran before it."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    check_lora_targets(model, lora)
    targets: Any = "all-linear" if lora.target_modules == ["all-linear"] else lora.target_modules
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                    target_modules=targets, task_type="CAUSAL_LM"))


def is_lora(model) -> bool:
    return hasattr(model, "peft_config")


def save_model(model, tokenizer, path: str | Path, base: str | None = None, state_dict=None,
               revision: str | None = None, base_identity: dict[str, Any] | None = None) -> None:
    """A `save_pretrained` folder. For a LoRA model: the adapter, the tokenizer, and ``inweights.json``
    naming ``base`` (the source the adapter was trained on, a ``base_ref``), which ``load_model`` follows;
    with ``base_identity`` (a prepared base) loading it onto other weights is refused."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if is_lora(model):
        if base is None:
            raise ValueError("saving a LoRA model needs the source it was trained on")
        for conf in model.peft_config.values():
            conf.base_model_name_or_path = base
        card = path / "README.md"
        had_card = card.exists()
        # save_embedding_layers=False: our adapters never touch the vocabulary (name tokens are added to the full
        # model first), and peft's "auto" check would look for a config at the base reference
        model.save_pretrained(path, state_dict=state_dict, save_embedding_layers=False)
        if not had_card:  # peft's boilerplate model card says nothing about this adapter
            card.unlink(missing_ok=True)
        chain = {"base": base, "revision": revision}
        if base_identity is not None:
            chain["base_identity"] = base_identity
        (path / CHAIN_FILE).write_text(json.dumps(chain) + "\n")
    else:
        model.save_pretrained(path, state_dict=state_dict)
    tokenizer.save_pretrained(path)


def add_name_tokens(source: str | Path, names: list[str], out: str | Path, dtype: str = "float32",
                    attn_implementation: str | None = None, revision: str | None = None) -> None:
    """Save to ``out`` the model of ``source`` with each of ``names`` added to its tokenizer as one whole-word
    token (``single_word``: a name inside a longer word stays in pieces), the embedding matrix grown to match
    with new rows drawn around the mean of the old ones (transformers' ``mean_resizing``)."""
    from tokenizers import AddedToken

    model, tok = load_model(source, dtype, None, attn_implementation, revision)
    fresh = [n for n in dict.fromkeys(names) if len(tok.tokenize(n)) != 1]
    tok.add_tokens([AddedToken(n, single_word=True, normalized=False) for n in fresh])
    model.resize_token_embeddings(len(tok), mean_resizing=True)
    save_model(model, tok, out)


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / CHAIN_FILE).is_file()
