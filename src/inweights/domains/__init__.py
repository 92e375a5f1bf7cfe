"""Domains generate units: pieces of declarative knowledge with executable meaning."""

from inweights.domains.base import Unit
from inweights.domains.grammars import GrammarsDomain
from inweights.domains.planning import PlanningDomain
from inweights.domains.programs import ProgramsDomain
from inweights.domains.rules import RulesDomain

DOMAINS = {"programs": ProgramsDomain, "grammars": GrammarsDomain, "rules": RulesDomain, "planning": PlanningDomain}

__all__ = ["DOMAINS", "GrammarsDomain", "PlanningDomain", "ProgramsDomain", "RulesDomain", "Unit"]
