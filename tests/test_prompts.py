"""Prompt strategies on known classes, with answers from WordNet 3.0 and the CLIP templates."""

import warnings

import numpy as np
import pandas as pd
import pytest

from synscale.cli import main
from synscale.labels import LabelSet, named_label_set
from synscale.prompts.captioners import attribute_captions, image_attributes, read_captions_file
from synscale.prompts.strategies import PROMPTS, compose_sentence, make_context, make_prompts, places, prompt_seed

FMNIST = named_label_set("fashion-mnist")
ALL = PROMPTS.names()


def test_all_eight_strategies_are_registered():
    assert ALL == sorted([
        "classname", "classname+description", "classname+hypernyms", "classname+description+places",
        "classname+hypernyms+places", "clip-templates-7", "clip-templates-80", "word2sen", "in-captions",
    ])


def test_wordnet_gloss_of_goldfish_from_its_imagenet_wnid():
    imagenet = named_label_set("imagenet")
    assert imagenet.wnids[1] == "n01443537" and imagenet.names[1] == "goldfish"
    ctx = make_context(imagenet, "imagenet")
    rng = np.random.default_rng(0)
    assert PROMPTS.get("classname+description")(ctx, 1, rng) == (
        "goldfish, small golden or orange-red freshwater fishes of Eurasia used as pond or aquarium fishes"
    )
    assert PROMPTS.get("classname")(ctx, 0, rng) == "tench"


def test_hypernyms_of_sandal():
    ctx = make_context(FMNIST, "fashion-mnist")
    assert PROMPTS.get("classname+hypernyms")(ctx, FMNIST.index("Sandal"), np.random.default_rng(0)) == (
        "Sandal, shoe, footwear, covering, artifact, whole, object, physical entity, entity"
    )
    assert PROMPTS.get("classname+description")(ctx, FMNIST.index("Ankle boot"), np.random.default_rng(0)) == (
        "Ankle boot, footwear that covers the whole foot and lower leg"
    )


def test_places_strategies_append_a_scene_from_the_places_list():
    ctx = make_context(FMNIST, "fashion-mnist")
    scenes = set(places())
    assert len(scenes) == 351
    df = make_prompts("classname+description+places", ctx, per_class=30, seed=1)
    tails = df.prompt.str.extract(r", inside an? (.+)$")[0]
    assert tails.notna().all() and set(tails) <= scenes and tails.nunique() > 50
    assert df.prompt.iloc[0].startswith("T-shirt/top, a close-fitting pullover shirt, inside ")


def test_clip_templates_cover_7_and_80():
    ctx = make_context(FMNIST, "fashion-mnist")
    seven = make_prompts("clip-templates-7", ctx, per_class=200, seed=0)
    eighty = make_prompts("clip-templates-80", ctx, per_class=800, seed=0)
    assert seven[seven.class_index == 0].prompt.nunique() == 7
    assert eighty[eighty.class_index == 0].prompt.nunique() == 80
    assert "itap of a Trouser." in set(seven.prompt)
    assert "a bad photo of a Trouser." in set(eighty.prompt)


def test_word2sen_offline_composes_100_distinct_sentences_per_class():
    ctx = make_context(FMNIST, "fashion-mnist")
    df = make_prompts("word2sen", ctx, per_class=300, seed=0)
    for c, g in df.groupby("class_index"):
        assert g.prompt.nunique() >= 100
        assert g.prompt.str.contains(FMNIST.names[c], regex=False).all()
        assert g.prompt.str.match(r"^[A-Z].*\.$").all()
    assert compose_sentence("Bag", np.random.default_rng(5)) == compose_sentence("Bag", np.random.default_rng(5))


def test_prompt_sets_are_deterministic_given_a_seed_and_rows_remake_alone():
    ctx = make_context(FMNIST, "fashion-mnist", captions={c: [f"caption {c}-{i}" for i in range(9)] for c in range(10)})
    for name in ALL:
        a = make_prompts(name, ctx, per_class=5, seed=3)
        pd.testing.assert_frame_equal(a, make_prompts(name, ctx, per_class=5, seed=3))
        assert list(a.class_index) == [c for c in range(10) for _ in range(5)]
        row = a.iloc[17]  # any row can be regenerated from its own seed
        assert row.seed == prompt_seed(3, 17)
        assert PROMPTS.get(name)(ctx, row.class_index, np.random.default_rng(row.seed)) == row.prompt
    assert not make_prompts("word2sen", ctx, 5, seed=3).prompt.equals(make_prompts("word2sen", ctx, 5, seed=4).prompt)


def test_class_without_synset_warns_and_falls_back():
    ctx = make_context(LabelSet(("Sandal", "Zorblax")), "fashion-mnist")
    with pytest.warns(UserWarning, match="'Zorblax' has no WordNet synset"):
        assert PROMPTS.get("classname+hypernyms")(ctx, 1, np.random.default_rng(0)) == "Zorblax"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PROMPTS.get("classname+hypernyms")(ctx, 0, np.random.default_rng(0)).startswith("Sandal, shoe")


def test_attribute_captioner_on_planted_images():
    imgs = np.zeros((3, 28, 28), np.uint8)
    imgs[0, 4:24, 2:26] = 230  # large, wide, light, plain
    imgs[1, 2:26, 11:17] = 60  # slim, dark
    imgs[2, 6:22, 6:22] = 120
    imgs[2, 6:22, 6:22:2] = 240  # stripes: patterned
    caps = attribute_captions(imgs, ["a", "b", "c"])
    assert caps[0] == "a large, wide, light, plain item on a black background"
    assert "slim" in caps[1] and "dark" in caps[1] and "small" in caps[1]
    assert "patterned" in caps[2]
    assert image_attributes(imgs)["coverage"][0] == pytest.approx(20 * 24 / 784)


def test_in_captions_and_captions_file(tmp_path):
    (tmp_path / "c.csv").write_text("key,caption\nk1,a red one\nk2,\"a blue one, folded\"\n")
    (tmp_path / "c.jsonl").write_text('{"key": "k1", "caption": "x"}\n')
    assert read_captions_file(tmp_path / "c.csv") == {"k1": "a red one", "k2": "a blue one, folded"}
    assert read_captions_file(tmp_path / "c.jsonl") == {"k1": "x"}
    ctx = make_context(FMNIST, "fashion-mnist", captions={0: ["a red one"]})
    assert PROMPTS.get("in-captions")(ctx, 0, np.random.default_rng(0)) == "T-shirt/top, a red one"
    with pytest.raises(ValueError, match="in-captions needs captions"):
        PROMPTS.get("in-captions")(ctx, 1, np.random.default_rng(0))


def test_prompts_command_writes_a_set(tiny_fmnist, tmp_path, capsys):
    out = tmp_path / "p.parquet"
    assert main(["prompts", "--per-class", "4", "--out", str(out), "--data-root", str(tiny_fmnist)]) == 0
    text = capsys.readouterr().out
    assert "[classname+hypernyms]" in text and "[in-captions]" in text and "item on a black background" in text
    df = pd.read_parquet(out)
    assert len(df) == 9 * 10 * 4 and set(df.columns) >= {"class_name", "prompt", "seed", "strategy"}
    assert main(["prompts", "--strategy", "no-such"]) == 2
    assert "unknown prompt strategy 'no-such'; known: classname," in capsys.readouterr().err


def test_wordnet_sources(tmp_path):
    from synscale.prompts.wordnet import WordNetUnavailable, load_wordnet

    wn = load_wordnet("debian")
    assert wn.synset("sandal.n.01").definition() == "a shoe consisting of a sole fastened by straps to the foot"
    assert len(wn._lexnames) == 45 and wn._lexnames[5] == "noun.animal"
    with pytest.raises(WordNetUnavailable, match="apt-get install -y wordnet-base"):
        load_wordnet(str(tmp_path))


def test_transformers_backends_word2sen_and_captioner(tiny_fmnist, tmp_path, capsys):
    from synscale.prompts.hf_backends import ImageToTextCaptioner, Seq2SeqSentences
    from tiny_pipelines import tiny_image_captioner, tiny_t5

    t5 = tiny_t5(tmp_path / "t5")
    sentences = Seq2SeqSentences(str(t5), max_new_tokens=8)
    a = sentences("Sandal", np.random.default_rng(1))
    assert a == sentences("Sandal", np.random.default_rng(1)) and a.startswith("Sandal")
    outs = {sentences("Sandal", np.random.default_rng(s)) for s in range(6)}
    assert len(outs) > 1  # sampling follows the prompt's seed
    cap_dir = tiny_image_captioner(tmp_path / "cap")
    captioner = ImageToTextCaptioner(str(cap_dir), max_new_tokens=4, batch_size=2)
    imgs = np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28)).astype(np.uint8)
    caps = captioner(imgs, ["a", "b", "c"])
    assert len(caps) == 3 and caps == captioner(imgs, ["a", "b", "c"])

    out = tmp_path / "p.csv"
    assert main(["prompts", "--strategy", "word2sen", "--strategy", "in-captions", "--per-class", "2",
                 "--word2sen-model", str(t5), "--captioner", f"hf:{cap_dir}", "--data-root", str(tiny_fmnist),
                 "--out", str(out)]) == 0
    df = pd.read_csv(out)
    w2s = df[df.strategy == "word2sen"]
    assert len(w2s) == 20 and all(p.startswith(c) for p, c in zip(w2s.prompt, w2s.class_name, strict=True))
    assert not w2s.prompt.str.contains("wooden table|shop window", regex=True).any()  # the model, not the composer
    assert (df[df.strategy == "in-captions"].prompt.str.len() > 0).all()
