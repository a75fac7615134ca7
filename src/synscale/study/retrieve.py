"""The retrieval control of a `[[retrieved]]` source (docs/adaptive.md), a stage of the study layer: it composes a
CLIP model (train), prompts, and the retrieval core (synscale.data.retrieval) into a labelled set that is scaled
and fitted like any other source.

For each class, prompts of the source's strategy (as many as the class's images at the largest scale; identical
prompts are one query) are embedded by the CLIP text tower and the pool's images by its image tower; pool images
whose thumbnail correlates with an evaluation image's at `dedup` or above are dropped first
(synscale.data.retrieval.thumbnails); each class then takes its nearest pool images,
every image at most once, best pairs first (synscale.data.retrieval.assign), labelled by the prompt's class. Where a
class falls short the candidates per query double until it has its quota or the pool is spent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from synscale.atomic import read_json
from synscale.data.retrieval import THUMB, unit
from synscale.errors import ConfigError, DataError
from synscale.schema import identity, to_dict
from synscale.stage import Context, StageResult, run_stage


def retrieve(ctx: Context, *, train: StageResult, exclude: StageResult | None, clip: StageResult | None,
             eval_sets: tuple[StageResult, ...], rc: Any, clip_tc: Any, dataset: str, size: int,
             shard_size: int, templates: str = "") -> StageResult:
    """`rc`'s (synscale.config.RetrievedConfig) set of `size` images in the label space of the real training split
    `train`; `exclude`: the subset of `train` the real classifier curve trains on (kept out of a "train" pool);
    `clip`: the study's CLIP train stage (clip = "study", trained with `clip_tc`); `eval_sets`: the sets whose
    near-duplicates are dropped from the pool; `templates`: the zero-shot templates of strategy "templates"."""
    params = {"retrieved": identity(rc), "size": size, "shard_size": shard_size, "dedup_on": f"thumbnails-{THUMB}",
              **({"templates": templates} if rc.strategy == "templates" else {}),
              **({"clip_train": identity(clip_tc)} if clip is not None else {})}
    inputs = {"labels": train.id, **({"exclude": exclude.id} if exclude is not None else {}),
              **({"clip": clip.id} if clip is not None else {}), **{f"eval{i}": s.id for i, s in enumerate(eval_sets)}}
    res = run_stage(train.root, "retrieved", params, inputs,
                    lambda out: _retrieve(out, ctx, train, exclude, clip, eval_sets, rc, clip_tc, dataset, size,
                                          shard_size, templates))
    s = read_json(res.path / "retrieval.json")
    ctx.log.stage(f"retrieve {rc.name}: {s['images']:,} of a pool of {s['pool']:,}, {s['duplicates']:,} near-duplicates"
                  " of evaluation images dropped" + (f", {s['precision']:.0%} labelled as the pool's own labels"
                                                    if s.get("precision") is not None else ""), res)
    return res


def _pool(rc: Any, train: StageResult, exclude: StageResult | None) -> tuple[Path, list[str]]:
    """The pool's set directory and the keys that may be taken."""
    import pandas as pd

    from synscale.data.shards import read_manifest

    if rc.pool == "train":
        keys = read_manifest(train.path)["key"].astype(str)
        if exclude is not None:
            taken = set(pd.read_parquet(exclude.path / "subset.parquet")["key"].astype(str))
            keys = keys[~keys.isin(taken)]
        return train.path, keys.tolist()
    path = Path(rc.pool).expanduser()
    try:
        keys = read_manifest(path)["key"].astype(str).tolist()
    except FileNotFoundError:
        raise ConfigError(f"retrieved {rc.name!r}: pool {rc.pool!r} is not a synscale set (no manifest.parquet); "
                          'give a set directory, or "train"') from None
    return path, keys


class _Embedder:
    """A CLIP model's normalised image and text embeddings: the study's own CLIP, or open_clip weights."""

    def __init__(self, rc: Any, clip: StageResult | None, clip_tc: Any) -> None:
        import torch

        self.rc, self.torch = rc, torch
        if clip is not None:
            from synscale.atomic import read_json
            from synscale.metrics.features import load_reference
            from synscale.train.clip import tokenizer
            from synscale.train.stages import load_model

            meta = read_json(clip.path / "train.json")
            self.ref = load_reference("trained", "", meta["num_classes"], None, "auto", trained=clip,
                                      train_cfg=to_dict(clip_tc))
            self.ref.autocast = None
            self.model, self.tok = load_model(clip, to_dict(clip_tc)), tokenizer(clip_tc.model)
            self.preprocess = None
        else:
            self.ref = None
            self.model, self.preprocess, self.tok = _open_clip(rc)

    def images(self, set_dir: Path, keys: list[str] | None, progress: bool) -> np.ndarray:
        if self.ref is not None:
            from synscale.metrics.features import extract

            return unit(extract(self.ref, set_dir, keys, progress=progress).feats)
        from PIL import Image

        from synscale.data.encoding import decode_stored
        from synscale.data.shards import iter_samples

        order = {k: i for i, k in enumerate(keys)} if keys is not None else None
        feats, at, batch = [], [], []

        def flush() -> None:
            with self.torch.no_grad():
                feats.append(self.model.encode_image(self.torch.stack(batch)).float().numpy())
            batch.clear()

        for i, (key, data, _) in enumerate(iter_samples(set_dir, keys)):
            img = decode_stored(data, f"{set_dir}: {key}")
            batch.append(self.preprocess(Image.fromarray(img).convert("RGB")))
            at.append(order[key] if order is not None else i)
            if len(batch) == 256:
                flush()
        if batch:
            flush()
        out = np.concatenate(feats) if feats else np.zeros((0, 1), np.float32)
        return unit(out[np.argsort(at)])

    def texts(self, texts: list[str]) -> np.ndarray:
        with self.torch.no_grad():
            return unit(self.model.encode_text(self.tok(texts)).float().cpu().numpy())


def _open_clip(rc: Any) -> tuple[Any, Any, Any]:
    """open_clip ARCH with the weights file WEIGHTS of `clip = "open_clip:ARCH:WEIGHTS"` (safetensors, or a torch
    state dict read with weights_only), its evaluation transform and tokenizer."""
    import open_clip
    import torch

    from synscale.train.clip import create_clip, tokenizer

    _, arch, weights = rc.clip.split(":", 2)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"retrieved {rc.name!r}: clip weights {weights!r}: no such file")
    model = create_clip(arch)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise ConfigError(f"retrieved {rc.name!r}: {weights} is not a state dict of {arch} (missing {missing[:3]}...)")
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    return model.eval(), open_clip.image_transform(size, is_train=False), tokenizer(arch)


def _retrieve(out: Path, ctx: Context, train: StageResult, exclude: StageResult | None, clip: StageResult | None,
              eval_sets: tuple[StageResult, ...], rc: Any, clip_tc: Any, dataset: str, size: int,
              shard_size: int, templates: str) -> None:
    import pandas as pd

    from synscale.data.retrieval import near_duplicates, thumbnails
    from synscale.data.shards import read_manifest
    from synscale.data.subsets import per_class_counts
    from synscale.labels import LabelSet

    labels = LabelSet.load(train.path / "labels.json")
    quota = {c: int(n) for c, n in enumerate(per_class_counts(size, len(labels)))}
    pool_dir, keys = _pool(rc, train, exclude)
    if len(keys) < size:
        raise DataError(f"retrieved {rc.name!r}: the pool has {len(keys):,} images that may be taken, fewer than the "
                        f"largest scale's {size:,}; lower its scales or give a larger pool")
    emb, quiet = _Embedder(rc, clip, clip_tc), ctx.log.quiet
    pool = emb.images(pool_dir, keys, not quiet)
    dup, thumbs = np.zeros(len(keys), bool), thumbnails(str(pool_dir), keys)
    for s in eval_sets:
        dup |= near_duplicates(thumbs, thumbnails(str(s.path)), rc.dedup)
    queries = _queries(rc, labels, dataset, max(quota.values()), templates)
    q_emb = emb.texts(queries["prompt"].tolist())
    chosen, k = _assign_all(q_emb, pool, ~dup, queries["class_index"].to_numpy(), quota, rc.candidates)
    short = {c: quota[c] - len(v) for c, v in chosen.items() if len(v) < quota[c]}
    if short:
        c = min(short)
        raise DataError(f"retrieved {rc.name!r}: class {labels.names[c]!r} found {len(chosen[c]):,} pool images, not "
                        f"{quota[c]:,} (the pool, less near-duplicates of the evaluation sets, is spent); lower its scales")
    manifest = read_manifest(pool_dir).set_index("key")
    rows = []
    for c, idx in chosen.items():
        best = (pool[idx] @ q_emb[queries["class_index"].to_numpy() == c].T).max(1)  # its best prompt's similarity
        for rank, (i, s) in enumerate(zip(idx, best, strict=True)):
            key = keys[i]
            true = int(manifest.at[key, "label"]) if "label" in manifest.columns else -1
            rows.append({"key": key, "class_index": c, "rank": rank, "similarity": float(s), "pool_label": true})
    table = pd.DataFrame(rows)
    _write_set(out, pool_dir, table, labels, shard_size)
    table.to_parquet(out / "retrieval.parquet", index=False)
    has = table.pool_label >= 0
    precision = float((table.pool_label == table.class_index)[has].mean()) if has.any() else None
    (out / "retrieval.json").write_text(json.dumps({
        "pool": len(keys), "duplicates": int(dup.sum()), "images": len(table), "queries": len(queries),
        "candidates_per_query": int(k), "precision": precision}, indent=1))


def _queries(rc: Any, labels: Any, dataset: str, per_class: int, templates: str) -> Any:
    """The retrieval's distinct (class_index, prompt) queries: the zero-shot templates filled with each class's
    name (strategy "templates"), or the strategy's prompts of `per_class` images per class."""
    import pandas as pd

    if rc.strategy == "templates":
        from synscale.train.clip import zero_shot_names
        from synscale.train.templates import load_templates

        names = zero_shot_names(labels.names, labels.wnids)
        rows = [(c, t.format(n) if isinstance(t, str) else t(n)) for c, n in enumerate(names)
                for t in load_templates(templates)]
        return pd.DataFrame(rows, columns=["class_index", "prompt"]).drop_duplicates().reset_index(drop=True)
    from synscale.prompts.strategies import make_context, make_prompts

    prompts = make_prompts(rc.strategy, make_context(labels, dataset), per_class, rc.seed)
    return prompts.drop_duplicates(["class_index", "prompt"]).reset_index(drop=True)[["class_index", "prompt"]]


def _assign_all(q_emb: np.ndarray, pool: np.ndarray, keep: np.ndarray, q_class: np.ndarray, quota: dict[int, int],
                k: int) -> tuple[dict[int, list[int]], int]:
    """Pool rows per class (synscale.data.retrieval.assign), the candidates per query doubled until every class
    has its quota or every query sees the whole pool."""
    from synscale.data.retrieval import assign, top_k

    while True:
        k = min(k, int(keep.sum()))
        idx, sims = top_k(q_emb, pool, k, keep)
        chosen = assign(idx, sims, q_class, quota)
        if all(len(v) >= quota[c] for c, v in chosen.items()) or k >= int(keep.sum()):
            return chosen, k
        k *= 2


def _write_set(out: Path, pool_dir: Path, table: Any, labels: Any, shard_size: int) -> None:
    """The chosen pool images under their own keys, labelled by the prompts' classes."""
    from synscale.data.encoding import decode_stored
    from synscale.data.shards import ShardWriter, iter_samples

    by_key = {r.key: r for r in table.itertuples()}
    images = {key: decode_stored(data, f"{pool_dir}: {key}") for key, data, _ in iter_samples(pool_dir, list(by_key))}
    with ShardWriter(out, labels, shard_size) as w:
        for r in table.sort_values(["class_index", "rank"]).itertuples():
            w.write(r.key, images[r.key], int(r.class_index), {"similarity": round(r.similarity, 6),
                                                                "pool_label": int(r.pool_label)})
