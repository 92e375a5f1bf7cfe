"""The refiner's prepared base (issue 43): a model that has learnt to *use* feedback before an ILF run trains it.

``inweights prepare`` with ``ilf.prepare_target: refiner`` warm-starts from the starting policy (``prepare.init_from``)
and trains on refinement triples built from the preparation's functions (``spec_is_prepare``: no experiment task
computes one) under fresh names: the gold program with one bug (``domains.coding_bugs``), judged in the sandbox,
kept when it fails; the feedback on it from the configured provider (``tests``: the failing test, what the
program returned, what it should; ``openai``: a model's words) in the one ``FEEDBACK`` section every refiner reads;
the fix is the gold program. With the ``edge`` family most of the fixes cannot be derived without the feedback
(the hidden answer is said nowhere else). A share of the examples (``ilf.refiner_no_feedback_share``) leaves the
feedback out, so the no-feedback refiner of an experiment starts from the same base; an ``ilf.replay`` share is
the starting policy's own task, so writing programs is not unlearnt.

Its gate: on ``prepare.eval_programs`` held-out triples (other fresh names), the greedy refinement's pass rate with
the real feedback; the record also gives it with another triple's feedback (shuffled) and without, by bug kind.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from inweights.config import ExperimentConfig, dump_config
from inweights.core.errors import UserError
from inweights.core.seeds import derive_seed
from inweights.domains.coding import CodingTask, fresh_generated_task, generated_tasks, program_of
from inweights.domains.coding_bugs import buggy
from inweights.regimes.ilf.tasks import _request, policy_record, refine_prompt, refine_record


def resolve_refiner_base(cfg: ExperimentConfig, config_path, build=None) -> tuple[Path, dict[str, Any] | None]:
    """(folder, record) of ``ilf.refiner_base`` — built once when missing if ``build`` is given, else only located
    and checked (record None); an error names ``ilf.refiner_base``, and a starting policy's config is refused."""
    from inweights.config import load_config
    from inweights.runs import ensure_prepared, resolve_prepared

    probe = cfg.model_copy(deep=True)
    probe.model.prepared_base = cfg.ilf.refiner_base
    try:
        pconf, folder = resolve_prepared(probe, config_path)
        if load_config(pconf).ilf.prepare_target != "refiner":
            raise UserError(f"model.prepared_base: {pconf} prepares a starting policy, not a refiner base (its config "
                            "needs ilf.prepare_target: refiner)")
        return ensure_prepared(probe, config_path, build) if build is not None else (folder, None)
    except UserError as e:
        raise UserError(str(e).replace("model.prepared_base", "ilf.refiner_base")) from None


def refinement_triples(run, cfg: ExperimentConfig, n: int, stream: str) -> list[dict[str, Any]]:
    """``n`` (task, wrong program, verdict, feedback, bug kind) triples on fresh-name preparation functions, every
    wrong program judged failing in the sandbox; ``stream`` names the draw (training and held-out differ)."""
    from inweights.feedback import make_provider

    c = cfg.domain.section()
    specs = [t.meta["spec"] for t in generated_tasks(c.n_prepare, cfg.seed, "prepare", c.n_tests)]
    rng = random.Random(derive_seed(cfg.seed, "refiner_base", stream))
    out: list[dict[str, Any]] = []
    while len(out) < n:
        cand = []
        while len(cand) < 2 * (n - len(out)):
            t = fresh_generated_task(rng, specs, "prepare", c.n_tests, c.family)
            if (b := buggy(t, rng, tuple(cfg.ilf.refiner_bug_kinds))) is not None:
                cand.append((t, *b))
        verdicts = run.judge([t for t, _, _ in cand], [[code] for _, _, code in cand])
        failing = [{"task": t, "kind": kind, "wrong": code, "verdict": v[0]}
                   for (t, kind, code), v in zip(cand, verdicts) if v[0]["status"] != "passed"]
        if not failing:  # bounded: every bug passing every test means the tests cannot tell anything apart
            raise UserError(f"refiner base: none of {len(cand)} one-bug programs failed its tests; raise "
                            "domain.coding.n_tests")
        out += failing[:n - len(out)]
    texts = make_provider(cfg.ilf.feedback)([_request(x["task"], x["wrong"], x["verdict"]) for x in out])
    for x, f in zip(out, texts):
        x["feedback"] = f
    return [x for x in out if x["feedback"] is not None]


def refinement_rates(run, model_dir, triples: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Greedy refinement pass rates on ``triples`` with their own feedback (real), another triple's (shuffled,
    drawn seeded from the other tasks') and none, overall and by bug kind."""
    from inweights.eval.generate import generate

    rng = random.Random(derive_seed(seed, "refiner_base", "shuffle"))
    shuffled = [rng.choice([y["feedback"] for y in triples if y["task"].id != x["task"].id]) for x in triples]
    conds = {"real": [x["feedback"] for x in triples], "shuffled": shuffled, "none": [None] * len(triples)}
    model, tok = run.load(model_dir)
    tasks: list[CodingTask] = [x["task"] for x in triples]
    out: dict[str, Any] = {"programs": len(triples), "by_kind": {}}
    for cond, fbs in conds.items():
        chat = [[{"role": "user", "content": refine_prompt(x["task"], x["wrong"], f)}] for x, f in zip(triples, fbs)]
        texts = generate(model, tok, chat, max_new_tokens=run.ilf.max_new_tokens, batch_size=run.cfg.eval.batch_size)
        ok = [v[0]["status"] == "passed" for v in run.judge(tasks, [[program_of(t, s)] for t, s in zip(tasks, texts)])]
        out[cond] = sum(ok) / len(ok)
        for kind in sorted({x["kind"] for x in triples}):
            hits = [o for o, x in zip(ok, triples) if x["kind"] == kind]
            out["by_kind"].setdefault(kind, {"programs": len(hits)})[cond] = sum(hits) / len(hits)
    return out


def build_refiner_base(cfg: ExperimentConfig, out_dir: Path, work: Path, command: str,
                       config_path: str | Path | None = None) -> dict[str, Any]:
    """``inweights prepare`` of a config with ``ilf.prepare_target: refiner`` (module docstring)."""
    from inweights.core.io import sha256_file
    from inweights.models import save_model
    from inweights.prepare import config_digest, init_dir
    from inweights.regimes.ilf.policy import PolicyRun

    c = cfg.domain.section()
    if cfg.model.preset != "tiny" or c.source != "generated" or not c.n_prepare:
        raise UserError("a refiner base trains on generated preparation functions: model.preset tiny, "
                        "domain.coding.source generated, domain.coding.n_prepare > 0")
    if not cfg.prepare.init_from:
        raise UserError("a refiner base starts from the starting policy: set prepare.init_from (e.g. "
                        "configs/prepare_coding.yaml)")
    if cfg.prepare.eval_programs < 2:
        raise UserError("a refiner base's gate compares real with shuffled feedback: prepare.eval_programs >= 2")
    if cfg.ilf.feedback.provider == "file":
        raise UserError("a refiner base needs feedback on thousands of generated programs: ilf.feedback.provider "
                        "tests or openai (people's feedback reaches the experiment's refiners instead)")
    init = init_dir(cfg, config_path)
    if not (init / "prepare.json").is_file():
        raise UserError(f"prepare.init_from: {init} is not built (run `inweights prepare` on its config first)")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    run = PolicyRun(cfg, work, None, resume=True)
    pool = refinement_triples(run, cfg, cfg.prepare.pool_units, "train")
    held = refinement_triples(run, cfg, cfg.prepare.eval_programs, "eval")
    share = cfg.ilf.refiner_no_feedback_share
    specs = [t.meta["spec"] for t in generated_tasks(c.n_prepare, cfg.seed, "prepare", c.n_tests)]

    def draw(rng: random.Random) -> dict[str, Any]:
        if rng.random() < cfg.ilf.replay:  # the starting policy's own task, fresh names as it learnt them
            t = fresh_generated_task(rng, specs, "prepare", c.n_tests, c.prepare_family)
            return policy_record(t, t.gold)
        x = rng.choice(pool)
        return refine_record(x["task"], x["wrong"], None if rng.random() < share else x["feedback"], x["task"].gold)

    model_dir = run.train("refiner_base", init, [], cfg.prepare.max_steps, None, draw=draw)
    rates = refinement_rates(run, model_dir, held, cfg.seed)
    model, tok = run.load(model_dir)
    save_model(model, tok, out_dir)
    done = run.steps.read("model_refiner_base") or {}
    kinds = sorted({x["kind"] for x in pool})
    record = {
        "name": cfg.name, "domain": "coding", "seed": cfg.seed, "gate": cfg.prepare.gate,
        "passed": rates["real"] >= cfg.prepare.gate, "gate_format": "refinement pass@1 (greedy), real feedback",
        "gate_metric": "refine_real", "gate_value": rates["real"], "in_context": rates["real"],
        "with_feedback": rates["real"], "shuffled_feedback": rates["shuffled"], "without_feedback": rates["none"],
        "by_kind": rates["by_kind"], "eval_programs": rates["programs"], "pool_triples": len(pool),
        "pool_kinds": {k: sum(x["kind"] == k for x in pool) for k in kinds}, "family": c.family,
        "no_feedback_share": share, "feedback_provider": cfg.ilf.feedback.provider,
        "steps": done.get("steps"), "tokens": done.get("tokens"), "train_seconds": round(done.get("seconds", 0.0), 1),
        "wall_seconds": round(time.time() - t0, 1), "gate_history": [],
        "init_from": json.loads((init / "prepare.json").read_text())["name"], "command": command,
        "config_sha256": config_digest(cfg), "weights_sha256": sha256_file(out_dir / "model.safetensors"),
    }
    (out_dir / "config.yaml").write_text(dump_config(cfg))
    (out_dir / "prepare.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
