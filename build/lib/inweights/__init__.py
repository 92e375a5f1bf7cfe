"""inweights: teach language models behaviours from declarative knowledge, and measure whether they
now live in the weights."""

__version__ = "0.1.0"

from inweights.api import RunResult, load_run, run
from inweights.core.errors import UserError

__all__ = ["RunResult", "UserError", "__version__", "load_run", "run"]
