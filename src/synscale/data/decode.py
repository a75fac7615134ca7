"""The one decoder of the user's images: an image folder's files, webdataset and img2dataset shards, a Hugging
Face dataset's Image column and the OOD sets all come through `decode_image` (synscale's own PNG shards are
read by synscale.data.shards).

`Image.open(f).convert("RGB")` alone gets three kinds of images wrong without a word:
- High bit depth. A 16-bit grayscale PNG opens as "I;16" (or "I"), and convert clips its values at 255: nearly
  every pixel comes out white. Here a 16-bit value keeps its high byte (value >> 8, so 0x8000 -> 128), which is
  what Pillow itself does with a 16-bit RGB or RGBA PNG: the same picture in grey or in colour gives the same
  pixels. A 32-bit integer image ("I") is read as 16-bit values, a floating-point one ("F") as 0..1; values
  outside those ranges are refused (BadSample), since what they mean is unknown.
- EXIF orientation. A camera's JPEG is often stored sideways with a tag that says how to turn it; every
  viewer shows it upright, and so is it decoded here (`ImageOps.exif_transpose`).
- Transparency. An alpha channel, a palette's or a colour's transparency is composited over white (what a
  viewer shows on a white page, and what img2dataset does when it resizes), rather than dropped, which shows
  whatever colour the transparent pixels happen to hold.
Everything else (8-bit RGB, L, P without transparency, 1, CMYK, YCbCr) is Pillow's `convert("RGB")`, as before:
ordinary images decode to the very same pixels.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np

from synscale.errors import BadSample, image_error

DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # more than 8 bits per pixel, one channel
ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height

# what Pillow's EXIF parser raises on a malformed block (a web image's EXIF is often broken; the pixels are not)
_EXIF_ERRORS = (OSError, ValueError, SyntaxError, TypeError, KeyError, IndexError, struct.error)


def decode_image(source: str | Path | bytes, where: str) -> Any:
    """An image file (a path) or its bytes as an upright 8-bit RGB PIL image; `where` names it in the BadSample
    raised when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            im.load()
            _upright(im)
            return to_rgb(im, where)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadSample(where, "unreadable image", f"{where}: not a readable image ({image_error(e)}); remove or "
                        "replace it") from None


def header_size(source: str | Path | bytes, where: str) -> tuple[int, int]:
    """(width, height) of the image `decode_image` gives, read from the file's header (and its EXIF orientation)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            w, h = im.size
            return (h, w) if _orientation(im) in ROTATED else (w, h)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadSample(where, "unreadable image", f"{where}: not a readable image ({image_error(e)}); remove or "
                        "replace it") from None


def _orientation(im: Any) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))  # 0x0112: the Orientation tag
    except _EXIF_ERRORS:
        return 1


def _upright(im: Any) -> None:
    """Turn a loaded image in place as its EXIF orientation tag says (a malformed tag: as it is stored)."""
    from PIL import ImageOps

    if _orientation(im) != 1:
        try:
            ImageOps.exif_transpose(im, in_place=True)
        except _EXIF_ERRORS:
            pass


def to_rgb(im: Any, where: str) -> Any:
    """A PIL image of any mode as 8-bit RGB: deep modes scaled, transparency over white, the rest convert("RGB")."""
    if im.mode in DEEP_MODES:
        return _deep_to_rgb(im, where)
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        return _over_white(im.convert("RGBA"))
    return im.convert("RGB")


def _deep_to_rgb(im: Any, where: str) -> Any:
    """A one-channel image of more than 8 bits as RGB: 16-bit values keep their high byte, floats are 0..1."""
    from PIL import Image

    arr = np.asarray(im)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if im.mode == "F":
        if not (lo >= 0.0 and hi <= 1.0):  # NaN fails both
            raise BadSample(where, "pixel values out of range", f"{where}: floating-point pixel values from {lo:g} "
                            f"to {hi:g}; synscale reads a float image as 0..1: save it with values in 0..1, or as an "
                            "8- or 16-bit image")
        gray = np.round(arr * 255.0).astype(np.uint8)
    else:
        if lo < 0 or hi > 0xFFFF:
            raise BadSample(where, "pixel values out of range", f"{where}: integer pixel values from {lo:g} to "
                            f"{hi:g}; synscale reads an integer image as 16-bit (0..65535): save it as an 8- or "
                            "16-bit image")
        gray = (arr.astype(np.uint32) >> 8).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _over_white(rgba: Any) -> Any:
    """An RGBA image composited over white, rounded to the nearest value (an opaque pixel keeps its colour)."""
    from PIL import Image

    arr = np.asarray(rgba, dtype=np.uint32)
    rgb, alpha = arr[..., :3], arr[..., 3:]
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(out.astype(np.uint8))
