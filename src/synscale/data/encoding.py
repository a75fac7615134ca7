"""How a set stores its images: PNG (lossless, the default), JPEG or WebP at a recorded quality, or a source's own
file bytes kept as they came (`auto`: no re-encode where they decode to exactly the set's pixels).

PNG is written with one encoder (fixed compression level: the same image always gives the same bytes). The set's
readers decode whatever a sample holds (`decode_stored`: PNG, JPEG or WebP, told by their bytes), so a set may
mix kept JPEG members with PNG ones.

`auto` changes how a set is stored, never what it holds: a source file's bytes are kept only where the shard
reader's decoder gives exactly the pixels the source's decoder gave (synscale.data.decode: upright RGB, resized to
the set's size); anything else is PNG. So `auto` and `png` sets of one source decode to the same arrays, and the
format is not in a set's identity. `jpeg` and `webp` are lossy: they are (with their quality)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from synscale.errors import ConfigError, DataError, image_error

PNG_COMPRESS_LEVEL = 6
FORMATS = ("auto", "png", "jpeg", "webp")
EXTS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}  # a kept file's extension, by the format Pillow reads in it
IMAGE_MEMBERS = ("png", "jpg", "jpeg", "webp")  # the extensions of a stored image in a set's tars


def encode_png(image: Any) -> bytes:
    """numpy uint8 (H, W) / (H, W, 3) or PIL image -> PNG bytes (lossless, deterministic)."""
    return _encode(image, "PNG", compress_level=PNG_COMPRESS_LEVEL)


def _encode(image: Any, fmt: str, **options: Any) -> bytes:
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {image.dtype}")
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def decode_stored(data: bytes, where: str = "") -> np.ndarray:
    """A stored image's bytes (PNG, JPEG or WebP) -> numpy uint8 (H, W) or (H, W, 3), as the training loader reads
    them; `where` (the shard and key) names an unreadable image in the DataError."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:
        if not where:
            raise
        raise DataError(f"{where}: not a readable image ({image_error(e)}); regenerate the set") from None


decode_png = decode_stored  # the name the set readers have used: every stored format decodes through it


def stored_image(files: dict[str, bytes]) -> tuple[str, bytes] | None:
    """(extension, bytes) of a sample's stored image among its tar members (None: it has none)."""
    ext = next((e for e in IMAGE_MEMBERS if e in files), None)
    return None if ext is None else (ext, files[ext])


@dataclass(frozen=True)
class ImageEncoding:
    """A set's image storage: `format` one of FORMATS; `quality` (1-100) for JPEG and WebP."""

    format: str = "auto"
    quality: int = 95

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"image_format {self.format!r}: one of {', '.join(FORMATS)}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"image_quality {self.quality}: from 1 to 100")

    @property
    def lossy(self) -> bool:
        return self.format in ("jpeg", "webp")

    def params(self) -> dict[str, Any]:
        """What enters a set's identity: nothing for the lossless formats (their pixels are the source's)."""
        return {"image_format": self.format, "image_quality": self.quality} if self.lossy else {}

    def encode(self, image: Any, source: bytes | None = None) -> tuple[str, bytes]:
        """(extension, bytes) of one image; `source`: the file bytes it was decoded from, kept where this
        encoding allows and they decode to exactly `image`."""
        if source is not None and self._keeps(source, image):
            return self._kept_ext(source), source
        if self.format == "jpeg":
            return "jpg", _encode(image, "JPEG", quality=self.quality)
        if self.format == "webp":
            if (image.ndim == 2 or image.shape[-1] == 1) if isinstance(image, np.ndarray) else image.mode == "L":
                raise DataError("image_format webp stores colour images only (a grey one decodes as RGB); this set "
                                "is greyscale: use jpeg or png")
            return "webp", _encode(image, "WEBP", quality=self.quality, method=4)
        return "png", encode_png(image)

    def _keeps(self, source: bytes, image: Any) -> bool:
        want = {"auto": ("JPEG", "WEBP", "PNG"), "jpeg": ("JPEG",), "webp": ("WEBP",)}.get(self.format, ())
        fmt = _format_of(source)
        if fmt not in want:
            return False
        from PIL import Image

        shape = image.shape[:2] if isinstance(image, np.ndarray) else image.size[::-1]
        try:
            with Image.open(io.BytesIO(source)) as im:
                if im.size[::-1] != tuple(shape):  # resized: the header says so without decoding
                    return False
            kept = decode_stored(source)
        except (OSError, ValueError, SyntaxError):
            return False
        return bool(np.array_equal(kept, np.asarray(image)))

    @staticmethod
    def _kept_ext(source: bytes) -> str:
        return EXTS[_format_of(source)]


def _format_of(data: bytes) -> str | None:
    """The image format of stored bytes, from their signature."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None
