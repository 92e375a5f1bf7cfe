"""Domains generate units: pieces of declarative knowledge with executable meaning."""

from inweights.domains.base import Unit
from inweights.domains.grammars import GrammarsDomain
from inweights.domains.programs import ProgramsDomain

DOMAINS = {"programs": ProgramsDomain, "grammars": GrammarsDomain}

__all__ = ["DOMAINS", "GrammarsDomain", "ProgramsDomain", "Unit"]
