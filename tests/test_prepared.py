"""The prepared base kept in the repository: its hash, its config, and its gate, re-measured."""

import json

import pytest

from inweights.config import dump_config, load_config
from inweights.domains.programs import ProgramsDomain
from inweights.models import load_model
from inweights.prepare import held_out_programs, in_context_accuracy, prepared_dir, sha256_file


@pytest.fixture(scope="module")
def prepared(root):
    cfg_path = root / "configs" / "prepare_tiny.yaml"
    cfg = load_config(cfg_path)
    d = prepared_dir(cfg_path, cfg.name)
    return cfg, d, json.loads((d / "prepare.json").read_text())


def test_prepared_base_is_the_one_recorded(prepared):
    cfg, d, rec = prepared
    assert sha256_file(d / "model.safetensors") == rec["weights_sha256"]
    # the shipped config is the one it was built from, so the recorded command rebuilds it
    assert (d / "config.yaml").read_text() == dump_config(cfg)
    assert rec["seed"] == cfg.seed and rec["command"].startswith("inweights prepare")
    assert rec["passed"] and rec["in_context_cot"] >= rec["gate"] == cfg.prepare.gate


def test_prepared_base_passes_its_gate_when_re_measured(prepared):
    cfg, d, rec = prepared
    model, tok = load_model(d)
    domain = ProgramsDomain(cfg.domain.programs, cfg.seed)
    units, inputs = held_out_programs(domain, cfg.prepare.eval_programs, cfg.seed)
    acc, _ = in_context_accuracy(model, tok, domain, units, inputs, "cot", cfg.eval.batch_size,
                                       cfg.eval.max_new_tokens, cfg.seed)
    # same programs and greedy decoding: only float differences between CPUs can move it
    assert abs(acc - rec["in_context_cot"]) <= 0.03
    assert acc >= cfg.prepare.gate - 0.03
