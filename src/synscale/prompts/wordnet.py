"""WordNet 3.0 offline: Debian's `wordnet-base` read through nltk, or nltk's own downloaded corpus.

Debian ships the dict files in /usr/share/wordnet but not the `lexnames` file that nltk's reader
needs (only its man page, lexnames(5WN)); nltk >= 3.10 refuses paths outside `nltk.data.path` and
symlinks that leave the corpus root; and the reader's constructor asks for an OMW mapping from the
`wordnet` corpus of nltk_data, which is absent offline. So synscale copies the dict files into its
cache dir, writes `lexnames` (the 45 lexicographer files of WordNet 3.0, as listed by lexnames(5WN)),
puts the copy on nltk's path and uses a reader that skips the mapping (it is only for OMW languages).
"""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from synscale.errors import UserError

DEBIAN_WORDNET = Path("/usr/share/wordnet")
DICT_FILES = (
    "adj.exc", "adv.exc", "cntlist.rev", "data.adj", "data.adv", "data.noun", "data.verb",
    "index.adj", "index.adv", "index.noun", "index.verb", "noun.exc", "verb.exc",
)
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetUnavailable(UserError, RuntimeError):
    """Neither Debian's wordnet-base nor nltk's downloaded corpus is there."""


def cache_dir() -> Path:
    base = os.environ.get("SYNSCALE_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "synscale")
    return Path(base)


def _debian_copy(src: Path) -> Path:
    """Copy the dict files (no symlinks) and write `lexnames`; return the corpus root."""
    root = cache_dir() / "nltk_data" / "corpora" / "wordnet-debian"
    if not (root / "lexnames").exists():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        for name in DICT_FILES:
            shutil.copyfile(src / name, tmp / name)
        (tmp / "lexnames").write_text("".join(f"{i:02d}\t{n}\t{_POS_NUMBER[n.split('.')[0]]}\n" for i, n in enumerate(LEXNAMES)))
        if root.exists():
            shutil.rmtree(root)
        os.rename(tmp, root)
    return root


@functools.cache
def load_wordnet(source: str = "auto") -> Any:
    """An nltk WordNet reader. source: `auto` (nltk's own corpus if installed, else Debian's),
    `nltk`, `debian`, or a directory holding WordNet 3.0 dict files."""
    import nltk

    if source in ("auto", "nltk"):
        try:
            from nltk.corpus import wordnet

            wordnet.ensure_loaded()
            return wordnet
        except LookupError:
            if source == "nltk":
                raise WordNetUnavailable("nltk's wordnet corpus is not installed (python -m nltk.downloader wordnet)") from None
    src = DEBIAN_WORDNET if source in ("auto", "debian") else Path(source)
    if not (src / "data.noun").exists():
        raise WordNetUnavailable(
            f"WordNet not found in {src}: install Debian's package (sudo apt-get install -y wordnet-base) "
            "or nltk's corpus (python -m nltk.downloader wordnet)"
        )
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class OfflineReader(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:  # OMW mapping only; absent offline
            return None

    root = _debian_copy(src)
    if str(root.parent) not in nltk.data.path:
        nltk.data.path.insert(0, str(root.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available"
        return OfflineReader(str(root), None)


def synset_from_wnid(wn: Any, wnid: str) -> Any:
    return wn.synset_from_pos_and_offset(wnid[0], int(wnid[1:]))


def lemma_text(synset: Any) -> str:
    return synset.lemmas()[0].name().replace("_", " ")


def hypernym_names(synset: Any) -> list[str]:
    """All hypernyms up to the root (breadth first, each once), as readable lemma names."""
    return [lemma_text(s) for s in synset.closure(lambda s: s.hypernyms())]
