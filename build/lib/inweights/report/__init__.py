"""Reports: summary.json, report.md and PNG plots of a run directory."""

from inweights.report.markdown import write_report

__all__ = ["write_report"]
