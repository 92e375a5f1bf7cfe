"""Regimes, one package each: ``experiment`` (PBB and the symbolic -> natural-language curricula),
``rule_distill`` and ``ilf``. A regime's package holds its config section (``config.py``: the section and its
recipe names), its run (the plan of stages), its recipes and its report. The registry that the command line
asks is ``inweights.regimes.registry``; this file imports nothing, so a regime's ``config`` module can be read
by ``inweights.config`` (which composes the sections) without loading the registry."""
