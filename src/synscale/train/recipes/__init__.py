"""Training recipes as data: each `<name>.toml` here is a `[train]` table (synscale.config.TrainConfig).

A study selects one with `train.recipe = "<name>"` (or `--set train.recipe=<name>`; CLIP's recipes in
`[clip.train]`); the keys the study writes in the table override the recipe's. A recipe's `task` says
what it trains: `classification` (the default) or `contrastive` (CLIP). `synscale recipes` lists them; `synscale recipes NAME` prints one.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

from synscale.errors import UserError


class RecipeError(UserError, ValueError):
    """An unknown recipe name."""


TASK_ORDER = ("classification", "contrastive")


def recipe_names() -> list[str]:
    """The shipped recipes, the classifiers' first, then CLIP's (each group sorted by name)."""
    names = sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml"))
    return sorted(names, key=lambda n: TASK_ORDER.index(load_recipe(n).get("task", "classification")))


def recipe_text(name: str) -> str:
    path = resources.files(__name__).joinpath(f"{name}.toml")
    if not path.is_file():
        raise RecipeError(f"unknown recipe {name!r}; known: {', '.join(recipe_names())}")
    return path.read_text()


def load_recipe(name: str) -> dict[str, Any]:
    """The recipe's `[train]` table (without the `recipe` key itself)."""
    return tomllib.loads(recipe_text(name))
