"""The experiment's scheduler: training and evaluation jobs run in dependency order, in this process or, with
``workers`` > 1, in spawned worker processes that die with the run."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _worker_start(parent: int) -> None:
    """A spawned worker's start: it dies with the run's process, and imports the modules the run was given with
    ``--import`` (a domain they register is then known here too)."""
    from inweights.core.plugins import import_env_modules

    _die_with_parent(parent)
    import_env_modules()


def _die_with_parent(parent: int) -> None:
    """A worker process ends when the run's process ends, however it ends (SIGKILL included): otherwise it would
    go on writing into a run folder whose lock is free, beside the resumed run. Linux: the kernel's parent-death
    signal (``prctl(PR_SET_PDEATHSIG)``, through ctypes: no library wraps it); elsewhere a thread that watches."""
    import signal
    import threading

    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_jobs(jobs: list[dict[str, Any]], workers: int, cfg, out: Path, config_path: Path | None,
             do_job: Callable[..., str]) -> None:
    """Run jobs in dependency order; with workers > 1, independent ones run in parallel processes,
    each with cores/workers threads (two 1-thread jobs beat one 2-thread job on a 2-core CPU).
    ``do_job(job, cfg_json, out, config_path, threads) -> job id`` runs one (a module-level function: a spawned
    worker imports it)."""
    cfg_json = cfg.model_dump_json()
    cp = str(config_path) if config_path else None
    ids = {j["id"] for j in jobs}
    done: set[str] = {d for j in jobs for d in j["deps"] if d not in ids}  # finished in an earlier run
    pending = list(jobs)
    if workers == 1:
        while pending:
            job = next(j for j in pending if all(d in done for d in j["deps"]))
            pending.remove(job)
            done.add(do_job(job, cfg_json, str(out), cp, None))
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, (cfg.train.threads or os.cpu_count() or 1) // workers)
    running: dict[Any, str] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_start,
                             initargs=(os.getpid(),)) as pool:
        while pending or running:
            ready = [j for j in pending if all(d in done for d in j["deps"])]
            # training first (evaluations are short and unblock nothing)
            ready.sort(key=lambda j: j["kind"] != "train")
            for job in ready[: workers - len(running)]:
                pending.remove(job)
                running[pool.submit(do_job, job, cfg_json, str(out), cp, threads)] = job["id"]
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in finished:
                running.pop(f)
                done.add(f.result())
