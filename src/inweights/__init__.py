"""inweights: teach language models behaviours from declarative knowledge, and measure whether they
now live in the weights."""

__version__ = "0.1.0"
