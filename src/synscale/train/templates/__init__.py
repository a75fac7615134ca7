"""Zero-shot prompt templates by name: `openai` (CLIP's 80 ImageNet templates) and `simple` (its 7), from
open_clip, and the sets shipped here as `<name>.txt` (one template per line, `{}` = the class name), e.g.
`fashion-mnist`, in the style of the miniature's captions ("Dress, a ... item on a black background")."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from synscale.errors import ConfigError

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
    try:
        text = shipped.read_text() if shipped.is_file() else Path(spec).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{spec}: not a readable file of templates ({e}); one template per line, {{}} = the class "
                          "name") from None
    return parse_templates(text, spec)


def parse_templates(text: str, where: str) -> list[str]:
    """Lines of templates, each with exactly one field, `{}` or `{c}` (the class name); other braces doubled
    (`{{`, `}}`), as str.format reads them. A line that format would fail on, or fill wrongly, is named."""
    import string

    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ConfigError(f"{where}: no templates (one per line, {{}} = the class name, e.g. 'a photo of a {{}}.')")
    out = []
    for i, ln in enumerate(lines, 1):
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(ln) if f is not None]
        except ValueError as e:  # a lone brace
            raise ConfigError(f"{where}: template {i} {ln!r}: {e}; write a literal brace twice ({{{{ or }}}})") from None
        if len(fields) != 1 or fields[0] not in ("", "c"):
            raise ConfigError(f"{where}: template {i} {ln!r} has {len(fields)} fields {fields}; each template needs "
                              "exactly one, {} (the class name), e.g. 'a photo of a {}.'")
        out.append(ln.replace("{c}", "{}"))
    return out
