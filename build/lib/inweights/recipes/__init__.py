"""Curricula by name. A recipe is data: a function from the config to a list of stages."""

from inweights.recipes.pbb import RECIPES

__all__ = ["RECIPES"]
