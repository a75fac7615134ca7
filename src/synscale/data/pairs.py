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


def caption_order(keys: list[str], seed: int) -> list[str]:
    """Keys in the fixed order whose prefixes are the nested subsets."""
    return sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())


def caption_subset(manifest: Any, scale: int, seed: int = 0) -> list[str]:
    """The keys of the nested subset of `scale` captions of a pair set."""
    if scale > len(manifest):
        raise ValueError(f"scale {scale} needs {scale} captions but the set has {len(manifest)}; "
                         f"the largest scale of this set is {len(manifest)}")
    return caption_order(manifest["key"].tolist(), seed)[:scale]


def compose_caption(class_name: str, text: str) -> str:
    """The in-captions style: the class name, then the captioner's text."""
    return f"{class_name}, {text}" if class_name else text
