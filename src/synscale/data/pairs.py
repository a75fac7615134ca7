"""Image-text pair sets for CLIP, and their nested caption subsets.

A pair set is a synscale set whose samples carry a `caption` (in the sample JSON and the manifest). Real
pairs come from webdataset shards as img2dataset writes them (synscale.data.datasets `img2dataset`,
through the same `shards` stage as every other set) or, for the miniature, from a labelled set captioned
by a captioner (synscale.prompts.captioners.captioned_pairs: "<class name>, <caption>", the in-captions
style). Synthetic pairs are generated from the captions of the real pairs
(synscale.prompts.strategies.caption_prompts): one image per caption, under the real sample's key, so a
synthetic set holds the same keys and captions as the real one.

A data scale D counts captions. Its subset is the first D keys in a fixed order (`caption_order`:
sha256 of `{seed}:{key}`), so every smaller scale is inside every larger one, and the real, synthetic and
mixed sources at one scale take the same captions.
"""

from __future__ import annotations

import hashlib
from typing import Any

from synscale.errors import ConfigError


def caption_rank(keys: Any, seed: int, chunk: int = 1 << 20) -> Any:
    """The positions of `keys` (a list or a pyarrow string array) in the caption order: by sha256 of `{seed}:{key}`.
    Each key's digest is kept as two 64-bit words (16 bytes a key; the hex strings took ~120), read in chunks, so
    LAION's 371M keys sort in memory; keys whose first 128 bits tie are ordered by the whole digest."""
    import numpy as np
    import pyarrow as pa

    arrow = isinstance(keys, (pa.Array, pa.ChunkedArray))
    prefix = f"{seed}:".encode()
    n = len(keys)
    words = np.empty((n, 2), dtype=np.uint64)
    for start in range(0, n, chunk):
        part = keys[start:start + chunk]
        part = part.to_pylist() if arrow else part
        raw = b"".join(hashlib.sha256(prefix + str(k).encode()).digest()[:16] for k in part)
        words[start:start + len(part)] = np.frombuffer(raw, dtype=">u8").reshape(-1, 2)
    order = np.lexsort((words[:, 1], words[:, 0]))
    tied = np.flatnonzero((np.diff(words[order], axis=0) == 0).all(axis=1))
    for t in tied[::-1]:  # astronomically rare: settle each tied pair by its whole digest
        a, b = int(order[t]), int(order[t + 1])
        digest = [hashlib.sha256(prefix + str(keys[i].as_py() if arrow else keys[i]).encode()).digest()
                  for i in (a, b)]
        if digest[1] < digest[0]:
            order[t], order[t + 1] = b, a
    return order


def caption_order(keys: list[str], seed: int) -> list[str]:
    """Keys in the fixed order whose prefixes are the nested subsets."""
    return [keys[i] for i in caption_rank(keys, seed)]


def caption_subset(manifest: Any, scale: int, seed: int = 0) -> list[str]:
    """The keys of the nested subset of `scale` captions of a pair set (a manifest DataFrame, or a pyarrow Table of
    its keys: then a pyarrow array of the keys)."""
    if scale > len(manifest):
        raise ConfigError(f"scale {scale} needs {scale} captions but the set has {len(manifest)}; "
                         f"the largest scale of this set is {len(manifest)}")
    import pandas as pd

    keys = manifest["key"]
    if isinstance(keys, pd.Series):
        keys = keys.tolist()
        return [keys[i] for i in caption_rank(keys, seed)[:scale]]
    return keys.take(caption_rank(keys, seed)[:scale])


def compose_caption(class_name: str, text: str) -> str:
    """The in-captions style: the class name, then the captioner's text."""
    return f"{class_name}, {text}" if class_name else text
