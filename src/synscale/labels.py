"""Label sets: ordered class names with optional WordNet ids."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from synscale.errors import DataError

WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class LabelSet:
    names: tuple[str, ...]
    wnids: tuple[str, ...] | None = None  # WordNet noun synset ids ("n01440764"), one per class

    def __post_init__(self) -> None:
        if not self.names:
            raise DataError("a label set needs at least one class")
        if len(set(self.names)) != len(self.names) and (self.wnids is None or len(set(self.wnids)) != len(self.wnids)):
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise DataError(f"duplicate class names in label set: {dup}")
        if self.wnids is not None and len(self.wnids) != len(self.names):
            raise DataError(f"{len(self.wnids)} WordNet ids for {len(self.names)} classes")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"names": list(self.names), "wnids": self.wnids and list(self.wnids)}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> LabelSet:
        from synscale.atomic import read_json

        d = read_json(path)
        return cls(tuple(d["names"]), tuple(d["wnids"]) if d.get("wnids") else None)

    @classmethod
    def from_folder_names(cls, folders: list[str], names_file: Path | None = None) -> LabelSet:
        """Class-per-folder trees: folders named by wnid (ImageNet) keep them as WordNet ids; an optional
        `classnames.txt` (one name per line, for the folders in sorted order, whatever their names) gives readable
        names, distinct unless the folders are wnids (ImageNet's readable names repeat two)."""
        wnids = tuple(folders) if all(WNID.match(f) for f in folders) else None
        if names_file is None or not names_file.exists():
            return cls(tuple(folders), wnids)
        lines = read_names(names_file, unique=wnids is None, fix="give each class folder its own name")
        if len(lines) != len(folders):
            shown = ", ".join(folders[:5]) + (", ..." if len(folders) > 5 else "")
            raise DataError(f"{names_file}: {len(lines)} names for {len(folders)} class folders ({shown}); write one "
                            "name per line, for each class folder in sorted order (or remove the file to name the "
                            "classes by their folders)")
        return cls(tuple(lines), wnids)


def read_names(path: Path, unique: bool = True, fix: str = "give each class its own name") -> list[str]:
    """The class names of a text file, one per line (blank lines and surrounding spaces ignored); with `unique`, a
    name on two lines is a DataError that names the file, the lines and `fix`."""
    numbered = _numbered_lines(path)
    if unique:
        _check_unique(numbered, path, fix)
    return [name for _, name in numbered]


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of a text file's non-blank lines."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file of class names ({e.reason} at byte {e.start})") from None
    return [(i, ln.strip()) for i, ln in enumerate(lines, 1) if ln.strip()]


def _check_unique(numbered: list[tuple[int, str]], path: Path, fix: str) -> None:
    first: dict[str, int] = {}
    for i, name in numbered:
        if name in first:
            raise DataError(f"{path}: {name!r} is on lines {first[name]} and {i}; {fix}")
        first[name] = i


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def named_label_set(name: str) -> LabelSet:
    """Label sets known by name: `fashion-mnist`, `imagenet` (1000 classes: wnids in the standard
    order, names from open_clip), or a text file of class names (one per line, optionally
    `<wnid><TAB><name>`)."""
    if name == "fashion-mnist":
        return LabelSet(FASHION_MNIST_CLASSES)
    if name == "imagenet":
        from importlib import resources

        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        wnids = resources.files("synscale.prompts").joinpath("data/imagenet1k_wnids.txt").read_text().split()
        return LabelSet(tuple(IMAGENET_CLASSNAMES), tuple(wnids))
    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"no label set {name!r}: use fashion-mnist, imagenet or a file of class names")
    numbered = _numbered_lines(path)
    if not numbered:
        raise DataError(f"{path}: no class names in it (one per line, or <wnid><TAB><name>)")
    if all("\t" in ln and WNID.match(ln.split("\t", 1)[0]) for _, ln in numbered):
        pairs = [(i, *ln.split("\t", 1)) for i, ln in numbered]
        _check_unique([(i, w) for i, w, _ in pairs], path, "a WordNet id names one class")  # names may repeat
        return LabelSet(tuple(n.strip() for _, _, n in pairs), tuple(w for _, w, _ in pairs))
    _check_unique(numbered, path, "give each class its own name")
    return LabelSet(tuple(ln for _, ln in numbered))
