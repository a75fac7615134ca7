"""The closed loop of an `[[adaptive]]` source (docs/adaptive.md) as stage functions of the study layer: it
composes the analysis (per-class curves, the allocator), prompts, generation and training.

Per round r of a source with scales S_0 < S_1 < ...:
- `allocate_round`: per-class curves of every candidate configuration, from its pilot models (each candidate
  trained on its own class-balanced set at the pilot scales) and from the models of the rounds before (each class a
  point of the configuration that drew most of its images), with bootstrap intervals on k; then the round's images
  (S_r less what earlier rounds generated) split across (class, configuration) pairs by synscale.analysis.allocate.
  The same stage writes the uniform control's allocation: the pilot's best candidate, class-balanced, at S_r.
- `generate_round`: for one arm (adaptive or uniform), only the images the allocation added, each (class, i) with
  a prompt and seed of its own (synscale.prompts.strategies.item_prompts), one resumable generate stage per
  configuration; the round's record lists those sets and every earlier round's, so round r's set holds round r-1's.
- `train_round`: the recipe on every image of the round's sets at scale S_r.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synscale.atomic import read_json
from synscale.stage import Context, StageResult, run_stage

ARMS = ("adaptive", "uniform")


def allocate_round(ctx: Context, *, pilot: tuple[StageResult, ...], previous: tuple[StageResult, ...],
                   evals: tuple[StageResult, ...], ac: Any, candidates: list[str], pilot_scales: list[int],
                   round: int) -> StageResult:
    """Round `round`'s allocation of adaptive config `ac` (allocation.parquet, curves.parquet, decision.json).
    `pilot[i]`: the validation evaluation of candidate i // len(pilot_scales) at pilot scale i % len(pilot_scales);
    `previous[j]`, `evals[j]`: round j's allocation and its adaptive model's validation evaluation (j < round)."""
    from synscale.schema import identity

    params = {"adaptive": identity(ac), "round": round, "candidates": candidates, "pilot_scales": pilot_scales}
    inputs = {**{f"pilot{i}": s.id for i, s in enumerate(pilot)}, **{f"alloc{j}": s.id for j, s in enumerate(previous)},
              **{f"eval{j}": s.id for j, s in enumerate(evals)}}
    res = run_stage(pilot[0].root, "allocate", params, inputs,
                    lambda out: _allocate(out, pilot, previous, evals, ac, candidates, pilot_scales, round))
    d = read_json(res.path / "decision.json")
    ctx.log(f"{ac.name} round {round + 1}: {d['images']:,} images to {d['scale']:,}; best candidate {d['primary']}"
            + (f"; classes moved off it: {', '.join(d['moved'])}" if d["moved"] else ""))
    return res


def _examples(ev: StageResult) -> tuple[Any, Any]:
    import pandas as pd

    ex = pd.read_parquet(ev.path / "examples.parquet", columns=["loss", "label"])
    return ex["loss"].to_numpy(), ex["label"].to_numpy()


def _allocate(out: Path, pilot: tuple[StageResult, ...], previous: tuple[StageResult, ...],
              evals: tuple[StageResult, ...], ac: Any, candidates: list[str], pilot_scales: list[int], r: int) -> None:
    import pandas as pd

    from synscale.analysis.allocate import ClassCurve, fit_class_curves, spend
    from synscale.analysis.run import categorise

    obs, examples, classes = _observations(pilot, previous, evals, candidates, pilot_scales)
    d_ref = float(max(pilot_scales))  # the curves' reference scale: perf_at_DI is -log L at the largest pilot scale
    fits = fit_class_curves(obs, examples, classes, d_ref, ac.bootstrap, ac.confidence, seed=r)
    top_loss = {candidates[i // len(pilot_scales)]: float(examples[f"pilot{i}"][0].mean())
                for i in range(len(pilot)) if i % len(pilot_scales) == len(pilot_scales) - 1}
    primary = min(candidates, key=lambda c: (top_loss[c], candidates.index(c)))
    own = fits[fits.config == primary].sort_values("class_index")
    category = dict(zip(own.class_index, categorise(own.k.to_numpy(), own.perf_at_DI.to_numpy()), strict=True))
    movable = {c for c in range(classes) if ac.regenerate == "all" or category.get(c) == "poor"}
    rejected = _rejected_moves(obs, examples, fits, primary, classes, d_ref)
    curves = [ClassCurve(int(f.class_index), str(f.config), f.k, f.perf_at_DI, d_ref, classes, f.k_lo, f.k_hi)
              for f in fits.itertuples() if f.config == primary or (f.class_index in movable
                                                                   and (f.class_index, f.config) not in rejected)]
    have: dict[tuple[int, str], int] = {}
    if previous:
        last = pd.read_parquet(previous[-1].path / "allocation.parquet")
        for f in last[last.arm == "adaptive"].itertuples():
            have[(int(f.class_index), str(f.config))] = int(f.have + f.added)
    budget = ac.scales[r] - sum(have.values())
    alloc = spend(curves, have, budget, ac.step or classes, {c: primary for c in range(classes)},
                  _floors(ac, r, curves, classes, pilot_scales), _caps(ac, fits))
    kept = [{"class_index": c, "config": g, "have": n, "added": 0, "eligible": False,
             "why": "drawn in earlier rounds; not a candidate for the class this round"}
            for (c, g), n in have.items() if not ((alloc.class_index == c) & (alloc.config == g)).any()]
    if kept:  # every pair an earlier round drew stays in the table: the next round counts its images
        alloc = pd.concat([alloc, pd.DataFrame(kept)], ignore_index=True)
    alloc = alloc.assign(arm="adaptive", round=r, category=alloc.class_index.map(category).fillna("other"))
    table = pd.concat([alloc, _uniform(ac, r, primary, classes, category)], ignore_index=True)
    table["class_index"] = table["class_index"].astype(int)
    table.to_parquet(out / "allocation.parquet", index=False)
    fits.assign(round=r, category=fits.class_index.map(category).where(fits.config == primary)).to_parquet(
        out / "curves.parquet", index=False)
    drawn = alloc[alloc.have + alloc.added > 0].groupby("class_index").apply(
        lambda g: g.loc[(g.have + g.added).idxmax(), "config"], include_groups=False)
    moved = sorted({str(c) for c in drawn.index if drawn[c] != primary})
    (out / "decision.json").write_text(json.dumps({
        "round": r, "scale": ac.scales[r], "images": int(budget), "primary": primary, "pilot_loss": top_loss,
        "moved": [f"class {c} to {drawn[int(c)]}" for c in moved]}, indent=1))


def _observations(pilot: tuple[StageResult, ...], previous: tuple[StageResult, ...], evals: tuple[StageResult, ...],
                  candidates: list[str], pilot_scales: list[int]) -> tuple[Any, dict[str, Any], int]:
    """(observations, per-example losses by model, classes) of the per-class curves: each pilot model a point of
    its candidate for every class; each round's model a point of the configuration that drew most of each class."""
    import pandas as pd

    from synscale.data.subsets import per_class_counts

    examples = {f"pilot{i}": _examples(s) for i, s in enumerate(pilot)}
    classes = int(max(int(lb.max()) for _, lb in examples.values()) + 1)
    obs = []
    for i in range(len(pilot)):
        config, scale = candidates[i // len(pilot_scales)], pilot_scales[i % len(pilot_scales)]
        obs += [{"config": config, "class_index": c, "n": int(n), "model": f"pilot{i}", "source": "pilot"}
                for c, n in enumerate(per_class_counts(scale, classes))]
    for j, (alloc, ev) in enumerate(zip(previous, evals, strict=True)):  # refit: each class a point of its drawer
        a = pd.read_parquet(alloc.path / "allocation.parquet")
        a = a[a.arm == "adaptive"].assign(n=lambda t: t.have + t.added)
        examples[f"round{j}"] = _examples(ev)
        for c, g in a.groupby("class_index"):
            top = g.loc[g.n.idxmax()]
            obs.append({"config": top.config, "class_index": int(c), "n": int(g.n.sum()), "model": f"round{j}",
                        "source": f"round {j + 1}"})
    return pd.DataFrame(obs), examples, classes


def _floors(ac: Any, r: int, curves: list[Any], classes: int, pilot_scales: list[int]) -> dict[int, int]:
    """Per class the images it holds whatever its forecast. A class whose scaling no curve tells from none (while
    some class's does) is held at its class-balanced share of the round's scale: nothing spent past it, nothing
    taken from it; every other class holds at least `base` of that share (base 0: the smallest pilot count)."""
    from synscale.data.subsets import per_class_counts

    share = per_class_counts(ac.scales[r], classes)
    least = int(per_class_counts(min(pilot_scales), classes).min())
    any_scales = any(c.scales for c in curves)
    return {c: int(share[c]) if any_scales and not any(x.scales for x in curves if x.class_index == c)
            else int(ac.base * share[c]) if ac.base else least for c in range(classes)}


def _caps(ac: Any, fits: Any) -> dict[int, int]:
    """Per class the most images it may hold: `reach` times the largest count its curves were fitted on."""
    return {int(c): int(ac.reach * n) for c, n in fits.groupby("class_index").n_max.max().items()}


def _uniform(ac: Any, r: int, primary: str, classes: int, category: dict[int, str]) -> Any:
    """The uniform control's rows of round `r`: the best candidate, class-balanced, up to the round's scale."""
    import numpy as np
    import pandas as pd

    from synscale.data.subsets import per_class_counts

    have, now = per_class_counts(ac.scales[r - 1] if r else 0, classes), per_class_counts(ac.scales[r], classes)
    return pd.DataFrame({"class_index": np.arange(classes), "config": primary, "have": have, "added": now - have,
                         "eligible": True, "why": "class-balanced", "arm": "uniform", "round": r,
                         "category": [category.get(c, "other") for c in range(classes)]})


def _rejected_moves(obs: Any, examples: dict[str, tuple[Any, Any]], fits: Any, primary: str, classes: int,
                    d_ref: float) -> set[tuple[int, str]]:
    """(class, configuration) moves off the best candidate that a round tried and that did not pay: the class's
    loss in that round's model, drawn mostly by the other configuration, was no lower than the best candidate's
    own curve forecasts at the same count. Such a class goes back to the best candidate and stays there."""
    from synscale.analysis.allocate import ClassCurve

    own = {int(f.class_index): f for f in fits[fits.config == primary].itertuples()}
    out = set()
    for o in obs[(obs.source != "pilot") & (obs.config != primary)].itertuples():
        f = own.get(int(o.class_index))
        if f is None:
            continue
        loss, label = examples[o.model]
        measured = float(loss[label == o.class_index].mean())
        forecast = ClassCurve(int(o.class_index), primary, f.k, f.perf_at_DI, d_ref, classes).loss(o.n)
        if measured >= forecast:
            out.add((int(o.class_index), str(o.config)))
    return out


def generate_round(ctx: Context, *, train: StageResult, captions: tuple[StageResult | None, ...],
                   allocation: StageResult, previous: StageResult | None, syns: tuple[Any, ...], data: Any, arm: str,
                   round: int, name: str) -> StageResult:
    """One arm's images of a round: per candidate configuration `syns[j]` (its caption pool `captions[j]`), the
    (class, i) images its allocation added, generated into a resumable set of their own; then the round's record
    (round.json): those sets and `previous`'s (the arm's round before)."""
    import pandas as pd

    from synscale.data.stages import image_format
    from synscale.generate.runner import prompts_hash
    from synscale.generate.stages import generate_stage, identity
    from synscale.labels import LabelSet
    from synscale.prompts.strategies import item_prompts, make_context

    alloc = pd.read_parquet(allocation.path / "allocation.parquet")
    alloc = alloc[(alloc.arm == arm) & (alloc.added > 0)]
    labels = LabelSet.load(train.path / "labels.json")
    resolution, channels = image_format(train)
    sets = []
    for j, syn in enumerate(syns):
        mine = alloc[alloc.config == syn.name]
        if not len(mine):
            continue
        items = [(int(r.class_index), i) for r in mine.itertuples() for i in range(int(r.have), int(r.have + r.added))]
        pool = None
        if syn.strategy == "in-captions":
            from synscale.prompts.stages import read_caption_pool

            pool = read_caption_pool(captions[j])
        prompts = item_prompts(syn.strategy, make_context(labels, data.dataset, captions=pool), items, syn.seed,
                               key_prefix=f"g{j}-")
        params = {"synthetic": identity(syn), "items": "class-index", "resolution": resolution, "channels": channels,
                  "prompts": prompts_hash(prompts)}
        gen = generate_stage(syn, prompts, labels, resolution, channels, params, train, {"labels": train.id}, ctx.log,
                             f"{name} round {round + 1} ({arm}): {syn.name}")
        sets.append({"config": syn.name, "id": gen.id, "images": len(prompts), "round": round})
    earlier = read_json(previous.path / "round.json")["sets"] if previous is not None else []
    inputs = {"allocation": allocation.id, **({"previous": previous.id} if previous is not None else {}),
              **{f"set{i}": s["id"] for i, s in enumerate(sets)}}

    def fn(out: Path) -> None:
        (out / "round.json").write_text(json.dumps({"arm": arm, "round": round, "sets": earlier + sets}, indent=1))

    return run_stage(train.root, "round", {"arm": arm, "round": round}, inputs, fn)


def round_sets(round_stage: StageResult) -> list[StageResult]:
    """The generated sets a round's record lists (its own and every earlier round's)."""
    root = round_stage.root
    return [StageResult("generate", s["id"], root / "stages" / "generate" / s["id"], True)
            for s in read_json(round_stage.path / "round.json")["sets"]]


def train_round(ctx: Context, *, round: StageResult, tc: Any, scale: int, name: str) -> StageResult:
    """The recipe `tc` on every image of a round's sets (`scale` of them)."""
    from synscale.data.shards import read_manifest
    from synscale.data.stages import key_subset
    from synscale.errors import DataError
    from synscale.train.stages import train

    sets = round_sets(round)
    have = sum(len(read_manifest(s.path)) for s in sets)
    if have != scale:
        raise DataError(f"{round.path}: the round's sets hold {have:,} images, not its scale {scale:,}; "
                        "delete the round's stage to make it again")
    parts = tuple(x for s in sets for x in (s, key_subset(ctx, set_stage=s, keys=read_manifest(s.path)["key"].tolist(),
                                                          why="all")))
    return train(ctx, parts=parts, tc=tc, scale=scale, name=name)

