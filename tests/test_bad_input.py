"""The bad-input catalogue (issue 18): every class of bad input, for every command that takes it, ends in one line
on stderr, exit code 2, no traceback, no hang, and nothing written that looks complete.

Each row: an id, the command line (``{d}`` is the case's own temporary directory), the files to create first
(relative to it; bytes are written as they are), and the paths under it that must not exist afterwards. The
commands run in this process (``inweights.cli.main``), under an alarm, so a hang fails its row.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from inweights.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMOKE = (ROOT / "configs" / "smoke.yaml").read_text()
ILF = (ROOT / "configs" / "ilf_tiny.yaml").read_text()
RULES = "name: r\nseed: 0\ndomain:\n  name: rules\n"
NOT_UTF8 = b"name: x\nseed: 0\n# caf\xe9 \xff\xfe\n"
BNF = 'S ::= "a" S "b" | "c"\n'
MBPP_REC = {"task_id": 11, "text": "Write a function f(x) that returns x + 1.", "code": "def f(x):\n    return x + 1\n",
            "test_list": ["assert f(1) == 2"], "test_setup_code": "", "challenge_test_list": []}
UNIT = {"source": "def f(x):\n    v = (x + 1) % 10\n    return v", "group": "with_io", "train_inputs": [1, 2],
        "test_inputs": [3]}
# a run folder that looks finished, to be damaged one file at a time
RUN_FILES = {"run/summary.json": "{}\n", "run/report.md": "# report\n", "run/status.json": '{"state": "done"}\n',
             "run/config.yaml": SMOKE, "run/models.json": '{"proactive": "stages/p/model"}\n',
             "run/stages/p/model/config.json": "{}\n", "run/tasks.json": '{"train": ["t1"]}\n',
             "run/feedback/pending.jsonl": json.dumps({"task_id": "t1", "program": "x"}) + "\n"}
COMPLETE = ["out/summary.json", "out/report.md", "out/manifest.json", "out/models.json", "out/config.yaml",
            "out/prepare.json"]


def C(cid, argv, files=None, absent=COMPLETE, needle=None):
    return pytest.param(argv, files or {}, absent, needle, id=cid)


def run_files(**damage):
    files = dict(RUN_FILES)
    for k, v in damage.items():
        path = "run/" + k.replace("__", "/").replace("_DOT_", ".")
        if v is None:
            files.pop(path, None)
        else:
            files[path] = v
    return files


CASES = [
    # --- config files that are not text, not there, or not a config
    C("validate-config-not-utf8", ["validate", "{d}/c.yaml"], {"c.yaml": NOT_UTF8}, needle="UTF-8"),
    C("run-config-not-utf8", ["run", "{d}/c.yaml", "--out", "{d}/out"], {"c.yaml": NOT_UTF8}, needle="UTF-8"),
    C("data-config-not-utf8", ["data", "programs", "--config", "{d}/c.yaml", "--out", "{d}/out"],
      {"c.yaml": NOT_UTF8}, needle="UTF-8"),
    C("eval-config-not-utf8", ["eval", "{d}/c.yaml", "--model", "{d}/m", "--out", "{d}/out"],
      {"c.yaml": NOT_UTF8}, needle="UTF-8"),
    C("prepare-config-not-utf8", ["prepare", "{d}/c.yaml", "--out", "{d}/out"], {"c.yaml": NOT_UTF8}, needle="UTF-8"),
    C("validate-config-is-a-directory", ["validate", "{d}/cdir"], {"cdir/x": "1"}, needle="directory"),
    C("run-config-is-a-directory", ["run", "{d}/cdir", "--out", "{d}/out"], {"cdir/x": "1"}, needle="directory"),
    C("validate-config-missing", ["validate", "{d}/none.yaml"], needle="not found"),
    C("validate-config-a-list", ["validate", "{d}/c.yaml"], {"c.yaml": "- a\n- b\n"}, needle="mapping"),
    C("validate-config-bad-yaml", ["validate", "{d}/c.yaml"], {"c.yaml": "name: [x\n"}, needle="YAML"),
    C("validate-set-without-equals", ["validate", "{d}/c.yaml", "--set", "train.lr"], {"c.yaml": SMOKE}),
    C("validate-set-unknown-key", ["validate", "{d}/c.yaml", "--set", "train.nope=1"], {"c.yaml": SMOKE},
      needle="unknown key"),
    C("validate-set-wrong-type", ["validate", "{d}/c.yaml", "--set", "train.lr=abc"], {"c.yaml": SMOKE}),
    # --- numbers that are not finite, or out of range
    C("validate-lr-nan", ["validate", "{d}/c.yaml", "--set", "train.lr=.nan"], {"c.yaml": SMOKE}, needle="finite"),
    C("run-lr-inf", ["run", "{d}/c.yaml", "--set", "train.lr=.inf", "--out", "{d}/out"], {"c.yaml": SMOKE},
      needle="finite"),
    C("validate-fraction-nan", ["validate", "{d}/c.yaml", "--set", "domain.programs.without_io_fraction=.nan"],
      {"c.yaml": SMOKE}),
    C("validate-warmup-minus-inf", ["validate", "{d}/c.yaml", "--set", "train.warmup_frac=-.inf"], {"c.yaml": SMOKE}),
    C("validate-ilf-timeout-nan", ["validate", "{d}/c.yaml", "--set", "ilf.timeout=.nan"], {"c.yaml": ILF}),
    C("validate-ilf-temperature-inf", ["validate", "{d}/c.yaml", "--set", "ilf.temperature=.inf"], {"c.yaml": ILF}),
    C("validate-grad-clip-nan", ["validate", "{d}/c.yaml", "--set", "train.grad_clip=.nan"], {"c.yaml": SMOKE}),
    # --- recipes
    C("validate-recipe-bad-suffix", ["validate", "{d}/c.yaml", "--set", "recipes=[demos_only@kzz]"],
      {"c.yaml": SMOKE}, needle="demos_only@kzz"),
    C("run-recipe-bad-suffix", ["run", "{d}/c.yaml", "--set", "recipes=[demos_only@kzz]", "--out", "{d}/out"],
      {"c.yaml": SMOKE}, needle="demos_only@kzz"),
    C("validate-recipe-zero-k", ["validate", "{d}/c.yaml", "--set", "recipes=[demos_only@k0]"], {"c.yaml": SMOKE}),
    C("validate-recipe-unknown", ["validate", "{d}/c.yaml", "--set", "recipes=[nope]"], {"c.yaml": SMOKE},
      needle="unknown recipe"),
    C("validate-recipes-empty", ["validate", "{d}/c.yaml", "--set", "recipes=[]"], {"c.yaml": SMOKE}, needle="recipes"),
    C("validate-planning-with-pbb-recipes", ["validate", "{d}/c.yaml", "--set", "domain.name=planning",
                                             "--set", "model.prepared_base=null", "--set", "recipes=[proactive]"],
      {"c.yaml": SMOKE}, needle="group with_io has no units"),
    C("validate-recipe-twice", ["validate", "{d}/c.yaml", "--set", "recipes=[mixture,mixture]"], {"c.yaml": SMOKE},
      needle="twice"),
    # --- settings that leave nothing to do, or more than the machine holds
    C("validate-no-without-io-group", ["validate", "{d}/c.yaml", "--set", "domain.programs.n_programs=2"],
      {"c.yaml": SMOKE}, needle="without_io"),
    C("run-no-without-io-group", ["run", "{d}/c.yaml", "--set", "domain.programs.n_programs=2", "--out", "{d}/out"],
      {"c.yaml": SMOKE}, needle="without_io"),
    C("validate-one-grammar-file", ["validate", "{d}/c.yaml", "--set", "domain.name=grammars",
                                    "--set", "domain.grammars.files=[{d}/g.bnf]", "--set", "model.prepared_base=null"],
      {"c.yaml": SMOKE, "g.bnf": BNF}, needle="with_io"),
    C("validate-compositions-without-programs", ["validate", "{d}/c.yaml", "--set", "domain.programs.n_compositions=5",
                                                 "--set", "domain.programs.n_programs=4"], {"c.yaml": SMOKE},
      needle="composition"),
    C("validate-model-too-big", ["validate", "{d}/c.yaml", "--set", "model.tiny.hidden_size=65536",
                                 "--set", "model.tiny.intermediate_size=262144", "--set", "model.tiny.num_layers=64"],
      {"c.yaml": SMOKE}, needle="memory"),
    C("run-model-too-big", ["run", "{d}/c.yaml", "--set", "model.tiny.hidden_size=65536", "--set",
                            "model.tiny.intermediate_size=262144", "--set", "model.tiny.num_layers=64",
                            "--out", "{d}/out"], {"c.yaml": SMOKE}, needle="memory"),
    C("validate-batch-too-big", ["validate", "{d}/c.yaml", "--set", "train.batch_size=4000000", "--set",
                                 "train.max_len=4096"], {"c.yaml": SMOKE}, needle="memory"),
    C("validate-max-len-truncates-everything", ["validate", "{d}/c.yaml", "--set", "train.max_len=16"],
      {"c.yaml": SMOKE}, needle="max_len"),
    C("run-max-len-truncates-everything", ["run", "{d}/c.yaml", "--set", "train.max_len=16", "--out", "{d}/out"],
      {"c.yaml": SMOKE}, needle="max_len"),
    C("validate-planning-unsatisfiable", ["validate", "{d}/c.yaml", "--set", "domain.name=planning",
                                          "--set", "model.prepared_base=null", "--set", "domain.planning.n_train=500",
                                          "--set", "domain.planning.min_steps=2", "--set", "domain.planning.max_steps=2",
                                          "--set", "domain.planning.durations=[5,10]"], {"c.yaml": SMOKE},
      needle="domain.planning"),
    C("validate-names-run-out", ["validate", "{d}/c.yaml", "--set", "domain.programs.n_programs=1100",
                                 "--set", "domain.programs.name_style=digits", "--set", "domain.programs.cond_prob=0.25"],
      {"c.yaml": SMOKE}, needle="name"),
    # --- data files
    C("validate-units-not-utf8", ["validate", "{d}/c.yaml", "--set", "domain.data_file={d}/u.jsonl"],
      {"c.yaml": SMOKE, "u.jsonl": b'{"name": "f\xff"}\n'}, needle="UTF-8"),
    C("validate-units-wrong-types", ["validate", "{d}/c.yaml", "--set", "domain.data_file={d}/u.jsonl", "--strict"],
      {"c.yaml": SMOKE, "u.jsonl": json.dumps({**UNIT, "source": 5}) + "\n"}, needle="u.jsonl:1"),
    C("validate-units-duplicate-names", ["validate", "{d}/c.yaml", "--set", "domain.data_file={d}/u.jsonl",
                                         "--strict"],
      {"c.yaml": SMOKE, "u.jsonl": json.dumps(UNIT) + "\n" + json.dumps(UNIT) + "\n"}, needle="u.jsonl:2"),
    C("validate-bnf-not-utf8", ["validate", "{d}/c.yaml", "--set", "domain.name=grammars", "--set",
                                "domain.grammars.files=[{d}/g.bnf,{d}/h.bnf]", "--set", "model.prepared_base=null"],
      {"c.yaml": SMOKE, "g.bnf": BNF, "h.bnf": b'S ::= "\xff"\n'}, needle="UTF-8"),
    C("validate-mbpp-not-utf8", ["validate", "{d}/c.yaml", "--set", "domain.coding.source=mbpp", "--set",
                                 "domain.coding.mbpp_path={d}/t.jsonl"],
      {"c.yaml": ILF, "t.jsonl": b'{"task_id": 11, "text": "\xff"}\n'}, needle="UTF-8"),
    C("validate-alpaca-empty-list", ["validate", "{d}/c.yaml", "--set", "domain.name=rules", "--set",
                                     "domain.rules.alpaca_train={d}/a.json", "--set", "domain.rules.alpaca_test={d}/a.json",
                                     "--set", "model.prepared_base=null"],
      {"c.yaml": RULES, "a.json": "[]\n"}, needle="a.json"),
    C("validate-alpaca-wrong-types", ["validate", "{d}/c.yaml", "--set", "domain.name=rules", "--set",
                                      "domain.rules.alpaca_train={d}/a.json", "--set",
                                      "domain.rules.alpaca_test={d}/a.json", "--set", "model.prepared_base=null",
                                      "--strict"],
      {"c.yaml": RULES, "a.json": json.dumps([{"instruction": 1, "input": [], "output": None}])},
      needle="a.json"),
    C("validate-alpaca-not-utf8", ["validate", "{d}/c.yaml", "--set", "domain.name=rules", "--set",
                                   "domain.rules.alpaca_train={d}/a.json", "--set", "domain.rules.alpaca_test={d}/a.json",
                                   "--set", "model.prepared_base=null"],
      {"c.yaml": RULES, "a.json": b'[{"instruction": "\xff"}]'}, needle="UTF-8"),
    # --- the sandbox command
    C("sandbox-k-zero", ["sandbox", "{d}/t.jsonl", "--k", "0"], {"t.jsonl": json.dumps(MBPP_REC) + "\n"}, needle="--k"),
    C("sandbox-k-negative", ["sandbox", "{d}/t.jsonl", "--k", "-1"], {"t.jsonl": json.dumps(MBPP_REC) + "\n"},
      needle="--k"),
    C("sandbox-timeout-negative", ["sandbox", "{d}/t.jsonl", "--timeout", "-1"],
      {"t.jsonl": json.dumps(MBPP_REC) + "\n"}, needle="--timeout"),
    C("sandbox-timeout-nan", ["sandbox", "{d}/t.jsonl", "--timeout", "nan"], {"t.jsonl": json.dumps(MBPP_REC) + "\n"},
      needle="--timeout"),
    C("sandbox-timeout-inf", ["sandbox", "{d}/t.jsonl", "--timeout", "inf"], {"t.jsonl": json.dumps(MBPP_REC) + "\n"},
      needle="--timeout"),
    C("sandbox-workers-zero", ["sandbox", "{d}/t.jsonl", "--workers", "0"], {"t.jsonl": json.dumps(MBPP_REC) + "\n"},
      needle="--workers"),
    C("sandbox-tasks-missing", ["sandbox", "{d}/none.jsonl"], needle="not found"),
    C("sandbox-tasks-not-utf8", ["sandbox", "{d}/t.jsonl"], {"t.jsonl": b'{"task_id": 11, "text": "\xff"}\n'},
      needle="UTF-8"),
    C("sandbox-tasks-wrong-types", ["sandbox", "{d}/t.jsonl"],
      {"t.jsonl": json.dumps({**MBPP_REC, "test_list": "assert f(1) == 2"}) + "\n"}, needle="t.jsonl:1"),
    C("sandbox-programs-not-utf8", ["sandbox", "{d}/t.jsonl", "--programs", "{d}/p.jsonl"],
      {"t.jsonl": json.dumps(MBPP_REC) + "\n", "p.jsonl": b'{"task_id": 11, "program": "\xff"}\n'}, needle="UTF-8"),
    C("sandbox-programs-wrong-types", ["sandbox", "{d}/t.jsonl", "--programs", "{d}/p.jsonl"],
      {"t.jsonl": json.dumps(MBPP_REC) + "\n", "p.jsonl": json.dumps({"task_id": 11, "program": 5}) + "\n"},
      needle="p.jsonl:1"),
    C("sandbox-out-is-a-directory", ["sandbox", "{d}/t.jsonl", "--out", "{d}/odir"],
      {"t.jsonl": json.dumps(MBPP_REC) + "\n", "odir/x": "1"}, needle="directory"),
    # --- where to write
    C("run-out-is-a-file", ["run", "{d}/c.yaml", "--out", "{d}/f"], {"c.yaml": SMOKE, "f": "x"},
      needle="not a directory"),
    C("run-out-under-a-file", ["run", "{d}/c.yaml", "--out", "{d}/f/sub"], {"c.yaml": SMOKE, "f": "x"},
      needle="is a file"),
    C("run-out-read-only", ["run", "{d}/c.yaml", "--out", "/proc/inweights-out"], {"c.yaml": SMOKE},
      needle="not writable"),
    C("data-out-is-a-file", ["data", "programs", "--config", "{d}/c.yaml", "--out", "{d}/f"],
      {"c.yaml": SMOKE, "f": "x"}, needle="not a directory"),
    C("prepare-out-is-a-file", ["prepare", "{d}/c.yaml", "--out", "{d}/f"],
      {"c.yaml": (ROOT / "configs" / "prepare_tiny.yaml").read_text(), "f": "x"}, needle="not a directory"),
    C("eval-out-is-a-file", ["eval", "{d}/c.yaml", "--model", "{d}/run/stages/p/model", "--out", "{d}/f"],
      {"c.yaml": SMOKE, "f": "x", **RUN_FILES}, needle="not a directory"),
    C("export-out-is-a-file", ["export", "{d}/run", "--out", "{d}/f"], {**RUN_FILES, "f": "x"},
      needle="not a directory"),
    C("feedback-export-out-is-a-directory", ["feedback", "export", "{d}/run", "--out", "{d}/odir"],
      {**RUN_FILES, "odir/x": "1"}, needle="directory"),
    # --- run folders that are damaged
    C("report-summary-not-json", ["report", "{d}/run"], run_files(summary_DOT_json="{not json"), needle="summary.json"),
    C("report-summary-not-utf8", ["report", "{d}/run"], run_files(summary_DOT_json=b"{\xff}"), needle="UTF-8"),
    C("report-report-missing", ["report", "{d}/run"], run_files(report_DOT_md=None), needle="report.md"),
    C("report-status-not-json", ["report", "{d}/run"], run_files(status_DOT_json="{"), needle="status.json"),
    C("status-not-a-run", ["status", "{d}/empty"], {"empty/x": "1"}, needle="status.json"),
    C("status-status-not-json", ["status", "{d}/run"], run_files(status_DOT_json="{"), needle="status.json"),
    C("report-not-a-run", ["report", "{d}/empty"], {"empty/x": "1"}, needle="summary.json"),
    C("export-models-not-json", ["export", "{d}/run"], run_files(models_DOT_json="[1,"), needle="models.json",
      absent=["run/export"]),
    C("export-models-a-list", ["export", "{d}/run"], run_files(models_DOT_json="[1]"), needle="models.json",
      absent=["run/export"]),
    C("export-stage-deleted", ["export", "{d}/run"], run_files(stages__p__model__config_DOT_json=None),
      needle="stages/p/model", absent=["run/export"]),
    C("feedback-export-tasks-not-json", ["feedback", "export", "{d}/run", "--out", "{d}/fb.jsonl"],
      run_files(tasks_DOT_json="{"), needle="tasks.json", absent=["fb.jsonl"]),
    C("feedback-import-tasks-not-json", ["feedback", "import", "{d}/fb.jsonl", "--run", "{d}/run"],
      {**run_files(tasks_DOT_json="{"), "fb.jsonl": "{}\n"}, needle="tasks.json", absent=[]),
    C("feedback-import-pending-not-json", ["feedback", "import", "{d}/fb.jsonl", "--run", "{d}/run"],
      {**run_files(feedback__pending_DOT_jsonl="{oops\n"),
       "fb.jsonl": json.dumps({"task_id": "t1", "program": "x", "feedback": "y"}) + "\n"},
      needle="pending.jsonl", absent=["run/feedback/imported.jsonl"]),
    C("feedback-import-not-utf8", ["feedback", "import", "{d}/fb.jsonl", "--run", "{d}/run"],
      {**RUN_FILES, "fb.jsonl": b'{"task_id": "t1", "program": "x", "feedback": "\xff"}\n'}, needle="UTF-8",
      absent=["run/feedback/imported.jsonl"]),
    C("feedback-import-wrong-types", ["feedback", "import", "{d}/fb.jsonl", "--run", "{d}/run"],
      {**RUN_FILES, "fb.jsonl": json.dumps({"task_id": "t1", "program": "x", "feedback": 5}) + "\n"},
      needle="fb.jsonl:1", absent=["run/feedback/imported.jsonl"]),
    C("resume-config-not-utf8", ["run", "{d}/c.yaml", "--out", "{d}/run", "--resume"],
      {"c.yaml": SMOKE, **run_files(config_DOT_yaml=b"name: \xff\n")}, needle="UTF-8", absent=[]),
    C("resume-status-not-json", ["run", "{d}/c.yaml", "--out", "{d}/run", "--resume"],
      {"c.yaml": SMOKE, **run_files(status_DOT_json="{")}, needle="status.json", absent=[]),
    C("run-out-exists-without-resume", ["run", "{d}/c.yaml", "--out", "{d}/run"], {"c.yaml": SMOKE, **RUN_FILES},
      needle="--resume", absent=[]),
    # --- model folders that are damaged
    C("eval-model-missing", ["eval", "{d}/c.yaml", "--model", "{d}/nomodel", "--out", "{d}/out"], {"c.yaml": SMOKE},
      needle="nomodel"),
    C("eval-model-config-not-json", ["eval", "{d}/c.yaml", "--model", "{d}/m", "--out", "{d}/out"],
      {"c.yaml": SMOKE, "m/config.json": "{"}, needle="m"),
    C("eval-model-weights-truncated", ["eval", "{d}/c.yaml", "--model", "{d}/m", "--out", "{d}/out"],
      {"c.yaml": SMOKE, "m/config.json": "TINY_CONFIG", "m/model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{"},
      needle="m"),
    C("validate-model-path-weights-truncated", ["validate", "{d}/c.yaml", "--set", "model.preset=null",
                                                "--set", "model.path={d}/m"],
      {"c.yaml": SMOKE, "m/config.json": "TINY_CONFIG", "m/model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{"},
      needle="m"),
    # --- an eval group that yields no probes (issue 38: it ran, "0 probes", and the report said "above chance")
    C("validate-eval-group-without-probes", ["validate", "{d}/c.yaml", "--set", "eval.groups=[composed]"],
      {"c.yaml": SMOKE}, needle="eval.groups"),
    C("run-eval-group-without-probes", ["run", "{d}/c.yaml", "--set", "eval.groups=[composed]", "--out", "{d}/out"],
      {"c.yaml": SMOKE}, absent=[*COMPLETE, "out"], needle="composed"),
    C("eval-eval-group-without-probes", ["eval", "{d}/c.yaml", "--set", "eval.groups=[with_io,composed]",
                                         "--model", "{d}/m", "--out", "{d}/out"],
      {"c.yaml": SMOKE, "m/config.json": "TINY_CONFIG"}, absent=["out"], needle="composed"),
    # --- released AsyncHow folders (issue 38): a representation the release lacks, a missing test file
    C("data-asynchow-representation-it-lacks", ["data", "planning", "--set", "domain.planning.asynchow_dir={d}",
                                                "--set", "domain.planning.eval_representations=[template]",
                                                "--out", "{d}/out"], absent=["out", "out.partial"], needle="'template'"),
    C("data-asynchow-test-file-missing", ["data", "planning", "--set", "domain.planning.asynchow_dir={d}/a",
                                          "--out", "{d}/out"], {"a/asynchow_natural_test.jsonl": "{}\n"},
      absent=["out", "out.partial"], needle="asynchow_graph_test.jsonl"),
]


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("no answer within the time limit")


@pytest.fixture(scope="module")
def tiny_config_json(tmp_path_factory) -> str:
    """A real tiny model's config.json (so a damaged weights file is the only thing wrong)."""
    from inweights.config import TinyConfig
    from inweights.models.load import build_tiny, save_model
    from inweights.models.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("tiny")
    tok = train_tokenizer(["def f(x):\n    return x + 1\n"] * 4, 300)
    save_model(build_tiny(TinyConfig(hidden_size=16, num_layers=1, num_heads=1, intermediate_size=32,
                                     vocab_size=300), tok, 0), tok, d)
    return (d / "config.json").read_text()


@pytest.mark.parametrize(("argv", "files", "absent", "needle"), CASES)
def test_bad_input_is_one_line_exit_2(argv, files, absent, needle, tmp_path, capsys, tiny_config_json):
    for rel, content in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content == "TINY_CONFIG":
            content = tiny_config_json
        p.write_bytes(content if isinstance(content, bytes) else content.replace("{d}", str(tmp_path)).encode())
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        rc = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("inweights: warning:")]
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("inweights: error: "), err
    assert "Traceback" not in err
    if needle:
        assert needle in lines[0], lines[0]
    for rel in absent:
        assert not (tmp_path / rel).exists(), f"{rel} was written"
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 60
