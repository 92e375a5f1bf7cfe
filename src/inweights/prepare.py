"""The prepared base: a tiny model trained on in-context use of instructions until it passes a gate.

A pretrained LLM already executes code shown in its prompt (and generates from rules it is shown); a
random-init tiny model does not, and learning it takes ~30 minutes on a 2-core CPU (../shared/MEASURED.md).
So the tiny preset is first trained on the domain's ``in_context`` view of fresh units (programs, or
grammars) from a name pool disjoint from every experiment's, until chain-of-thought accuracy on held-out
units passes ``prepare.gate``. The result is built once, kept under ``prepared/<name>/`` with a
``prepare.json`` that records the domain, the gate, the accuracy reached, the seed, and the command that
rebuilds it; experiments of the same domain start from it (``model.prepared_base``).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from inweights import views
from inweights.config import ExperimentConfig, dump_config
from inweights.curriculum import TokenCache, corpus_texts
from inweights.domains import DOMAINS
from inweights.domains.programs import derive_seed
from inweights.errors import UserError
from inweights.eval.generate import generate
from inweights.models import build_tiny, save_model, train_tokenizer
from inweights.train.data import PackedBatches
from inweights.train.loop import get_accelerator, train_stage


def fresh_unit(domain, rng: random.Random, taken: set[str] | None = None, n_statements: int | None = None):
    """A unit from the preparation pool (names disjoint from every experiment's)."""
    if domain.name == "programs":
        return domain.sample_unit(rng, "prepare", "prepare", taken, n_statements=n_statements)
    return domain.fresh_unit(rng, "prepare", taken)


def held_out_units(domain, n: int, seed: int):
    rng = random.Random(derive_seed(seed, "prepare", "eval"))
    taken: set[str] = set()
    units = [fresh_unit(domain, rng, taken) for _ in range(n)]
    inputs = [rng.choice(u.test_inputs) for u in units]
    return units, inputs


def in_context_accuracy(model, tokenizer, domain, units, inputs, fmt: str, batch_size: int,
                        max_new_tokens: int, seed: int) -> tuple[float, list[dict[str, Any]]]:
    rng = random.Random(derive_seed(seed, "probe", fmt))
    recs = [views.in_context(domain, u, x, fmt, rng) for u, x in zip(units, inputs)]
    outs = generate(model, tokenizer, [r["prompt"] for r in recs], max_new_tokens=max_new_tokens,
                    batch_size=batch_size)
    samples = []
    for u, x, r, o in zip(units, inputs, recs, outs):
        pred = views.extract(domain, o)
        samples.append({"unit": u.id, "input": x, "format": fmt, "output": o, "pred": pred,
                        "answer": r["answer"], "correct": domain.score(u, x, pred)})
    return sum(s["correct"] for s in samples) / len(samples), samples


class PrepareSampler:
    """A fresh unit every example. Programs: short ones first, then the full range, some 1-step drills;
    grammars: the experiment's grammar distribution throughout."""

    def __init__(self, cfg: ExperimentConfig, domain, tokens: TokenCache, held_out=()):
        self.cfg, self.domain, self.tokens = cfg, domain, tokens
        self.step = 0
        self.pool = None
        if domain.name == "grammars":
            rng = random.Random(derive_seed(cfg.seed, "prepare", "pool"))
            exclude = {u.instruction for u in held_out}
            self.pool = [u for u in (fresh_unit(domain, rng) for _ in range(cfg.prepare.pool_units))
                         if u.instruction not in exclude]

    def __call__(self, rng: random.Random):
        p, pc = self.cfg.prepare, self.cfg.domain.programs
        k = None
        if self.domain.name == "programs":
            if rng.random() < p.drill_frac:
                k = 1
            elif self.step < p.warmup_frac * p.max_steps:
                k = rng.randint(1, min(p.warmup_statements, pc.max_statements))
            else:
                k = rng.randint(pc.min_statements, pc.max_statements)
        u = rng.choice(self.pool) if self.pool else fresh_unit(self.domain, rng, n_statements=k)
        x = rng.choice(u.train_inputs + u.test_inputs)
        fmt = "direct" if rng.random() < p.direct_frac else "cot"
        return self.tokens(views.in_context(self.domain, u, x, fmt, rng), "completion")


def gate_format(domain) -> str:
    """The answer format the gate measures: chain of thought, or direct where a domain has no steps."""
    return getattr(domain, "gate_format", "cot")


def gate_accuracy(rec: dict[str, Any]) -> float:
    """A prepare.json's gate accuracy (records written before ``in_context`` existed: CoT)."""
    return rec.get("in_context", rec.get("in_context_cot"))


class Gate:
    """Evaluates in-context accuracy (the domain's gate format) every ``eval_every`` steps; stops once it passes."""

    def __init__(self, cfg, sampler, tok, domain, units, inputs, log):
        self.cfg, self.sampler, self.tok, self.domain = cfg, sampler, tok, domain
        self.units, self.inputs, self.log = units, inputs, log
        self.best = 0.0
        self.history: list[dict[str, Any]] = []

    def state_dict(self):
        return {"best": self.best, "history": self.history}

    def load_state_dict(self, s):
        self.best, self.history = s["best"], s["history"]
        self.sampler.step = self.history[-1]["step"] if self.history else 0

    def __call__(self, step: int, model) -> bool:
        self.sampler.step = step
        p = self.cfg.prepare
        if step % p.eval_every and step != p.max_steps:
            return False
        acc, _ = in_context_accuracy(model, self.tok, self.domain, self.units, self.inputs, gate_format(self.domain),
                                     self.cfg.eval.batch_size, self.cfg.eval.max_new_tokens, self.cfg.seed)
        model.train()
        self.best = max(self.best, acc)
        rec = {"event": "gate_eval", "step": step, f"in_context_{gate_format(self.domain)}": acc}
        self.history.append(rec)
        self.log(rec)
        return acc >= p.gate


def find_config(ref: str, config_path: str | Path | None) -> Path | None:
    """A config another config names: as given, from the working directory, or beside the naming config
    (its folder and the folder above)."""
    r = Path(ref)
    candidates = [r] if r.is_absolute() else [Path.cwd() / r]
    if config_path is not None and not r.is_absolute():
        here = Path(config_path).resolve().parent
        candidates += [here.parent / r, here / r]
    return next((c for c in candidates if c.is_file()), None)


def init_dir(cfg: ExperimentConfig, config_path: str | Path | None) -> Path:
    """The prepared base ``prepare.init_from`` names (a prepare config, resolved like model.prepared_base)."""
    from inweights.config import load_config

    c = find_config(cfg.prepare.init_from, config_path)
    if c is None:
        raise UserError(f"prepare.init_from: prepare config not found: {cfg.prepare.init_from}")
    return prepared_dir(c, load_config(c).name)


def build_prepared_base(cfg: ExperimentConfig, out_dir: Path, command: str,
                        config_path: str | Path | None = None) -> dict[str, Any]:
    """Train the prepared base into ``out_dir`` (resumable); returns its record (prepare.json)."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir.with_name(out_dir.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "metrics.jsonl"

    def log(rec):
        with log_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    domain = DOMAINS[cfg.domain.name](getattr(cfg.domain, cfg.domain.name), cfg.seed)
    init = None
    if cfg.prepare.init_from:  # warm start: another prepared base's weights and tokenizer
        from inweights.models import load_model

        init = init_dir(cfg, config_path)
        if not (init / "prepare.json").is_file():
            raise UserError(f"prepare.init_from: {init} is not built (run `inweights prepare` on its config first)")
        model, tok = load_model(init)
    else:
        tok_dir = work / "tokenizer"
        if (tok_dir / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tok_dir)
        else:
            rng = random.Random(derive_seed(cfg.seed, "prepare", "corpus"))
            corpus_units = [fresh_unit(domain, rng) for _ in range(cfg.prepare.corpus_programs)]
            tok = train_tokenizer(corpus_texts(domain, corpus_units, cfg.seed), cfg.model.tiny.vocab_size)
            tok.save_pretrained(tok_dir)
        model = build_tiny(cfg.model.tiny, tok, cfg.seed)
    tokens = TokenCache(tok)
    units, inputs = held_out_units(domain, cfg.prepare.eval_programs, cfg.seed)
    sampler = PrepareSampler(cfg, domain, tokens, units)
    acc = get_accelerator()
    batches = PackedBatches(sampler, derive_seed(cfg.seed, "prepare", "stream", acc.process_index),
                            cfg.train.batch_size // acc.num_processes, cfg.train.max_len, tok.pad_token_id)
    gate = Gate(cfg, sampler, tok, domain, units, inputs, log)
    t0 = time.time()
    res = train_stage(model, batches, cfg.prepare.max_steps, cfg.train, work / "stage",
                      save_every=cfg.prepare.eval_every, desc="prepare", on_step=gate, log=log)
    model = res["model"]
    fmts = ("direct",) if gate_format(domain) == "direct" else ("cot", "direct")
    accs = {f"in_context_{f}": in_context_accuracy(model, tok, domain, units, inputs, f, cfg.eval.batch_size,
                                                    cfg.eval.max_new_tokens, cfg.seed)[0] for f in fmts}
    gate_acc = accs[f"in_context_{gate_format(domain)}"]
    save_model(model, tok, out_dir)
    record = {
        "name": cfg.name,
        "domain": cfg.domain.name,
        "seed": cfg.seed,
        "gate": cfg.prepare.gate,
        "passed": gate_acc >= cfg.prepare.gate,
        "gate_format": gate_format(domain),
        "in_context": gate_acc,
        **accs,
        "eval_programs": len(units),
        "steps": res["steps"],
        "tokens": res["tokens"],
        "train_seconds": round(res["seconds"], 1),
        "wall_seconds": round(time.time() - t0, 1),
        "gate_history": gate.history,
        "init_from": json.loads((init / "prepare.json").read_text())["name"] if init else None,
        "command": command,
        "config_sha256": hashlib.sha256(dump_config(cfg).encode()).hexdigest(),
        "weights_sha256": sha256_file(out_dir / "model.safetensors"),
    }
    (out_dir / "config.yaml").write_text(dump_config(cfg))
    (out_dir / "prepare.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def prepared_dir(config_path: str | Path, name: str) -> Path:
    """prepared/<name>/ beside the configs/ folder that holds the prepare config."""
    p = Path(config_path).resolve()
    root = p.parent.parent if p.parent.name == "configs" else p.parent
    return root / "prepared" / name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
