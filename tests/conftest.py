import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _threads():
    import torch

    # one thread per pytest-xdist worker (two workers share the two cores), two when the suite runs alone
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture
def lock_holder():
    """``with lock_holder(folder) as pid``: another process holds ``folder``'s run lock for the block."""
    import contextlib
    import subprocess
    import sys

    hold = ("import sys, time; from pathlib import Path; from inweights.core.rundir import acquire; "
            "acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)")

    @contextlib.contextmanager
    def held(folder: Path):
        holder = subprocess.Popen([sys.executable, "-c", hold, str(folder)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            yield holder.pid
        finally:
            holder.kill()
            holder.wait()

    return held
