"""The paper's eight prompt strategies (section 3.1, appendix A.2), one registry entry each.

A strategy is `fn(ctx, class_index, rng) -> str`; `rng` is a numpy Generator seeded per prompt, so a
prompt set is a pure function of (strategy, label set, seed, per-class count). Strategies that need
WordNet or captions find them in the `PromptContext`, built lazily.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from synscale.errors import ConfigError, DataError
from synscale.labels import LabelSet
from synscale.registry import Registry

PROMPTS: Registry = Registry("prompt strategy")

# Label sets without WordNet ids map class names to synsets here (documented in docs/prompts.md).
SYNSET_TABLES: dict[str, dict[str, str]] = {
    "fashion-mnist": {
        "T-shirt/top": "jersey.n.03",  # "a close-fitting pullover shirt" (lemma: T-shirt)
        "Trouser": "trouser.n.01",
        "Pullover": "pullover.n.01",
        "Dress": "dress.n.01",
        "Coat": "coat.n.01",
        "Sandal": "sandal.n.01",
        "Shirt": "shirt.n.01",
        "Sneaker": "gym_shoe.n.01",  # lemmas: gym shoe, sneaker, tennis shoe
        "Bag": "bag.n.04",  # "a container used for carrying money and small personal items"
        "Ankle boot": "boot.n.01",
    },
}


@functools.cache
def places() -> tuple[str, ...]:
    """The 351 Places scene categories behind the "+places" strategies."""
    text = resources.files("synscale.prompts").joinpath("data/places_categories.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@dataclass
class PromptContext:
    labels: LabelSet
    synset_table: dict[str, str] = field(default_factory=dict)  # class name -> synset name
    wordnet_source: str = "auto"
    captions: dict[int, list[str]] | None = None  # class index -> captions of its real images
    sentence_model: Callable[[str, np.random.Generator], str] | None = None  # word2sen backend

    @functools.cached_property
    def synsets(self) -> list[Any | None]:
        """One synset per class (None where there is none, with a warning)."""
        from synscale.prompts.wordnet import load_wordnet, synset_from_wnid

        wn = load_wordnet(self.wordnet_source)
        out: list[Any | None] = []
        for i, name in enumerate(self.labels.names):
            if self.labels.wnids is not None:
                out.append(synset_from_wnid(wn, self.labels.wnids[i]))
            elif name in self.synset_table:
                out.append(wn.synset(self.synset_table[name]))
            else:
                warnings.warn(f"class {name!r} has no WordNet synset (no wnid, not in the synset table); "
                              "its WordNet prompts fall back to the class name", stacklevel=2)
                out.append(None)
        return out


def make_context(labels: LabelSet, dataset: str = "", **kw: Any) -> PromptContext:
    return PromptContext(labels, synset_table=kw.pop("synset_table", None) or SYNSET_TABLES.get(dataset, {}), **kw)


# ---------------------------------------------------------------------------------------------------


@PROMPTS.register("classname")
def classname(ctx: PromptContext, c: int, rng: np.random.Generator) -> str:
    return ctx.labels.names[c]


@PROMPTS.register("classname+description")
def classname_description(ctx: PromptContext, c: int, rng: np.random.Generator) -> str:
    syn = ctx.synsets[c]
    return f"{ctx.labels.names[c]}, {syn.definition()}" if syn is not None else ctx.labels.names[c]


@PROMPTS.register("classname+hypernyms")
def classname_hypernyms(ctx: PromptContext, c: int, rng: np.random.Generator) -> str:
    from synscale.prompts.wordnet import hypernym_names

    syn = ctx.synsets[c]
    return ", ".join([ctx.labels.names[c], *hypernym_names(syn)]) if syn is not None else ctx.labels.names[c]


def _inside_place(text: str, rng: np.random.Generator) -> str:
    scenes = places()
    return f"{text}, inside {_article(scenes[rng.integers(len(scenes))])}"


@PROMPTS.register("classname+description+places")
def classname_description_places(ctx: PromptContext, c: int, rng: np.random.Generator) -> str:
    return _inside_place(classname_description(ctx, c, rng), rng)


@PROMPTS.register("classname+hypernyms+places")
def classname_hypernyms_places(ctx: PromptContext, c: int, rng: np.random.Generator) -> str:
    return _inside_place(classname_hypernyms(ctx, c, rng), rng)


@functools.cache
def clip_templates(n: int) -> tuple[Callable[[str], str], ...]:
    from open_clip import zero_shot_metadata as z

    return tuple(z.SIMPLE_IMAGENET_TEMPLATES if n == 7 else z.OPENAI_IMAGENET_TEMPLATES)


@PROMPTS.register("clip-templates-7")
def clip_templates_7(ctx: PromptContext, c: int, rng: np.random.Generator) -> str:
    t = clip_templates(7)
    return t[rng.integers(len(t))](ctx.labels.names[c])


@PROMPTS.register("clip-templates-80")
def clip_templates_80(ctx: PromptContext, c: int, rng: np.random.Generator) -> str:
    t = clip_templates(80)
    return t[rng.integers(len(t))](ctx.labels.names[c])


@PROMPTS.register("word2sen")
def word2sen(ctx: PromptContext, c: int, rng: np.random.Generator) -> str:
    name = ctx.labels.names[c]
    if ctx.sentence_model is not None:
        return ctx.sentence_model(name, rng)
    return compose_sentence(name, rng)


@PROMPTS.register("in-captions")
def in_captions(ctx: PromptContext, c: int, rng: np.random.Generator) -> str:
    if not ctx.captions or not ctx.captions.get(c):
        raise DataError(f"in-captions needs captions of real images of class {ctx.labels.names[c]!r}; "
                         "give a captioner and a real dataset, or a captions file")
    caps = ctx.captions[c]
    return f"{ctx.labels.names[c]}, {caps[rng.integers(len(caps))]}"


# ---------------------------------------------------------------------------------------------------
# word2sen offline: sentences composed around the class name (the paper used T5 for this).

ADJECTIVES = (
    "old", "new", "small", "large", "colorful", "plain", "bright", "dark", "worn", "clean", "vintage",
    "modern", "simple", "elegant", "striped", "white", "black", "red", "blue", "brown", "gray", "green",
)
SCENES = (
    "lying on a wooden table", "hanging on a wall", "on display in a shop window", "sitting on the floor",
    "photographed up close", "placed on a white background", "seen from the side", "resting on a shelf",
    "in the middle of the frame", "next to a window", "under soft daylight", "on a bed",
)
FRAMES = (
    "{A} {adj} {name} {scene}.",
    "A photo of {a} {adj} {name} {scene} in {place}.",
    "There is {a} {adj} {name} {scene}.",
    "{A} {adj} {name} in {place}.",
    "Someone left {a} {adj} {name} {scene} in {place}.",
    "This {adj} {name} was {scene_past} in {place}.",
)


def _article(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def compose_sentence(name: str, rng: np.random.Generator) -> str:
    """One natural sentence around `name`: frame x adjective x scene x place (thousands per class)."""
    frame = FRAMES[rng.integers(len(FRAMES))]
    adj = ADJECTIVES[rng.integers(len(ADJECTIVES))]
    scene = SCENES[rng.integers(len(SCENES))]
    place = _article(places()[rng.integers(len(places()))])
    art = _article(adj).split()[0]
    text = frame.format(A=art.capitalize(), a=art, adj=adj, name=name, scene=scene, place=place,
                        scene_past="photographed" if scene.startswith(("photographed", "seen")) else "found " + scene)
    return text[0].upper() + text[1:]


# ---------------------------------------------------------------------------------------------------


def prompt_seed(seed: int, index: int) -> int:
    """The seed of image `index` of a set: the same for that image whenever the set is made."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint32)[0])


def make_prompts(strategy: str, ctx: PromptContext, per_class: int, seed: int = 0) -> Any:
    """A class-balanced prompt set: rows (index, class_index, class_name, strategy, prompt, seed).

    Image i of class c is row c * per_class + i; its prompt is drawn with its own seed, so any row
    can be remade alone."""
    import pandas as pd

    fn = PROMPTS.get(strategy)
    rows = []
    for c in range(len(ctx.labels)):
        for i in range(per_class):
            index = c * per_class + i
            s = prompt_seed(seed, index)
            rows.append({"index": index, "class_index": c, "class_name": ctx.labels.names[c],
                         "strategy": strategy, "prompt": fn(ctx, c, np.random.default_rng(s)), "seed": s})
    return pd.DataFrame(rows)


ITEM_STRIDE = 1 << 24  # item_prompts: image i of class c is index c * ITEM_STRIDE + i (i below 16.7M per class)


def item_prompts(strategy: str, ctx: PromptContext, items: Any, seed: int = 0, key_prefix: str = "") -> Any:
    """Prompts for chosen images, (class, i) pairs: rows as make_prompts', with index c * ITEM_STRIDE + i, seed
    prompt_seed(seed, index) and key `{key_prefix}c{c}-{i}`. An image's prompt and seed depend on (class, i)
    alone, not on how many images of its class a set holds: the sets of an adaptive source's rounds, which
    grow each class by its own count, nest (synscale.study.adaptive)."""
    import pandas as pd

    fn = PROMPTS.get(strategy)
    rows = []
    for c, i in items:
        index = int(c) * ITEM_STRIDE + int(i)
        s = prompt_seed(seed, index)
        rows.append({"index": index, "key": f"{key_prefix}c{int(c)}-{int(i)}", "class_index": int(c),
                     "class_name": ctx.labels.names[c], "strategy": strategy,
                     "prompt": fn(ctx, int(c), np.random.default_rng(s)), "seed": s})
    return pd.DataFrame(rows, columns=["index", "key", "class_index", "class_name", "strategy", "prompt", "seed"])


def caption_prompts(manifest: Any, seed: int) -> Any:
    """A prompt set that regenerates every caption of a pair set (in manifest order): rows (index, key,
    class_index, class_name, strategy = "captions", prompt = the caption, seed)."""
    import pandas as pd

    if "caption" not in manifest:
        raise DataError("the pair set has no captions (no `caption` column in its manifest)")
    n = len(manifest)
    return pd.DataFrame({
        "index": np.arange(n), "key": manifest["key"].astype(str).to_numpy(),
        "class_index": manifest["label"].to_numpy(np.int64), "class_name": manifest["class_name"].astype(str).to_numpy(),
        "strategy": "captions", "prompt": manifest["caption"].astype(str).to_numpy(),
        "seed": [prompt_seed(seed, i) for i in range(n)],
    })


PROMPT_COLUMNS = ("index", "class_index", "prompt", "strategy", "seed")


def read_prompt_set(path: Path) -> Any:
    """A prompt set from `synscale prompts --out` (.parquet or .csv), checked: readable, its columns, rows."""
    import pandas as pd

    if not path.is_file():
        raise ConfigError(f"{path}: no such prompts file (write one with `synscale prompts --out FILE`)")
    try:
        prompts = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable prompt set ({str(e).splitlines()[0]})") from None
    missing = [c for c in PROMPT_COLUMNS if c not in prompts.columns]
    if missing:
        raise ConfigError(f"{path}: no column {', '.join(map(repr, missing))}; a prompt set has "
                          f"{', '.join(PROMPT_COLUMNS)} (`synscale prompts --out FILE` writes one)")
    if not len(prompts):
        raise ConfigError(f"{path}: no prompts (the file has no rows)")
    return prompts
