"""A new domain is one class (issue 19): this file defines one — its config section, units, answers by execution,
scoring — registers it, and runs it end to end through the command line with the stage engine (training, probes,
report, export) and with a toy regime, without any edit to the package. Also: no module outside
``inweights.domains`` branches on a domain's name, nor one outside ``inweights.regimes`` on a regime's."""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import Field

from inweights.cli import main
from inweights.core.schema import Strict
from inweights.domains import DOMAINS, Domain, Unit, register_domain

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "inweights"


class ShiftConfig(Strict):
    n_units: int = Field(8, gt=1)
    modulus: int = Field(10, gt=2)


class ShiftDomain(Domain):
    """Each unit is a named function ``name(x) = (x + k) % m``; its document is that line of code."""

    name = "toy_shift"
    config_class = ShiftConfig
    unit_noun = "shifts"
    decl_templates: ClassVar[list[str]] = ["The function {name}:", "Here is {name}."]
    query_templates: ClassVar[list[str]] = ["What is {name}({input})?", "Compute {name}({input})."]

    def build(self) -> list[Unit]:
        rng = random.Random(self.seed)
        units, m = [], self.cfg.modulus
        for i in range(self.cfg.n_units):
            k = rng.randint(1, m - 1)
            xs = list(range(m))
            rng.shuffle(xs)
            units.append(Unit(id=f"s{i}", family="shift", pointer=f"sh{i}", group="with_io" if i % 2 else "without_io",
                              instruction=f"def sh{i}(x): return (x + {k}) % {m}", train_inputs=tuple(xs[:4]),
                              test_inputs=tuple(xs[4:7]), meta={"k": k}))
        return units

    def run(self, unit: Unit, x: int) -> int:
        return (x + unit.meta["k"]) % self.cfg.modulus

    def instruction_text(self, unit: Unit) -> str:
        return unit.instruction

    def format_input(self, unit: Unit, x: int) -> str:
        return str(x)

    def answer_text(self, unit: Unit, x: int) -> str:
        return str(self.run(unit, x))

    def steps(self, unit: Unit, x: int) -> list[str]:
        return [f"x = {x}", f"x + {unit.meta['k']} = {x + unit.meta['k']}"]

    def score(self, unit: Unit, x: int, prediction: str | None) -> bool:
        return prediction == self.answer_text(unit, x)

    def chance(self, unit: Unit) -> float:
        return 1 / self.cfg.modulus


@pytest.fixture
def toy_domain():
    register_domain(ShiftDomain)
    yield ShiftDomain
    DOMAINS.pop("toy_shift", None)


CONFIG = """
name: toy
seed: 3
domain:
  name: toy_shift
  toy_shift: {n_units: 6, modulus: 7}
model:
  preset: tiny
  tiny: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, vocab_size: 320}
train: {batch_size: 4, max_len: 128, lr: 3.0e-3, log_every: 2, threads: 1}
pbb: {stage1_steps: 3, stage2_steps: 2}
recipes: [proactive, stage2_only]
eval: {batch_size: 32, max_new_tokens: 16, eval_base: false}
"""


@pytest.mark.slow
def test_a_domain_from_a_test_file_runs_end_to_end(toy_domain, tmp_path, capsys):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(CONFIG)
    assert main(["validate", str(cfg)]) == 0
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"without_io": 3, "with_io": 3}
    cells = summary["rows"]["proactive"]["cells"]
    assert cells["without_io/in_weights/cot"]["n"] > 0 and abs(cells["without_io/in_weights/cot"]["chance"] - 1 / 7) < 1e-9
    report = (out / "report.md").read_text()
    assert "3 with_io and 3 without_io shifts" in report  # the domain's own noun
    # its section is checked by its own class, with the key path in the message
    cfg.write_text(CONFIG.replace("modulus: 7", "modulus: 1"))
    assert main(["validate", str(cfg)]) == 2
    assert "config error at domain.toy_shift.modulus" in capsys.readouterr().err
    # `inweights data` exports its views in the PBB layout
    cfg.write_text(CONFIG)
    assert main(["data", "toy_shift", "--config", str(cfg), "--out", str(tmp_path / "export")]) == 0
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["domain"] == "toy_shift" and manifest["counts"] == {"with_io": 3, "without_io": 3}


def test_a_toy_regime_runs_on_a_toy_domain(toy_domain, tmp_path, capsys):
    from test_regimes import ToyRegime

    from inweights.regimes.registry import REGIMES, register

    register(ToyRegime())
    try:
        cfg = tmp_path / "toy.yaml"
        cfg.write_text(CONFIG.replace("recipes: [proactive, stage2_only]", "recipes: [count]") + "regime: toy_count\n")
        assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 0
        assert json.loads((tmp_path / "run" / "summary.json").read_text())["counts"] == {"with_io": 3, "without_io": 3}
    finally:
        REGIMES.pop("toy_count", None)


def test_an_unknown_domain_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)  # toy_shift is not registered here: its section is an unknown key
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("inweights: error: config error at domain.toy_shift: unknown key "
                   "(domains: coding, documents, grammars, mbpp, planning, programs, rules)")
    cfg.write_text(CONFIG.replace("  toy_shift: {n_units: 6, modulus: 7}\n", ""))
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown domain 'toy_shift' (known: coding, documents, grammars, mbpp, planning, programs, rules)" in err


def _string_compares(text: str, names: set[str], where: str) -> list[str]:
    """``x == "name"``, ``x != "name"``, ``x in ("name", ...)`` and ``{"name": ...}[x]``-style branches on one of
    ``names`` in a module (a name used as a label — a seed label, a recipe, a file name — is not a branch)."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                 for op in node.ops):
            consts = [c for c in [node.left, *node.comparators] for c in ([c] if not isinstance(c, (ast.Tuple, ast.List, ast.Set)) else c.elts)]
            hit = [c.value for c in consts if isinstance(c, ast.Constant) and c.value in names]
            # ``x == "name"`` where x reads a domain's or regime's name
            src = ast.unparse(node)
            if hit and ("name" in src or "regime" in src or "domain" in src):
                found.append(f"{where}:{node.lineno}: {src}")
    return found


def test_no_module_outside_domains_branches_on_a_domain_name():
    names = set(DOMAINS)
    hits = [h for p in SRC.rglob("*.py") if "domains" not in p.relative_to(SRC).parts
            for h in _string_compares(p.read_text(), names, str(p.relative_to(SRC)))]
    assert not hits, hits


def test_no_module_outside_regimes_branches_on_a_regime_name():
    from inweights.regimes.registry import REGIMES

    hits = [h for p in SRC.rglob("*.py") if "regimes" not in p.relative_to(SRC).parts
            for h in _string_compares(p.read_text(), set(REGIMES), str(p.relative_to(SRC)))]
    assert not hits, hits


def test_the_branch_finder_can_fail():
    for text in ('def f(cfg):\n    return cfg.domain.name == "grammars"\n',
                 'def f(cfg):\n    if regime_name(cfg) in ("ilf", "x"):\n        pass\n'):
        assert _string_compares(text, set(DOMAINS) | {"ilf"}, "probe")
    assert not _string_compares('seed = derive_seed(0, "programs", "build")\n', set(DOMAINS), "probe")


# ---------------------------------------------------------------------------- capabilities (issue 39)
def test_capabilities_are_declared_and_discoverable():
    from inweights.domains.capabilities import CAPABILITIES, capabilities

    assert capabilities(DOMAINS["programs"]) == ["FreshUnits", "PBBPool", "Listings", "Signatures", "UnitFiles"]
    assert capabilities(DOMAINS["grammars"]) == ["FreshUnits", "Acceptance", "UnitFiles"]
    assert capabilities(DOMAINS["planning"]) == ["FreshUnits", "Representations", "ReleaseLayout"]
    assert capabilities(DOMAINS["rules"]) == ["FreshUnits", "FreshInputs", "Hypotheses"]
    assert capabilities(DOMAINS["documents"]) == ["FreshUnits"]
    assert capabilities(Domain) == []
    # what a capability gives is not on the protocol every domain implements: no one-domain flag read by the engine
    for cap in CAPABILITIES:
        own = {m for m in vars(cap) if not m.startswith("_") and m != "what"}
        assert own and not own & set(vars(Domain)), (cap.__name__, own & set(vars(Domain)))


def _is_domain(expr: str) -> bool:
    """A domain object or class (not its config section: ``cfg.domain.section()``)."""
    return expr in ("domain", "self.domain", "dom", "pdom", "d") or "domain_class(" in expr or "DOMAINS[" in expr


def test_no_module_outside_domains_probes_a_domain_for_members():
    """Capabilities are asked with ``supports``/``need``, not by probing attributes (``hasattr``, ``getattr``)."""
    hits = []
    for p in SRC.rglob("*.py"):
        if "domains" in p.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")
                    and node.args and _is_domain(ast.unparse(node.args[0]))):
                hits.append(f"{p.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
    assert not hits, hits


def test_a_missing_capability_is_one_line(toy_domain, tmp_path, capsys):
    """The toy domain declares no FreshUnits: preparing a base for it stops in one line naming what is missing."""
    cfg = tmp_path / "prep.yaml"
    cfg.write_text(CONFIG.replace("name: toy\n", "name: toy_prep\nkind: prepare\n", 1))
    assert main(["prepare", str(cfg), "--out", str(tmp_path / "prep")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the toy_shift domain does not declare FreshUnits (draws fresh units)" in err, err


def test_a_regime_refuses_a_domain_it_cannot_run(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\nregime: ilf\ndomain: {name: programs}\n")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("inweights: error: config error at regime: the ilf regime runs on the coding domain, not programs "
                   "(domain.name: coding)")


@pytest.fixture
def fresh_plugins(monkeypatch):
    """The registries as a fresh process has them: no entry point loaded yet; what a test registers goes after."""
    from inweights.domains import base
    from inweights.regimes import registry

    monkeypatch.setattr(base, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.delenv("INWEIGHTS_IMPORT", raising=False)
    yield
    DOMAINS.pop("toy_shift", None)
    registry.REGIMES.pop("toy_count", None)


def _installed_package(site: Path, entry_points: str) -> None:
    """A distribution installed in ``site`` as pip leaves one: a dist-info with its entry points."""
    info = site / "toyplug-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    (site / "toyplug.py").write_text("from test_domains_registry import ShiftDomain\nfrom test_regimes import ToyRegime\n")


def test_a_domain_and_a_regime_from_an_installed_package_run_through_their_entry_points(fresh_plugins, tmp_path,
                                                                                         monkeypatch, capsys):
    """The issue's bar: a domain defined in a separate installed package is found through its entry point and runs
    via the CLI — here with the regime that package also declares; nothing registers them by hand."""
    site = tmp_path / "site"
    _installed_package(site, "[inweights.domains]\ntoy_shift = toyplug:ShiftDomain\n\n"
                             "[inweights.regimes]\ntoy_count = toyplug:ToyRegime\n")
    monkeypatch.syspath_prepend(str(site))
    assert "toy_shift" not in DOMAINS
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(CONFIG.replace("recipes: [proactive, stage2_only]", "recipes: [count]") + "regime: toy_count\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["counts"] == {"with_io": 3, "without_io": 3}
    assert DOMAINS["toy_shift"].__module__ == "test_domains_registry"


def test_a_broken_entry_point_is_one_line_naming_it(fresh_plugins, tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    _installed_package(site, "[inweights.domains]\nfacts = toyplug:NoSuchClass\n")
    monkeypatch.syspath_prepend(str(site))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\n")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("inweights: error: entry point facts = toyplug:NoSuchClass (inweights.domains, package "
                          "toyplug) failed to load: AttributeError") and "\n" not in err


def test_import_names_a_module_that_registers_a_domain_and_workers_get_it_too(fresh_plugins, tmp_path, monkeypatch,
                                                                              capsys):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "myfacts.py").write_text("from test_domains_registry import ShiftDomain\n"
                                     "from inweights.domains import register_domain\nregister_domain(ShiftDomain)\n")
    monkeypatch.syspath_prepend(str(mods))
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(CONFIG)
    assert main(["validate", str(cfg)]) == 2  # not imported: an unknown key
    capsys.readouterr()
    assert main(["--import", "myfacts", "validate", str(cfg)]) == 0
    import os

    assert os.environ["INWEIGHTS_IMPORT"] == "myfacts"  # what a spawned worker imports at its start
    DOMAINS.pop("toy_shift")
    from inweights.regimes.experiment.jobs import _worker_start

    monkeypatch.setattr("inweights.regimes.experiment.jobs._die_with_parent", lambda parent: None)
    import sys

    sys.modules.pop("myfacts")
    _worker_start(os.getpid())
    assert "toy_shift" in DOMAINS
    assert main(["--import", "no_such_module_here", "validate", str(cfg)]) == 2
    assert capsys.readouterr().err.strip() == ("inweights: error: --import no_such_module_here: ModuleNotFoundError: "
                                               "No module named 'no_such_module_here'")
