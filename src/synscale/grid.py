"""A study's grid of synthetic configurations, as the paper ran it (appendix C): many configurations at one
data scale, scaling curves for a few.

`[[grid]]` tables expand into `[[synthetic]]` configurations: every combination of their `model`,
`strategy` and `guidance` lists (each a value or a list), with the table's other keys (any `[[synthetic]]`
key: steps, batch_size, ...) shared. Names come from the `name` pattern (default
"{model}-{strategy}-g{guidance}"; {model} is ld / pd / mt for the built-in families, else the pipeline
directory's name). A configuration in two tables is one configuration (the first table's name).

Grid configurations are trained at the study's largest scale only, unless `curves` selects them: by name,
"all", or "best" / "worst" — the configurations with the lowest / highest validation loss at that scale,
picked when the grid's models have been evaluated (synscale.study's `select` stage), which then get models
at every scale. `[[mix]] synthetic` may name "best" or "worst" too.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from synscale.modelref import builtin_family
from synscale.schema import ConfigError

PICKS = ("best", "worst")
GRID_KEYS = ("model", "strategy", "guidance")
DEFAULT_NAME = "{model}-{strategy}-g{guidance}"
SHORT = {"latent-diffusion": "ld", "pixel-diffusion": "pd", "masked-token": "mt"}


def short_model(model: str) -> str:
    """ld / pd / mt for a built-in family, else the last part of the pipeline's path or hub id."""
    builtin = builtin_family(model)
    if builtin:
        return SHORT.get(builtin[0], builtin[0])
    return Path(model.rstrip("/")).name or model


def fmt_guidance(g: float) -> str:
    return f"{g:g}"


def expand_grid(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """The study table with its `grid` tables expanded into `synthetic` entries (after any written ones).
    The `grid` key stays, for the record."""
    grid = raw.get("grid")
    if not grid:
        return raw
    if not isinstance(grid, list) or not all(isinstance(t, dict) for t in grid):
        raise ConfigError(f"{source}: grid must be a list of tables ([[grid]])")
    scales = raw.get("scales") or []
    curves = raw.get("curves") or []
    if not isinstance(curves, list):
        raise ConfigError(f"{source}: 'curves' must be a list of configuration names, 'best', 'worst' or 'all'")
    top = [max(scales)] if isinstance(scales, list) and scales and all(isinstance(s, int) for s in scales) else []
    written = [t for t in raw.get("synthetic", []) if isinstance(t, dict)] if isinstance(raw.get("synthetic"), list) else []
    seen: dict[tuple[Any, ...], str] = {}
    names = {t.get("name") for t in written}
    out = []
    for i, table in enumerate(grid):
        where = f"grid[{i}]"
        if "model" not in table:
            raise ConfigError(f"{source}: {where} needs 'model' (a model or a list of models)")
        lists = {}
        for key in GRID_KEYS:
            value = table.get(key, [] if key != "model" else None)
            value = value if isinstance(value, list) else [value]
            if key in table and not value:
                raise ConfigError(f"{source}: {where}.{key} is an empty list; give at least one value")
            lists[key] = value
        lists["strategy"] = lists["strategy"] or ["classname"]
        lists["guidance"] = lists["guidance"] or [2.0]
        pattern = table.get("name", DEFAULT_NAME)
        rest = {k: v for k, v in table.items() if k not in (*GRID_KEYS, "name")}
        for model, strategy, guidance in itertools.product(lists["model"], lists["strategy"], lists["guidance"]):
            if not isinstance(model, str) or not isinstance(strategy, str) or isinstance(guidance, bool) \
                    or not isinstance(guidance, int | float):
                raise ConfigError(f"{source}: {where}: model and strategy must be strings and guidance a number, "
                                  f"got {model!r}, {strategy!r}, {guidance!r}")
            entry = {"model": model, "strategy": strategy, "guidance": float(guidance), **rest}
            ident = tuple(sorted((k, repr(v)) for k, v in entry.items()))
            if ident in seen:
                continue
            try:
                name = pattern.format(model=short_model(model), strategy=strategy, guidance=fmt_guidance(guidance))
            except (KeyError, IndexError, ValueError) as e:
                raise ConfigError(f"{source}: {where}.name {pattern!r}: only {{model}}, {{strategy}} and "
                                  f"{{guidance}} may appear ({e})") from None
            if name in names:
                raise ConfigError(f"{source}: {where} makes a configuration named {name!r}, which another one has; "
                                  "give the grid a 'name' pattern that tells them apart")
            seen[ident] = name
            names.add(name)
            if "scales" not in rest and "all" not in curves and name not in curves:
                entry["scales"] = top
            out.append({"name": name, **entry})
    return {**raw, "synthetic": [*raw.get("synthetic", []), *out]}


def check_curves(cfg: Any) -> None:
    """`curves` names configurations that exist, or best / worst / all (raises ValueError). A study without
    classifier scales (CLIP only) trains no curves: nothing to check."""
    if not cfg.scales:
        return
    names = [c.name for c in cfg.synthetic]
    for c in cfg.curves:
        if c not in (*PICKS, "all") and c not in names:
            raise ValueError(f"curves: {c!r} is not a synthetic configuration, 'best', 'worst' or 'all' "
                             f"(configurations: {', '.join(names) or 'none'})")
    if (any(c in PICKS for c in cfg.curves) or any(m.synthetic in PICKS for m in cfg.mix)) and not candidates(cfg):
        raise ValueError("curves: 'best' and 'worst' pick among the synthetic configurations trained at the largest "
                         "scale; this study has none")


def candidates(cfg: Any) -> list[Any]:
    """The synthetic configurations with a model at the study's largest scale: best / worst pick among them."""
    top = max(cfg.scales) if cfg.scales else 0
    return [c for c in cfg.synthetic if top in cfg.source_scales(c.name)]
