"""The package's layering (issue 19): no import cycle anywhere in src/inweights, counting the imports inside
functions too (a function-local import only hides a cycle until someone calls it), and the bottom layer
(``inweights.core``) imports nothing of inweights above it."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

SRC = Path(__file__).resolve().parent.parent / "src"


def import_graph() -> nx.DiGraph:
    mods = {}
    for p in (SRC / "inweights").rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    g = nx.DiGraph()
    for m, p in mods.items():
        g.add_node(m)
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in mods:  # the module (or package) the name lives in
                    name = name.rpartition(".")[0]
                # importing a.b.c runs a/__init__ and a/b/__init__ first: those are imports too (a config module in
                # a package whose __init__ imports the config would be a cycle at run time)
                while name:
                    # a submodule importing its own package's __init__ is how packages work, not a cycle
                    if name in mods and name != m and not m.startswith(name + "."):
                        g.add_edge(m, name)
                    name = name.rpartition(".")[0]
    return g


def test_no_import_cycle():
    g = import_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_core_imports_nothing_above_it():
    g = import_graph()
    up = [(a, b) for a, b in g.edges if a.startswith("inweights.core") and not b.startswith("inweights.core")]
    assert not up, up


def test_the_graph_sees_function_local_imports(tmp_path):
    """The check itself can fail: a cycle through a function-local import is found."""
    g = import_graph()
    assert g.has_edge("inweights.cli", "inweights.regimes.registry")  # cli imports the registry inside a function
    g.add_edge("inweights.regimes.registry", "inweights.cli")
    assert any(len(c) > 1 for c in nx.strongly_connected_components(g))


def test_one_training_loop():
    """Every objective (SFT, distillation, GRPO) trains through ``train.loop.train_stage``: no other module takes
    an optimiser step (issue 39: GRPO became an objective of the one loop)."""
    steps = [f"{p.relative_to(SRC)}:{node.lineno}" for p in (SRC / "inweights").rglob("*.py")
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "step"
             and isinstance(node.func.value, ast.Name) and node.func.value.id in ("opt", "optimizer", "optim")]
    assert len(steps) == 1 and steps[0].startswith("inweights/train/loop.py:"), steps
    from inweights.train.distill import PairObjective
    from inweights.train.grpo import GRPOObjective
    from inweights.train.loop import Objective, PackedCE

    assert all(issubclass(c, Objective) for c in (PackedCE, PairObjective, GRPOObjective))


def test_the_cycle_check_sees_parent_packages():
    """Importing ``a.b.c`` runs ``a/b/__init__``: the graph has that edge (a config module under a package whose
    __init__ imported the config would be a cycle at run time)."""
    g = import_graph()
    assert g.has_edge("inweights.config", "inweights.regimes")  # through regimes.<name>.config
    assert not any(b == "inweights.config" for a, b in g.edges if a == "inweights.regimes")


REGIME_PACKAGES = ("inweights.regimes.experiment", "inweights.regimes.ilf", "inweights.regimes.rule_distill")


def test_a_regime_is_imported_only_by_the_registry():
    """Each regime lives in its package (issue 39): nothing outside it imports from it but the registry — and the
    config, which composes the regimes' sections from their ``config`` modules only."""
    g = import_graph()
    bad = []
    for a, b in g.edges:
        pkg = next((p for p in REGIME_PACKAGES if b == p or b.startswith(p + ".")), None)
        if pkg is None or a == pkg or a.startswith(pkg + ".") or a == "inweights.regimes.registry":
            continue
        if a == "inweights.config" and b in (pkg, pkg + ".config"):
            continue
        bad.append((a, b))
    assert not bad, bad
    # ... and every regime's section is its own: none is defined in config.py
    from inweights import config

    for section in ("PBBConfig", "TwoStageConfig", "SweepConfig", "DistillConfig", "ILFConfig", "FeedbackConfig"):
        assert getattr(config, section).__module__.startswith("inweights.regimes."), section


def test_no_module_is_over_500_lines_but_the_documented_one():
    """docs/architecture.md says why ``sandbox/child.py`` is one file (it is marshalled whole into each sandboxed
    interpreter and may import nothing of inweights)."""
    long = sorted(str(p.relative_to(SRC / "inweights")) for p in (SRC / "inweights").rglob("*.py")
                  if len(p.read_text().splitlines()) > 500)
    assert long == ["sandbox/child.py"], long
    assert "sandbox/child.py" in (SRC.parent / "docs" / "architecture.md").read_text()
