"""A training recipe read from the data: statistics of the training split -> config values, each with its reason.

rules.py holds the pure rules; config.py merges them under the user's -c/-o values into the config `detkit train` runs.
"""
from detkit.recipe.config import TrainingConfig, format_recipe, split_recipe, training_config
from detkit.recipe.rules import Choice, Recipe, RecipeOptions, make_recipe

__all__ = ["Choice", "Recipe", "RecipeOptions", "TrainingConfig", "format_recipe", "make_recipe",
           "split_recipe", "training_config"]
