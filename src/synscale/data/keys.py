"""Sample keys from the names a source gives its samples: an image folder's files, a webdataset's keys.

A key names a sample in a set's tars (`<key>.png`, `<key>.json`) and manifest, and a set's nested subsets are
drawn by hashing keys (synscale.data.subsets), so a source's keys must be
1. tar members webdataset reads back whole: no '.' (a key ends at its first dot) and no '/';
2. distinct for distinct samples, whatever the names;
3. what they were before for the names that worked before, so that sets and their subsets keep their keys.

`escape` writes '%', '.', '/', '~' and control characters as %XX (their UTF-8 bytes in hex), the bytes of a file
name that are not UTF-8 as %80..%FF, and nothing else: it is injective (it can be read back) and leaves a name
without those characters as it is. A source's own key (webdataset, hf) is `escape("<split>-<key>")`
(img2dataset: of the key alone).

An image folder's key is `<split>-<class folder>_<file name without its extension>` (`train-cat_0` for
`train/cat/0.png`), each part escaped, with two more rules so that no two files share one:
- in a tree where a class folder's name is another's followed by '_' and more (`a` and `a_b`: `a/b_c.png`
  and `a_b/c.png` would both give `a_b_c`), the longer folder's '_' is escaped too (`a%5Fb_c`); the first
  '_' of a key not so escaped then always ends its class;
- files of one folder that differ only in their extension (`0.png`, `0.jpg`) keep it after a '~'
  (`cat_0~jpg`, `cat_0~png`); an escaped name holds no '~'.
A key longer than a tar header holds (KEY_BYTES in UTF-8) keeps its first bytes and ends with '%%' and 16 hex
digits of the whole key's sha256 ('%%' is in no escaped name).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

KEY_BYTES = 95  # a ustar member name holds 100 bytes: the key, '.' and an extension of up to 4 letters
SPECIAL = "%./~"


def escape(name: str, also: str = "") -> str:
    """`name` with '%', '.', '/', '~', control characters and the characters of `also` as %XX; a byte of a file
    name that is not UTF-8 (Python's surrogate escape) as %XX too (80..FF, which no escaped character gives)."""
    special = [c in SPECIAL or c in also or c < " " or c == "\x7f" or "\udc80" <= c <= "\udcff" for c in name]
    if not any(special):
        return name
    return "".join("".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape")) if s else c
                   for c, s in zip(name, special, strict=True))


def bounded(key: str) -> str:
    """`key`, or where it is longer than KEY_BYTES, its first bytes, '%%' and 16 hex digits of its sha256."""
    data = key.encode()
    if len(data) <= KEY_BYTES:
        return key
    head = data[: KEY_BYTES - 18].decode("utf-8", "ignore")
    return f"{head}%%{hashlib.sha256(data).hexdigest()[:16]}"


def sample_key(name: str) -> str:
    """The key of a sample a source names `name` (a webdataset's `<split>-<key>`)."""
    return bounded(escape(name))


def class_parts(folders: Sequence[str]) -> dict[str, str]:
    """Each class folder's part of an image folder's keys: escaped, and its '_' too where another folder's name
    followed by '_' begins it (only then could `<class>_<file>` be read two ways)."""
    names = set(folders)
    return {f: escape(f, "_" if any(f[:i] in names for i, c in enumerate(f) if c == "_") else "") for f in folders}


def image_folder_keys(prefix: str, files: Sequence[tuple[str, str]], folders: Sequence[str]) -> list[str]:
    """The keys of an image folder's `files`, each (class folder, file name), in a tree of class `folders`;
    `prefix` (`<split>-`, or nothing) starts each key."""
    classes = class_parts(folders)
    stems = Counter((folder, _split_ext(name)[0]) for folder, name in files)
    keys = []
    for folder, name in files:
        stem, ext = _split_ext(name)
        part = escape(stem) + (f"~{escape(ext)}" if stems[folder, stem] > 1 else "")
        keys.append(bounded(f"{escape(prefix)}{classes[folder]}_{part}"))
    return keys


def _split_ext(name: str) -> tuple[str, str]:
    """('img.001', 'png') of 'img.001.png' (the extension: after the last dot; none: '')."""
    stem, dot, ext = name.rpartition(".")
    return (stem, ext) if dot and stem else (name, "")
