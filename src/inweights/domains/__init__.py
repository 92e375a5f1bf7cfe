"""Domains generate units: pieces of declarative knowledge with executable meaning."""

from inweights.domains.base import Unit
from inweights.domains.programs import ProgramsDomain

DOMAINS = {"programs": ProgramsDomain}

__all__ = ["DOMAINS", "ProgramsDomain", "Unit"]
