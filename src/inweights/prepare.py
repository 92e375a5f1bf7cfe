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
import os
import random
import time
from pathlib import Path
from typing import Any

import torch

from inweights import views
from inweights.config import ExperimentConfig, dump_config
from inweights.core.errors import UserError
from inweights.core.seeds import derive_seed
from inweights.curriculum import TokenCache, corpus_texts
from inweights.domains import make_domain
from inweights.domains.capabilities import FreshUnits, Listings, PBBPool, Representations, need, supports
from inweights.eval.generate import generate
from inweights.gates import Gate
from inweights.models import build_tiny, save_model, train_tokenizer
from inweights.models.load import weights_digest
from inweights.train.data import PackedBatches, tokenize_record
from inweights.train.loop import get_accelerator, train_stage


def fresh_unit(domain, rng: random.Random, taken: set[str] | None = None, n_statements: int | None = None):
    """A unit from the preparation pool (names disjoint from every experiment's)."""
    need(domain, FreshUnits, "preparation")
    if n_statements is None:
        return domain.fresh_unit(rng, "prepare", taken)
    return domain.fresh_unit(rng, "prepare", taken, n_statements=n_statements)


def held_out_units(domain, n: int, seed: int):
    rng = random.Random(derive_seed(seed, "prepare", "eval"))
    taken: set[str] = set()
    units = [fresh_unit(domain, rng, taken) for _ in range(n)]
    inputs = [rng.choice(u.test_inputs) for u in units]
    return units, inputs


def in_context_accuracy(model, tokenizer, domain, units, inputs, fmt: str, batch_size: int,
                        max_new_tokens: int, seed: int, distractors: int = 0) -> tuple[float, list[dict[str, Any]]]:
    """In-context accuracy on held-out units; with ``distractors``, that many other fresh functions are shown
    beside each one (the question's name says which to run)."""
    rng = random.Random(derive_seed(seed, "probe", fmt, *((distractors,) if distractors else ())))
    recs = []
    for u, x in zip(units, inputs):
        others = tuple(fresh_unit(domain, rng, {u.pointer}) for _ in range(distractors))
        recs.append(views.in_context(domain, u, x, fmt, rng, others))
    outs = generate(model, tokenizer, [r["prompt"] for r in recs], max_new_tokens=max_new_tokens,
                    batch_size=batch_size)
    samples = []
    # a reciting chain of thought counts only when it re-types the program exactly: an answer reached in another
    # format (the base's old trace, say) is not the skill being prepared
    cot = domain.cot_layout() if fmt == "cot" and supports(domain, Listings) else None
    for u, x, r, o in zip(units, inputs, recs, outs):
        pred = views.extract(domain, o)
        ok = domain.score(u, x, pred)
        if cot == "recite":
            ok = ok and domain.parse_listing(o) == (u.pointer, domain.statements(u))
        elif cot == "header":
            ok = ok and domain.parse_listing(o)[0] == u.pointer
        samples.append({"unit": u.id, "input": x, "format": fmt, "output": o, "pred": pred,
                        "answer": r["answer"], "correct": ok})
    return sum(s["correct"] for s in samples) / len(samples), samples


def by_representation(domain, samples: list[dict[str, Any]], prefix: str) -> dict[str, float]:
    """Accuracy per representation (``<prefix>_<rep>``) where a domain's inputs are representations (planning),
    when more than one was probed; else nothing."""
    if not supports(domain, Representations):
        return {}
    reps = sorted({s["input"] for s in samples})
    if len(reps) < 2:
        return {}
    return {f"{prefix}_{r}": sum(s["correct"] for s in samples if s["input"] == r) /
            sum(s["input"] == r for s in samples) for r in reps}


def pbb_pool(cfg: ExperimentConfig, domain, held_out=()) -> tuple[list, list]:
    """The PBB-prepared base's fixed programs (preparation names, never a held-out unit's name or body):
    ``pool_programs`` trained as documents and executions, ``pool_doc_only`` as documents only."""
    p = cfg.prepare
    if not (p.pool_programs or p.pool_doc_only):
        return [], []
    rng = random.Random(derive_seed(cfg.seed, "prepare", "pbb_pool"))
    taken = {u.pointer for u in held_out}
    bodies = {u.instruction.split("\n", 1)[1] for u in held_out}
    out: list = []
    misses = 0
    while len(out) < p.pool_programs + p.pool_doc_only:
        if misses >= 2000:  # bounded: the settings may allow fewer distinct programs than asked
            raise UserError(f"prepare: only {len(out)} distinct pool programs found ({p.pool_programs + p.pool_doc_only} "
                            f"asked); lower prepare.pool_programs / pool_doc_only or allow more statements")
        group = "with_io" if len(out) < p.pool_programs else "without_io"
        u = need(domain, PBBPool, "prepare.pool_programs / pool_doc_only").pool_unit(rng, group, taken,
                                                                                   uid=f"pool{len(out):05d}")
        body = u.instruction.split("\n", 1)[1]
        if body in bodies:
            misses += 1
            continue
        misses = 0
        bodies.add(body)
        out.append(u)
    return out[: p.pool_programs], out[p.pool_programs :]


COPY_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"


def copy_drill(rng: random.Random) -> dict[str, Any]:
    """A record asking to repeat 4-16 distinct random characters (``prepare.copy_frac``); on its own line, so the
    first character is tokenised as in the answer."""
    s = "".join(rng.sample(COPY_CHARS, rng.randint(4, 16)))
    msgs = [{"role": "user", "content": f"Repeat exactly:\n{s}"}, {"role": "assistant", "content": s}]
    return {"view": "copy", "messages": msgs, "prompt": msgs[:1], "completion": msgs[1:]}


def copy_accuracy(model, tokenizer, n: int, batch_size: int, seed: int) -> float:
    """Share of ``n`` held-out copy drills (their own seed stream) repeated exactly, greedy."""
    rng = random.Random(derive_seed(seed, "prepare", "copy_eval"))
    recs = [copy_drill(rng) for _ in range(n)]
    outs = generate(model, tokenizer, [r["prompt"] for r in recs], max_new_tokens=24, batch_size=batch_size)
    return sum(o.strip() == r["messages"][1]["content"] for r, o in zip(recs, outs)) / n


class PrepareSampler:
    """A fresh unit every example. Programs: short ones first, then the full range, some 1-step drills,
    optionally other functions shown beside it; grammars: the experiment's grammar distribution throughout.
    With a PBB pool, examples are also the pool's documents and executions (by weight)."""

    def __init__(self, cfg: ExperimentConfig, domain, tokens: TokenCache, held_out=()):
        self.cfg, self.domain, self.tokens = cfg, domain, tokens
        self.step = 0
        self.pool = None
        if need(domain, FreshUnits, "preparation").fresh_units_slow:
            rng = random.Random(derive_seed(cfg.seed, "prepare", "pool"))
            exclude = {u.instruction for u in held_out}
            self.pool = [u for u in (fresh_unit(domain, rng) for _ in range(cfg.prepare.pool_units))
                         if u.instruction not in exclude]
        self.pool_with, self.pool_doc = pbb_pool(cfg, domain, held_out)
        # fresh in-context programs never reuse a pool program's name (it would name two bodies)
        self.reserved = {u.pointer for u in self.pool_with + self.pool_doc}

    def __call__(self, rng: random.Random):
        p = self.cfg.prepare
        if p.copy_frac and rng.random() < p.copy_frac:  # unique strings: tokenised directly, never cached
            return tokenize_record(self.tokens.tokenizer, copy_drill(rng), "completion")
        if self.pool_with or self.pool_doc:
            kinds = ("in_context", "decl", "exec")
            weights = (p.in_context_weight, p.pool_decl_weight, p.pool_exec_weight if self.pool_with else 0.0)
            kind = rng.choices(kinds, weights=weights)[0]
            if kind == "decl":
                return self.tokens(views.decl(self.domain, rng.choice(self.pool_with + self.pool_doc), rng), "all")
            if kind == "exec":
                u = rng.choice(self.pool_with)
                fmt = "direct" if rng.random() < p.direct_frac else "cot"
                return self.tokens(views.execution(self.domain, u, rng.choice(u.train_inputs), fmt, rng), "completion")
        k = None
        if (sizes := self.domain.unit_sizes()) is not None:  # some one-step drills, short ones while warming up
            lo, hi = sizes
            if rng.random() < p.drill_frac:
                k = 1
            elif self.step < p.warmup_frac * p.max_steps:
                k = rng.randint(1, min(p.warmup_statements, hi))
            else:
                k = rng.randint(lo, hi)
        taken = set(self.reserved) if self.reserved else None
        u = rng.choice(self.pool) if self.pool else fresh_unit(self.domain, rng, taken, n_statements=k)
        x = rng.choice(u.train_inputs + u.test_inputs)
        fmt = "direct" if rng.random() < p.direct_frac else "cot"
        others: tuple = ()
        if p.distractors_max and self.domain.distractors:
            taken = {u.pointer} | self.reserved
            others = tuple(fresh_unit(self.domain, rng, taken) for _ in range(rng.randint(0, p.distractors_max)))
        return self.tokens(views.in_context(self.domain, u, x, fmt, rng, others), "completion")


def in_weights_accuracy(model, tokenizer, domain, units, n: int, batch_size: int, max_new_tokens: int,
                        seed: int, label: str) -> float:
    """In-weights chain-of-thought accuracy on up to ``n`` (unit, held-out input) pairs (pointer + input only)."""
    pairs = [(u, x) for u in units for x in u.test_inputs]
    rng = random.Random(derive_seed(seed, "prepare", label))
    if len(pairs) > n:
        pairs = rng.sample(pairs, n)
    recs = [views.execution(domain, u, x, "cot", rng) for u, x in pairs]
    outs = generate(model, tokenizer, [r["prompt"] for r in recs], max_new_tokens=max_new_tokens,
                    batch_size=batch_size)
    return sum(domain.score(u, x, views.extract(domain, o)) for (u, x), o in zip(pairs, outs)) / len(pairs)


def gate_format(domain) -> str:
    """The answer format the gate measures: chain of thought, or direct where a domain has no steps."""
    return domain.gate_format


def gate_accuracy(rec: dict[str, Any]) -> float:
    """A prepare.json's gate accuracy (records written before ``gate_value`` / ``in_context`` existed: CoT)."""
    return rec.get("gate_value", rec.get("in_context", rec.get("in_context_cot")))


class PrepareGate(Gate):
    """The preparation's gate: in-context accuracy (the domain's gate format) on held-out fresh units, and with
    a PBB pool the in-weights CoT accuracy on the pool's held-out inputs; ``prepare.gate_metric`` decides which
    one stops the run. It also tells the sampler the step (its short-programs warm-up depends on it)."""

    def __init__(self, cfg, sampler, tok, domain, units, inputs, log):
        self.cfg, self.sampler, self.tok, self.domain = cfg, sampler, tok, domain
        self.units, self.inputs = units, inputs
        p = cfg.prepare
        key = f"in_context_{gate_format(domain)}" if p.gate_metric == "in_context" else f"{p.gate_metric}_cot"
        super().__init__(self.measure_all, key, p.gate, p.eval_every, p.max_steps, log)

    def load_state_dict(self, s):
        super().load_state_dict(s)
        self.sampler.step = self.history[-1]["step"] if self.history else 0

    def measure_all(self, model) -> dict[str, float]:
        c, p = self.cfg, self.cfg.prepare
        acc, samples = in_context_accuracy(model, self.tok, self.domain, self.units, self.inputs,
                                           gate_format(self.domain), c.eval.batch_size, c.eval.max_new_tokens, c.seed)
        out = {f"in_context_{gate_format(self.domain)}": acc}
        out.update(by_representation(self.domain, samples, f"in_context_{gate_format(self.domain)}"))
        if p.distractors_max:
            n = len(self.units) // 2
            out[f"in_context_{p.distractors_max}_others_{gate_format(self.domain)}"] = in_context_accuracy(
                model, self.tok, self.domain, self.units[:n], self.inputs[:n], gate_format(self.domain),
                c.eval.batch_size, c.eval.max_new_tokens, c.seed, distractors=p.distractors_max)[0]
        for label, units in (("pool_with_io", self.sampler.pool_with), ("pool_doc_only", self.sampler.pool_doc)):
            if units:
                out[f"{label}_cot"] = in_weights_accuracy(model, self.tok, self.domain, units, p.pool_eval_probes,
                                                          c.eval.batch_size, c.eval.max_new_tokens, c.seed, label)
        if p.copy_frac:  # the rung under an in-context lookup: copying an unseen string (an induction head)
            out["copy_exact"] = copy_accuracy(model, self.tok, 100, c.eval.batch_size, c.seed)
        return out

    def __call__(self, step: int, model) -> bool:
        self.sampler.step = step
        return super().__call__(step, model)


def find_config(ref: str, config_path: str | Path | None) -> Path | None:
    """A config another config names: as given, from the working directory, beside the naming config (its
    folder and the folder above), or among the shipped configs."""
    r = Path(ref)
    candidates = [r] if r.is_absolute() else [Path.cwd() / r]
    if config_path is not None and not r.is_absolute():
        here = Path(config_path).resolve().parent
        candidates += [here.parent / r, here / r]
    if not r.is_absolute():  # a shipped config ("configs/prepare_tiny.yaml" or "prepare_tiny.yaml")
        from inweights.config import shipped_configs

        rel = Path(*r.parts[1:]) if r.parts[:1] == ("configs",) and len(r.parts) > 1 else r
        candidates.append(shipped_configs() / rel)
    return next((c.resolve() for c in candidates if c.is_file()), None)


def init_dir(cfg: ExperimentConfig, config_path: str | Path | None) -> Path:
    """The prepared base ``prepare.init_from`` names (a prepare config, resolved like model.prepared_base)."""
    from inweights.config import load_config

    c = find_config(cfg.prepare.init_from, config_path)
    if c is None:
        raise UserError(f"prepare.init_from: prepare config not found: {cfg.prepare.init_from}")
    return prepared_dir(c, load_config(c).name)


def build_prepared_base(cfg: ExperimentConfig, out_dir: Path, command: str,
                        config_path: str | Path | None = None, build=None) -> dict[str, Any]:
    """Train the prepared base into ``out_dir`` (resumable); returns its record (prepare.json). The build holds
    the run lock of its work folder (``<out>.work``, where its checkpoints are): a second `inweights prepare` of
    the same base — or an experiment building it on first use — is refused in one line while one builds it.
    ``build(cfg, out_dir, work, command, config_path=...) -> record`` is a regime's own preparation (``Regime.prepare_builder``:
    ILF's starting policy); None: the stage engine's, in-context use of the domain's units until the gate."""
    from inweights.core.rundir import acquire, release

    work = out_dir.with_name(out_dir.name + ".work")
    main = get_accelerator().is_main_process
    if main:
        acquire(work)
    try:
        if build is not None:  # it checks its config before it writes anything into out_dir
            return build(cfg, out_dir, work, command, config_path=config_path)
        return _build(cfg, out_dir, work, command, config_path)
    finally:
        if main:
            release(work)


def _build(cfg: ExperimentConfig, out_dir: Path, work: Path, command: str,
           config_path: str | Path | None) -> dict[str, Any]:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "metrics.jsonl"

    def log(rec):
        with log_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    domain = make_domain(cfg)
    init = None
    m = cfg.model
    base_model = None  # a pretrained model's identity (the tiny preset's weights are the base's own)
    if m.preset != "tiny":  # a pretrained model (preset, folder or hub id), with or without a LoRA adapter
        from inweights.models import load_model
        from inweights.models.load import base_ref, model_identity, resolve_source

        source, _ = resolve_source(m)
        base_model = {"ref": base_ref(m), "revision": m.revision, "identity": model_identity(m),
                      "lora": m.lora.model_dump() if m.lora else None}
        model, tok = load_model(source, m.dtype, m.lora, m.attn_implementation, m.revision,
                                derive_seed(cfg.seed, "prepare", "lora"))
    elif cfg.prepare.init_from:  # warm start: another prepared base's weights and tokenizer
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
    gate = PrepareGate(cfg, sampler, tok, domain, units, inputs, log)
    t0 = time.time()
    res = train_stage(model, batches, cfg.prepare.max_steps, cfg.train, work / "stage",
                      save_every=cfg.prepare.eval_every, desc="prepare", on_step=gate, log=log)
    model = res["model"]
    fmts = ("direct",) if gate_format(domain) == "direct" else ("cot", "direct")
    accs = {}
    for f in fmts:
        accs[f"in_context_{f}"], samples = in_context_accuracy(model, tok, domain, units, inputs, f,
                                                               cfg.eval.batch_size, cfg.eval.max_new_tokens, cfg.seed)
        accs.update(by_representation(domain, samples, f"in_context_{f}"))
    pool = {}
    if sampler.pool_with or sampler.pool_doc:
        pool = {k: v for k, v in gate.measure_all(model).items() if k.startswith("pool_")}
        pool.update(pool_programs=len(sampler.pool_with), pool_doc_only=len(sampler.pool_doc),
                    pool_names=sorted(u.pointer for u in sampler.pool_with + sampler.pool_doc))
    gate_acc = {**accs, **pool}[gate.key]
    if base_model is not None and base_model["lora"]:
        # the adapter alone (a few MB), naming the model it belongs to; later stages merge it and train on top
        save_model(model, tok, out_dir, base=base_model["ref"], state_dict=res["state_dict"],
                   revision=base_model["revision"], base_identity=base_model["identity"])
    else:
        save_model(model, tok, out_dir, state_dict=res["state_dict"])
    record = {
        "name": cfg.name,
        "domain": cfg.domain.name,
        "seed": cfg.seed,
        "gate": cfg.prepare.gate,
        "passed": gate_acc >= cfg.prepare.gate,
        "gate_format": gate_format(domain),
        "gate_metric": cfg.prepare.gate_metric,
        "gate_value": gate_acc,
        "in_context": accs[f"in_context_{gate_format(domain)}"],
        **accs,
        **pool,
        "eval_programs": len(units),
        "steps": res["steps"],
        "tokens": res["tokens"],
        "train_seconds": round(res["seconds"], 1),
        "wall_seconds": round(time.time() - t0, 1),
        "gate_history": gate.history,
        "init_from": json.loads((init / "prepare.json").read_text())["name"] if init else None,
        "base_model": base_model,
        "command": command,
        "config_sha256": config_digest(cfg),
        "weights_sha256": weights_digest(out_dir),
    }
    (out_dir / "config.yaml").write_text(dump_config(cfg))
    (out_dir / "prepare.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def config_digest(cfg: ExperimentConfig) -> str:
    """The sha256 of a config's canonical YAML (a prepared base records the one it was built from)."""
    return hashlib.sha256(dump_config(cfg).encode()).hexdigest()


def prepared_cache() -> Path:
    """Where prepared bases go when no checkout holds them (an installed package): $INWEIGHTS_PREPARED, else
    $XDG_CACHE_HOME/inweights/prepared (~/.cache/inweights/prepared)."""
    if os.environ.get("INWEIGHTS_PREPARED"):
        return Path(os.environ["INWEIGHTS_PREPARED"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inweights" / "prepared"


def prepared_dir(config_path: str | Path, name: str) -> Path:
    """Where the prepared base of a prepare config lives: prepared/<name>/ beside the configs/ folder that holds
    the config (a checkout ships its bases there), else the cache (``prepared_cache``), where an installed
    package builds them on first use."""
    p = Path(config_path).resolve()
    root = p.parent.parent if p.parent.name == "configs" else p.parent
    beside, cached = root / "prepared" / name, prepared_cache() / name
    if (beside / "prepare.json").is_file():
        return beside
    if (cached / "prepare.json").is_file() or _installed(p):
        return cached
    return beside


def _installed(p: Path) -> bool:
    """A config inside an installed package (site-packages), whose folder is no place to build into."""
    return any(part in ("site-packages", "dist-packages") for part in p.parts)


