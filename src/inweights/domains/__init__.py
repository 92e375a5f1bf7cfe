"""Domains generate units: pieces of declarative knowledge with executable meaning.

Importing this package registers the built-in domains (``DOMAINS``); ``register_domain`` adds yours.
"""

from inweights.domains.base import DOMAINS, Domain, Unit, domain_class, make_domain, register_domain
from inweights.domains.coding import CodingDomain
from inweights.domains.documents import DocumentsDomain
from inweights.domains.grammars import GrammarsDomain
from inweights.domains.mbpp import MBPPDomain
from inweights.domains.planning import PlanningDomain
from inweights.domains.programs import ProgramsDomain
from inweights.domains.rules import RulesDomain

__all__ = ["DOMAINS", "CodingDomain", "DocumentsDomain", "Domain", "GrammarsDomain", "MBPPDomain", "PlanningDomain", "ProgramsDomain", "RulesDomain",
           "Unit", "domain_class", "make_domain", "register_domain"]
