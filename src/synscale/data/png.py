"""PNG, the lossless encoding of synscale's shards: one encoder (deterministic bytes) and one decoder of the PNGs
synscale wrote (a user's images go through synscale.data.decode)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from synscale.errors import DataError, image_error

PNG_COMPRESS_LEVEL = 6


def encode_png(image: Any) -> bytes:
    """numpy uint8 (H, W) / (H, W, 3) or PIL image -> PNG bytes (lossless, deterministic)."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {image.dtype}")
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def decode_png(data: bytes, where: str = "") -> np.ndarray:
    """PNG bytes -> numpy uint8; `where` (the shard and key) names an unreadable image in the DataError."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:
        if not where:
            raise
        raise DataError(f"{where}: not a readable image ({image_error(e)}); regenerate the set") from None
