import json
from pathlib import Path

import pytest

from inweights.cli import main
from inweights.config import ExperimentConfig, apply_overrides, validate
from inweights.core.errors import UserError


def test_defaults_validate():
    cfg = ExperimentConfig(name="x")
    assert cfg.model.preset == "tiny" and cfg.recipes


@pytest.mark.parametrize(
    "raw,where",
    [
        ({"name": "x", "train": {"lrr": 1}}, "train.lrr: unknown key"),
        ({"name": "x", "pbb": {"stage1_steps": -5}}, "pbb.stage1_steps"),
        ({"name": "x", "train": {"lr": "fast"}}, "train.lr"),
        ({"name": "x", "domain": {"programs": {"min_statements": 5, "max_statements": 2}}}, "domain.programs"),
        ({"name": "x", "recipes": ["nope"]}, "unknown recipe 'nope'"),
        ({"name": "x", "model": {"preset": None}}, "model"),
    ],
)
def test_bad_config_names_the_key(raw, where):
    from inweights.regimes import registry as regimes

    with pytest.raises(UserError) as e:
        regimes.validate(raw)  # the config's schema, then the regime's own sense of it (recipe names)
    assert where in str(e.value)


def test_overrides_are_typed():
    raw = apply_overrides({"name": "x"}, ["train.lr=3e-4", "recipes=[proactive]", "eval.eval_base=false"])
    cfg = validate(raw)
    assert cfg.train.lr == 3e-4 and cfg.recipes == ["proactive"] and cfg.eval.eval_base is False


def test_one_key_switches_the_model_whatever_the_config_named(tmp_path):
    """model.path (or name, or preset) alone replaces the config's model: its source, revision and the prepared
    base built for it go, unless the same overrides set them again; a config over another (extends, the Python
    API's sections) switches the same way."""
    from inweights.config import load_raw, merge_configs

    shipped = {"name": "x", "model": {"preset": "smollm2-135m", "prepared_base": "configs/prepare_smollm2_programs.yaml",
                                      "lora": {"r": 16, "alpha": 32}}}
    cfg = validate(apply_overrides(shipped, ["model.path=/models/mine"]))
    assert (cfg.model.path, cfg.model.preset, cfg.model.prepared_base) == ("/models/mine", None, None)
    assert cfg.model.lora.r == 16  # what is not about which model stays
    cfg = validate(apply_overrides(shipped, ["model.name=org/m", "model.revision=v1"]))
    assert (cfg.model.name, cfg.model.revision, cfg.model.preset) == ("org/m", "v1", None)
    # a prepared base named in the same overrides, before or after the switch, is kept
    for order in (["model.prepared_base=p.yaml", "model.path=/m"], ["model.path=/m", "model.prepared_base=p.yaml"]):
        assert validate(apply_overrides(shipped, order)).model.prepared_base == "p.yaml"
    tiny = {"name": "x", "model": {"preset": "tiny", "prepared_base": "configs/prepare_tiny.yaml"}}
    assert validate(apply_overrides(tiny, ["model.path=/m"])).model.prepared_base is None
    back = validate(apply_overrides({"name": "x", "model": {"path": "/m"}}, ["model.preset=tiny"])).model
    assert back.preset == "tiny" and back.path is None
    assert validate(apply_overrides(shipped, ["model.lora.r=4"])).model.preset == "smollm2-135m"  # no switch
    # null is no model: the config's stays and the one-source check speaks
    assert apply_overrides(shipped, ["model.path=null"])["model"]["preset"] == "smollm2-135m"
    assert merge_configs(shipped, {"model": {"path": "/m"}})["model"] == {"path": "/m", "lora": {"r": 16, "alpha": 32}}
    parent = tmp_path / "parent.yaml"
    parent.write_text("name: p\nmodel: {preset: tiny, prepared_base: configs/prepare_tiny.yaml}\n")
    (tmp_path / "child.yaml").write_text("extends: parent.yaml\nname: c\nmodel: {path: /m}\n")
    assert load_raw(tmp_path / "child.yaml")["model"] == {"path": "/m"}


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("name: x\nbogus: 1\n", "bogus: unknown key"),
        ("name: x\npbb: {stage1_steps: -3}\n", "pbb.stage1_steps"),
        ("name: x\nmodel: {preset: null, path: /nonexistent/model}\n", "/nonexistent/model"),
        ("name: x\n  bad: [yaml\n", "invalid YAML"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, text, needle, command):
    args = [command, _write(tmp_path, text)] + (["--out", str(tmp_path / "run")] if command == "run" else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_cli_missing_config(capsys):
    assert main(["validate", "/nonexistent.yaml"]) == 2
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_shipped_configs_validate(root, capsys, monkeypatch):
    from inweights.config import load_config

    monkeypatch.chdir(root)  # data paths in configs are relative to the repository
    for p in sorted((root / "configs").glob("*.yaml")):
        cfg = load_config(p)
        if cfg.domain.name == "coding" and cfg.domain.coding.source == "mbpp" and \
                not Path(cfg.domain.coding.mbpp_path).is_file():
            continue  # MBPP is not shipped: its schema was checked by load_config
        assert main(["validate", str(p)]) == 0, p


def test_gpu_configs_parse(root):
    """The GPU configs need the hub to load their models, so only their schema is checked here."""
    from inweights.config import load_config

    paths = sorted((root / "configs" / "gpu").glob("*.yaml"))
    assert any(p.name.startswith("ilf_") for p in paths)
    for p in paths:
        assert load_config(p).name, p


def test_extends_merges_mappings_and_replaces_lists(tmp_path):
    from inweights.config import load_config, load_raw

    (tmp_path / "base.yaml").write_text("name: base\nseed: 3\ntrain: {lr: 1.0e-3, batch_size: 8}\n"
                                        "recipes: [proactive, stage2_only, mixture]\nsweep: {demos_k: [1, 3]}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mid.yaml").write_text("extends: ../base.yaml\nname: mid\ntrain: {lr: 5.0e-4}\n")
    (tmp_path / "sub" / "leaf.yaml").write_text("extends: mid.yaml\nname: leaf\nrecipes: [mixture]\nsweep: null\n")
    raw = load_raw(tmp_path / "sub" / "leaf.yaml")
    assert "extends" not in raw
    cfg = load_config(tmp_path / "sub" / "leaf.yaml", ["train.batch_size=4"])
    assert (cfg.name, cfg.seed) == ("leaf", 3)
    assert (cfg.train.lr, cfg.train.batch_size) == (5.0e-4, 4)  # merged key by key through the chain, then --set
    assert cfg.recipes == ["mixture"] and cfg.sweep is None  # a list, or null, replaces what the parent had


@pytest.mark.parametrize("files,needle", [
    ({"a.yaml": "extends: b.yaml\nname: a\n", "b.yaml": "extends: a.yaml\nname: b\n"}, "extends back to itself"),
    ({"a.yaml": "extends: a.yaml\nname: a\n"}, "extends back to itself"),
    ({"a.yaml": "extends: missing.yaml\nname: a\n"}, "extends: missing.yaml not found"),
    ({"a.yaml": "extends: [x.yaml, y.yaml]\nname: a\n"}, "extends must be the path or name of one config"),
    ({"a.yaml": "extends: b.yaml\nname: a\n", "b.yaml": "name: b\ntrain: {lrr: 1}\n"}, "train.lrr: unknown key"),
])
def test_extends_bad_input_is_one_line(tmp_path, capsys, files, needle):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert main(["validate", str(tmp_path / "a.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err


def test_ablation_configs_are_deltas_of_the_demo(root):
    """The ablations say only what differs from the demo; everything else follows it."""
    from inweights.config import load_config

    demo = load_config(root / "configs/pbb_programs.yaml")
    for name in ("ablation_nl", "ablation_composition", "pbb_programs_long"):
        assert (root / "configs" / f"{name}.yaml").read_text().count("\n") < 25, name
        cfg = load_config(root / "configs" / f"{name}.yaml")
        assert cfg.domain.programs.n_programs == demo.domain.programs.n_programs
        assert cfg.model.prepared_base == demo.model.prepared_base and cfg.pbb.stage1_steps == demo.pbb.stage1_steps
    assert load_config(root / "configs/ablation_nl.yaml").domain.programs.instruction == "nl"


def test_shipped_config_by_name_from_anywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert main(["validate", "smoke"]) == 0
    assert "ok (experiment 'smoke')" in capsys.readouterr().out
    assert main(["configs"]) == 0
    listing = capsys.readouterr().out
    experiments, preparations = listing.split("Prepared bases")
    names = [ln.strip() for ln in experiments.splitlines() if ln.startswith("  ") and not ln.startswith("   ")]
    prepared = [ln.strip() for ln in preparations.splitlines() if ln.startswith("  ") and not ln.startswith("   ")]
    assert "smoke" in names and "pbb_programs" in names and "gpu/ilf_mbpp_qwen2.5-0.5b_lora" in names
    assert "prepare_tiny" in prepared and not any(n.startswith("prepare_") for n in names)
    assert not any(n.startswith("accelerate/") for n in names + prepared)
    # descriptions whole: the header's sentence to its end, never cut mid-word ("e.g." does not end it)
    from inweights.catalog import config_description

    assert config_description("# A b c, e.g. d\n# e f. Next one.\n# more\nname: x\n") == "A b c, e.g. d e f."
    assert config_description("# Short.\n# Second.\nname: x") == "Short."
    assert config_description("name: x") == ""
    # a user's own config outside the checkout that extends a shipped one and keeps its prepared base
    (tmp_path / "mine.yaml").write_text("extends: pbb_programs\nname: mine\npbb: {stage2_steps: 10}\n")
    from inweights.config import load_config
    from inweights.runs import resolve_prepared

    cfg = load_config(tmp_path / "mine.yaml")
    assert cfg.pbb.stage2_steps == 10 and cfg.pbb.stage1_steps == 500
    conf, pdir = resolve_prepared(cfg, tmp_path / "mine.yaml")
    assert conf.name == "prepare_tiny.yaml" and (pdir / "prepare.json").is_file()


def test_prepared_bases_of_an_installed_package_go_to_the_cache(tmp_path, monkeypatch):
    from inweights.prepare import prepared_dir

    site = tmp_path / "lib" / "site-packages" / "inweights" / "configs"
    site.mkdir(parents=True)
    (site / "prepare_x.yaml").write_text("name: prepare_x\nkind: prepare\n")
    monkeypatch.setenv("INWEIGHTS_PREPARED", str(tmp_path / "cache"))
    assert prepared_dir(site / "prepare_x.yaml", "prepare_x") == tmp_path / "cache" / "prepare_x"
    checkout = tmp_path / "repo" / "configs"
    checkout.mkdir(parents=True)
    (checkout / "prepare_x.yaml").write_text("name: prepare_x\nkind: prepare\n")
    assert prepared_dir(checkout / "prepare_x.yaml", "prepare_x") == tmp_path / "repo" / "prepared" / "prepare_x"
    (tmp_path / "cache" / "prepare_x").mkdir(parents=True)
    (tmp_path / "cache" / "prepare_x" / "prepare.json").write_text("{}")  # built there earlier: found there
    assert prepared_dir(checkout / "prepare_x.yaml", "prepare_x") == tmp_path / "cache" / "prepare_x"


def test_every_option_has_help_and_the_version_prints(capsys):
    """`inweights --version`, and help text on every argument of every command (a user reads --help, not the
    source)."""
    import argparse

    import inweights
    from inweights.cli import build_parser

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"inweights {inweights.__version__}"

    def walk(parser, where):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{where} {name}")
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield where, action

    missing = [f"{where}: {'/'.join(a.option_strings) or a.dest}" for where, a in walk(build_parser(), "inweights")
               if not a.help]
    assert not missing, missing


@pytest.mark.slow
def test_the_smoke_config_runs_on_a_saved_model_folder_by_one_key(tmp_path, capsys):
    """The issue's bar: `--set model.path=DIR` alone (no preset=null, no prepared_base=null) runs smoke on a
    saved model — here one a first smoke run trained."""
    assert main(["run", "smoke", "--out", str(tmp_path / "first"), "--quiet"]) == 0
    saved = next((tmp_path / "first" / "stages").glob("1_mix_all_*/model"))
    assert main(["run", "smoke", "--out", str(tmp_path / "mine"), "--quiet", "--set", f"model.path={saved}"]) == 0
    from inweights.config import load_config

    cfg = load_config(tmp_path / "mine" / "config.yaml")
    assert cfg.model.path == str(saved) and cfg.model.preset is None and cfg.model.prepared_base is None
    # the smoke report says first what it is (its config's description), and no target is cut by its budget
    report = (tmp_path / "first" / "report.md").read_text().splitlines()
    assert report[0] == "# smoke" and report[2].startswith("> An install check, not an experiment")
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert all(c["too_long"] == 0 for r in summary["rows"].values() for c in r["cells"].values())


@pytest.mark.slow
def test_a_positive_control_probes_a_named_prepared_base_in_context(tmp_path, capsys):
    """eval.positive_control: the prepared base of a prepare config reads each unit in its prompt on the run's own
    units; the summary keeps its cells and the report says, before the verdicts, whether it is high."""
    out = tmp_path / "run"
    assert main(["run", "smoke", "--out", str(out), "--quiet", "--set", "recipes=[stage2_only]",
                 "--set", "eval.positive_control=configs/prepare_tiny.yaml"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    pc = summary["positive_control"]
    assert set(pc["cells"]) == {"with_io/in_context/cot", "without_io/in_context/cot"}
    assert pc["cells"]["with_io/in_context/cot"]["n"] == 36 and pc["model"].endswith("prepare_tiny")
    # a model with the skill: far above the untrained recipe on the same probes
    assert pc["cells"]["with_io/in_context/cot"]["acc"] > 0.4 > summary["rows"]["stage2_only"]["cells"][
        "with_io/in_context/cot"]["acc"]
    report = (out / "report.md").read_text()
    assert report.index("**Positive control**") < report.index("## Accuracy")
    capsys.readouterr()
    assert main(["validate", "smoke", "--set", "eval.positive_control=configs/nope.yaml"]) == 2  # before any work
    assert "eval.positive_control: prepare config not found: configs/nope.yaml" in capsys.readouterr().err
