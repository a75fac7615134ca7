"""Label sets: ordered class names with optional WordNet ids."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class LabelSet:
    names: tuple[str, ...]
    wnids: tuple[str, ...] | None = None  # WordNet noun synset ids ("n01440764"), one per class

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("a label set needs at least one class")
        if len(set(self.names)) != len(self.names) and (self.wnids is None or len(set(self.wnids)) != len(self.wnids)):
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise ValueError(f"duplicate class names in label set: {dup}")
        if self.wnids is not None and len(self.wnids) != len(self.names):
            raise ValueError(f"{len(self.wnids)} WordNet ids for {len(self.names)} classes")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"names": list(self.names), "wnids": self.wnids and list(self.wnids)}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> LabelSet:
        d = json.loads(Path(path).read_text())
        return cls(tuple(d["names"]), tuple(d["wnids"]) if d.get("wnids") else None)

    @classmethod
    def from_folder_names(cls, folders: list[str], names_file: Path | None = None) -> LabelSet:
        """Class-per-folder trees: folders named by wnid (ImageNet) keep them as WordNet ids; an optional
        `classnames.txt` (one name per line, in sorted folder order) gives readable names."""
        wnids = tuple(folders) if all(WNID.match(f) for f in folders) else None
        names = tuple(folders)
        if names_file is not None and names_file.exists():
            lines = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
            if len(lines) != len(folders):
                raise ValueError(f"{names_file}: {len(lines)} names for {len(folders)} class folders")
            names = tuple(lines)
        return cls(names, wnids)


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
    lines = [ln.rstrip("\n") for ln in path.read_text().splitlines() if ln.strip()]
    if all("\t" in ln and WNID.match(ln.split("\t", 1)[0]) for ln in lines):
        pairs = [ln.split("\t", 1) for ln in lines]
        return LabelSet(tuple(n.strip() for _, n in pairs), tuple(w for w, _ in pairs))
    return LabelSet(tuple(ln.strip() for ln in lines))
