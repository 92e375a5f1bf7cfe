"""What every regime's run needs, below the regimes: the run folder (its status, metrics and trackers), a stage's
metrics log, the one way every regime resumes (``Steps``), the config's units, and its prepared base (found, built
once when missing, checked against the model it was prepared on); evaluation's bf16 setting. The PBB / curricula
engine (``experiment``), rule distillation and ILF all use these; none of them is defined by one regime.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import torch

from inweights.config import ExperimentConfig, load_config
from inweights.core.errors import UserError
from inweights.core.io import atomic_write, overwrite, write_failure
from inweights.core.rundir import MetricsLog, owner, release
from inweights.domains import make_domain
from inweights.domains.capabilities import UnitFiles, need
from inweights.train.loop import get_accelerator


class Run:
    """The run directory: status marker, metrics log."""

    def __init__(self, out: Path, cfg: ExperimentConfig | None = None):
        from inweights.core.trackers import trackers_for

        self.out = out
        self.metrics = MetricsLog(out / "metrics.jsonl")
        names = cfg.train.report_to if cfg is not None else []
        self.trackers = trackers_for(names, out, cfg.name, cfg.model_dump(mode="json")) if names else None

    def close(self) -> None:
        """Flush and close the trackers (the run's end, however it ends)."""
        if self.trackers is not None:
            self.trackers.finish()

    def status(self, state: str, **extra: Any) -> None:
        """``status.json``: written whole (``atomic_write``), or where that fails (a full disk has no block for the
        temporary) over the existing file's own bytes."""
        if not get_accelerator().is_main_process:
            return
        path = self.out / "status.json"
        text = json.dumps({"state": state, "time": time.time(), **owner(), **extra}) + "\n"
        try:
            atomic_write(path, text)
        except OSError:
            if not path.is_file():
                raise
            overwrite(path, text)

    def failed(self, e: BaseException) -> BaseException:
        """Record how the run ended in its status (``failed``, or ``interrupted``), if its folder has one, and return
        what to raise: ``e``, or where it is a failure to write (a full disk) an ``OSError`` naming where
        (``core.io.write_failure``: the file, else the run folder). Never raises: when the status cannot be written
        either, the returned error says so."""
        err = write_failure(e, self.out)
        if not (self.out / "status.json").exists():
            return err
        state = "failed" if not isinstance(e, KeyboardInterrupt) else "interrupted"
        try:
            self.status(state, error=f"{type(err).__name__}: {err}"[:300])
        except OSError as se:
            if isinstance(err, OSError):
                err.inweights_note = (f"; {self.out / 'status.json'} could not be marked {state} either "
                                      f"({se.strerror or se}), so it still says what it said before")
        return err

    def log(self, rec: dict[str, Any]) -> None:
        if not get_accelerator().is_main_process:
            return
        self.metrics.append(rec)
        if self.trackers is not None:
            self.trackers.log(rec)

    def stage_log(self, **fields: Any) -> StageLog:
        return StageLog(self, fields)


class StageLog:
    """A stage's metrics lines (``fields`` added to each), rewound to its checkpoint when the stage resumes."""

    def __init__(self, run: Run, fields: dict[str, Any]):
        self.run, self.fields = run, fields

    def __call__(self, rec: dict[str, Any]) -> None:
        self.run.log({**self.fields, **rec})

    def rewind(self, step: int) -> None:
        if get_accelerator().is_main_process:
            self.run.metrics.rewind(self.fields, step)


def content_key(obj: Any, n: int = 12) -> str:
    """The first ``n`` hex digits of the sha256 of ``obj`` as canonical JSON (sorted keys): a step's key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


class Steps:
    """How every regime resumes: a run is a set of named steps (a PBB stage, an evaluation, a rule-distillation
    cell, an ILF sampling round or fine-tune), each with a content key — the hash of everything that determines
    what it computes. A step's last act is to write its record, whole (``atomic_write``), to ``<folder>/<name>.json``
    with its key (a run's steps: ``<run>/steps/``; a model's evaluation: ``eval.json`` beside its samples); on
    ``--resume`` a step whose record is there *with the same key* is read back instead of redone, and any other
    (missing, or computed from other inputs) is done again. What a step leaves beside its record (a model folder,
    samples) is only trusted once the record exists."""

    def __init__(self, folder: Path):
        self.dir = folder

    def path(self, name: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.@:=-]+", name) or name.startswith("."):
            raise ValueError(f"step name {name!r}: letters, digits and _.@:=- only")
        return self.dir / f"{name}.json"

    def done(self, name: str, key: str) -> dict[str, Any] | None:
        """The step's record when it finished with this key; else None (to be done)."""
        p = self.path(name)
        if not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return rec.get("record") if isinstance(rec, dict) and rec.get("key") == key else None

    def finish(self, name: str, key: str, record: Any) -> Any:
        """Write the step's record (its last act); returns the record."""
        if get_accelerator().is_main_process:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path(name), json.dumps({"key": key, "record": record}) + "\n")
        return record

    def read(self, name: str) -> Any:
        """The step's record whatever its key (a finished step this run did or checked), None where there is none."""
        p = self.path(name)
        try:
            return json.loads(p.read_text()).get("record") if p.is_file() else None
        except (OSError, json.JSONDecodeError, AttributeError):
            return None

    def names(self) -> list[str]:
        """The steps that have a record, by name."""
        return sorted(p.stem for p in self.dir.glob("*.json")) if self.dir.is_dir() else []


def resolve_prepared(cfg: ExperimentConfig, config_path: Path | None) -> tuple[Path, Path]:
    """(prepare config path, prepared base folder) for model.prepared_base."""
    from inweights.prepare import find_config, prepared_dir

    c = find_config(cfg.model.prepared_base, config_path)
    if c is not None:
        pcfg = load_config(c)
        if pcfg.domain.name != cfg.domain.name:
            raise UserError(f"model.prepared_base: {c} prepares the {pcfg.domain.name} domain, this experiment "
                            f"is {cfg.domain.name}; use a prepare config of the same domain")
        check_prepared_model(cfg, c, pcfg)
        return c, prepared_dir(c, pcfg.name)
    raise UserError(f"model.prepared_base: prepare config not found: {cfg.model.prepared_base}")


def check_prepared_model(cfg: ExperimentConfig, pconf: Path, pcfg: ExperimentConfig) -> None:
    """A prepared base belongs to the model it was prepared from: the experiment's model must name the same one
    (preset, folder or hub id; the weights themselves are checked when the base is built and loaded)."""
    from inweights.models.load import base_ref

    def what(m) -> str:
        return "the tiny preset" if m.preset == "tiny" else base_ref(m)

    if (cfg.model.preset == "tiny") != (pcfg.model.preset == "tiny") or (
            cfg.model.preset != "tiny" and (base_ref(cfg.model), cfg.model.revision) != (base_ref(pcfg.model),
                                                                                        pcfg.model.revision)):
        raise UserError(f"model.prepared_base: {pconf} prepares {what(pcfg.model)}, this experiment's model is "
                        f"{what(cfg.model)}; use a prepare config of the same model")


def ensure_prepared(cfg: ExperimentConfig, config_path: Path | None, build=None) -> tuple[Path, dict[str, Any]]:
    """The prepared base folder and its record, built once when it is missing (``build``: a regime's own
    preparation, ``prepare.build_prepared_base``). A base of a pretrained model is checked against this machine's
    copy of that model's weights (one line when they differ)."""
    pconf, pdir = resolve_prepared(cfg, config_path)
    if not (pdir / "prepare.json").is_file():
        from inweights.prepare import build_prepared_base

        print(f"prepared base missing at {pdir}: building it once from {pconf} (tens of minutes on a CPU; "
              f"`inweights prepare {pconf}` builds it ahead)")
        build_prepared_base(load_config(pconf), pdir, f"inweights prepare {pconf}", pconf, build)
    from inweights.core.io import read_json_object

    rec = read_json_object(pdir / "prepare.json", "prepared base record")
    if (bm := rec.get("base_model")) is not None:
        from inweights.models.load import describe_identity, model_identity

        have = model_identity(cfg.model)
        if have != bm["identity"]:
            raise UserError(f"model.prepared_base: {pdir} was prepared on {describe_identity(bm['identity'])}, this "
                            f"machine's {bm['ref']} is {describe_identity(have)}: rebuild it "
                            f"(inweights prepare {pconf}) or install the model it was built on")
    return pdir, rec


def load_units(cfg: ExperimentConfig, out_dir: Path | None = None, quiet: bool = False):
    """The config's domain and units. External files follow the loader policy (``inweights.core.rejects``): the
    rejected records are reported together on stderr (unless ``quiet``) and written to
    ``out_dir/rejected.jsonl``; ``data.strict`` makes them an error."""
    from inweights.core import rejects

    domain = make_domain(cfg)
    with rejects.collecting() as found:
        if cfg.domain.data_file:
            units = need(domain, UnitFiles, "domain.data_file").read_units(Path(cfg.domain.data_file))
        else:
            units = domain.build()
    rejects.settle(found, cfg.data.strict, out_dir, quiet)
    return domain, units


def eval_bf16(cfg: ExperimentConfig) -> bool:
    """Whether evaluation generates under bf16 autocast: ``eval.bf16`` on a CPU with native bf16 kernels (vllm keeps
    its own dtype; GPUs run the model in ``model.dtype``)."""
    from inweights.core.provenance import bf16_supported

    return cfg.eval.bf16 and not torch.cuda.is_available() and bf16_supported()


def eval_autocast(cfg: ExperimentConfig):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=eval_bf16(cfg))


@contextlib.contextmanager
def finishing(run: Run, out: Path, keep: tuple[type[BaseException], ...] = ()):
    """The end of every regime's run, however it ends: an exception is recorded in ``status.json`` (``Run.failed``;
    raised again as what it says — a full disk names the path), except those in ``keep`` (ILF's waiting for
    feedback, which has its own status); the trackers close and the run folder's lock is released."""
    try:
        yield
    except keep:
        raise
    except BaseException as e:
        err = run.failed(e)
        if err is e:
            raise
        raise err from e
    finally:
        run.close()
        release(out)

