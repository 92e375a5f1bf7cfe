"""The experiment regime's own checks before any work: every recipe's stages (names, suffixes, groups that must
hold units, representations the instances are shown in), handed to the shared preflight (``check_units_and_stages``),
which measures their truncation."""

from __future__ import annotations

import random
from typing import Any

from inweights.config import ExperimentConfig
from inweights.core.errors import UserError
from inweights.curriculum import select
from inweights.domains.capabilities import FreshUnits, need
from inweights.regimes.experiment.pbb import stages_for


def recipe_stages(cfg: ExperimentConfig, domain, units) -> dict[str, Any]:
    """name -> StageConfig of every stage of every recipe, each checked: its groups hold units."""
    names = list(cfg.recipes)
    if cfg.sweep:
        names += [cfg.sweep.reference] + [f"demos_only@k{k}" for k in cfg.sweep.demos_k]
    out = {}
    for recipe in dict.fromkeys(names):
        try:
            stages = stages_for(recipe.partition(":")[0], cfg)
        except (ValueError, KeyError) as e:
            raise UserError(f"recipe '{recipe}': {e}") from None
        for st in stages:
            for item in st.mixture:
                if item.group == "fresh":  # drawn per example: the domain must be able to draw them
                    if not units:
                        raise UserError(f"recipe '{recipe}', stage {st.name}: no units")
                    try:
                        need(domain, FreshUnits, "needs fresh units").fresh_unit(random.Random(0), "prepare", set())
                    except UserError as e:
                        raise UserError(f"recipe '{recipe}', stage {st.name}: group fresh: {e}") from None
                    continue
                if not select(units, item.group):
                    raise UserError(f"recipe '{recipe}', stage {st.name}: group {item.group} has no units "
                                    f"{domain.why_empty(item.group)}")
                if item.representation is not None:  # planning: the instances must be shown in it
                    missing = next((u for u in select(units, item.group)
                                    if u.train_inputs and item.representation not in u.train_inputs), None)
                    if missing is not None:
                        raise UserError(f"recipe '{recipe}', stage {st.name}: trains on the {item.representation} "
                                        f"representation, which the {item.group} instances are not shown in "
                                        f"({', '.join(missing.train_inputs)}); add it to domain.planning.representations, or "
                                        f"drop the recipe")
            out[st.name] = st
    return out
