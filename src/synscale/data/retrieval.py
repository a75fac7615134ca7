"""The retrieval control of issue 30, its core: images taken from an unlabelled pool by the similarity of their
embeddings to prompt embeddings (a CLIP model's image and text towers), labelled by the prompt's class.

Embeddings are compared by cosine similarity (rows are normalised here). A pool of millions is scanned in chunks
with a running top k, so memory stays at one chunk's similarities; near-duplicates of the evaluation sets are
dropped from the pool first (cosine at or above a threshold to any evaluation image), so a retrieved training set
never holds a test image. Near-duplicates are judged on small grey thumbnails (`thumbnails`: 16 x 16, each centred
and normalised, so their cosine is the pixels' correlation), not on the CLIP embeddings, whose similarity says
"about the same thing" rather than "the same picture". Every pool image is used at most once: pairs are taken best first, each image by the
first class that claims it, each class up to its quota.
"""

from __future__ import annotations

import numpy as np

CHUNK = 65_536  # pool rows per similarity block


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity is then a dot product)."""
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


QUERY_CHUNK = 1024  # queries per block: a block of similarities is QUERY_CHUNK x CHUNK floats (256 MiB)


def top_k(queries: np.ndarray, pool: np.ndarray, k: int, keep: np.ndarray | None = None,
          chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(indices, similarities), each (queries, k), of the k pool rows most similar to each query, best first;
    `keep`: a boolean mask of the pool rows that may be taken. Fewer than k candidates: the rest is -1 / -inf.
    Queries go in blocks of QUERY_CHUNK and the pool in blocks of `chunk`: memory is one block of similarities."""
    parts = [_top_k(queries[i:i + QUERY_CHUNK], pool, k, keep, chunk) for i in range(0, len(queries), QUERY_CHUNK)]
    if not parts:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _top_k(queries: np.ndarray, pool: np.ndarray, k: int, keep: np.ndarray | None,
           chunk: int) -> tuple[np.ndarray, np.ndarray]:
    q, n = unit(queries), len(pool)
    best_i = np.full((len(q), k), -1, np.int64)
    best_s = np.full((len(q), k), -np.inf, np.float32)
    for start in range(0, n, chunk):
        block = unit(pool[start:start + chunk])
        sims = q @ block.T  # (queries, block)
        if keep is not None:
            sims[:, ~keep[start:start + len(block)]] = -np.inf
        idx = np.broadcast_to(np.arange(start, start + len(block)), sims.shape)
        all_s, all_i = np.concatenate([best_s, sims], 1), np.concatenate([best_i, idx], 1)
        part = np.argpartition(-all_s, min(k, all_s.shape[1] - 1), axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, part, 1), np.take_along_axis(all_i, part, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    best_i[~np.isfinite(best_s)] = -1
    return best_i, best_s


def near_duplicates(pool: np.ndarray, reference: np.ndarray, threshold: float, chunk: int = CHUNK // 16) -> np.ndarray:
    """A boolean mask of the pool rows whose cosine similarity to some `reference` row (the evaluation sets'
    images) is at least `threshold`."""
    ref, out = unit(reference), np.zeros(len(pool), bool)
    ref_chunk = QUERY_CHUNK * 16  # a block of similarities is at most chunk x ref_chunk floats
    for start in range(0, len(pool), chunk):
        block = unit(pool[start:start + chunk])
        for r in range(0, len(ref), ref_chunk):
            out[start:start + len(block)] |= (block @ ref[r:r + ref_chunk].T).max(axis=1, initial=-np.inf) >= threshold
    return out


def assign(indices: np.ndarray, sims: np.ndarray, labels: np.ndarray, quota: dict[int, int]) -> dict[int, list[int]]:
    """Pool rows per class from each query's candidates (`labels[i]`: query i's class): pairs best first, every
    pool row to the first class that claims it, each class up to `quota[class]`."""
    q, j = np.nonzero(indices >= 0)
    order = np.argsort(-sims[q, j], kind="stable")
    taken: set[int] = set()
    out: dict[int, list[int]] = {c: [] for c in quota}
    for qi, ji in zip(q[order], j[order], strict=True):
        row, c = int(indices[qi, ji]), int(labels[qi])
        if row in taken or c not in out or len(out[c]) >= quota[c]:
            continue
        taken.add(row)
        out[c].append(row)
    return out


THUMB = 16  # side of the thumbnails near-duplicates are judged on


def thumbnails(set_dir: str, keys: list[str] | None = None, side: int = THUMB) -> np.ndarray:
    """(N, side * side) centred, unit-norm grey thumbnails of a set's images (of `keys`, in that order)."""
    from PIL import Image

    from synscale.data.encoding import decode_stored
    from synscale.data.shards import iter_samples

    at = {k: i for i, k in enumerate(keys)} if keys is not None else None
    out = np.zeros((len(keys) if keys is not None else 0, side * side), np.float32)
    rows = []
    for i, (key, data, _) in enumerate(iter_samples(set_dir, keys)):
        img = Image.fromarray(decode_stored(data, f"{set_dir}: {key}")).convert("L").resize((side, side), Image.BILINEAR)
        v = np.asarray(img, np.float32).ravel()
        if at is not None:
            out[at[key]] = v
        else:
            rows.append(v)
    if at is None:
        out = np.stack(rows) if rows else out
    out -= out.mean(1, keepdims=True)
    return unit(out)
