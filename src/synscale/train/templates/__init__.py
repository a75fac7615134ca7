"""Zero-shot prompt templates by name: `openai` (CLIP's 80 ImageNet templates) and `simple` (its 7), from
open_clip, and the sets shipped here as `<name>.txt` (one template per line, `{}` = the class name), e.g.
`fashion-mnist`, in the style of the miniature's captions ("Dress, a ... item on a black background")."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

BUILTIN = ("openai", "simple")


def template_names() -> list[str]:
    shipped = sorted(p.name[:-4] for p in resources.files(__name__).iterdir() if p.name.endswith(".txt"))
    return [*BUILTIN, *shipped]


def load_templates(spec: str) -> list[str]:
    """The templates as format strings (`{}` = the class name): a name, or a file of one per line."""
    if spec in BUILTIN:
        from open_clip import zero_shot_metadata as z

        return [t("{}") for t in (z.OPENAI_IMAGENET_TEMPLATES if spec == "openai" else z.SIMPLE_IMAGENET_TEMPLATES)]
    shipped = resources.files(__name__).joinpath(f"{spec}.txt")
    text = shipped.read_text() if shipped.is_file() else Path(spec).read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    bad = [ln for ln in lines if "{}" not in ln and "{c}" not in ln]
    if not lines or bad:
        raise ValueError(f"{spec}: every template needs {{}} (the class name), e.g. 'a photo of a {{}}.'; got {bad[:2] or 'none'}")
    return [ln.replace("{c}", "{}") for ln in lines]
