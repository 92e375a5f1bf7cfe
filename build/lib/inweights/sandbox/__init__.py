"""Isolated execution of untrusted code (see core.py for what is contained and how)."""

from inweights.sandbox.core import Limits, Program, Verdict, run_many, run_program

__all__ = ["Limits", "Program", "Verdict", "run_many", "run_program"]
