"""A study with a synthetic configuration: a (tiny, real) diffusers pipeline generates the set, which
is trained on at every scale beside the real data."""

import json
from pathlib import Path

import pandas as pd
import pytest

from synscale.cli import main
from synscale.config import ConfigError, load_study


@pytest.fixture(scope="module")
def study_file(synthetic_study_file) -> Path:
    """The tiny synthetic study (conftest.SYNTHETIC_STUDY)."""
    return synthetic_study_file


def test_study_trains_on_real_and_synthetic(finished_study, study_file):
    work = finished_study  # the study run once for the session (conftest): read here, run again in place below
    scaling = pd.read_parquet(work / "results" / "scaling.parquet")
    assert sorted(scaling.source.unique()) == ["real", "tiny-sd-cfg2-w2s"]
    assert scaling.groupby("source").scale.apply(list).to_dict() == {"real": [200, 400], "tiny-sd-cfg2-w2s": [200, 400]}
    fits = pd.read_parquet(work / "results" / "fits.parquet")
    assert sorted(fits.source) == ["real", "tiny-sd-cfg2-w2s"]
    gen = sorted((p for p in (work / "stages" / "generate").iterdir() if not p.name.startswith(".")),
                 key=lambda p: json.loads((p / "stage.json").read_text())["params"]["per_class"])
    assert len(gen) == 2  # the training set (40 per class) and the metrics' test set (50 per class, other seeds)
    test_manifest = pd.read_parquet(gen[1] / "manifest.parquet")
    assert len(test_manifest) == 500 and not set(test_manifest.seed) & set(pd.read_parquet(gen[0] / "manifest.parquet").seed)
    metrics = pd.read_parquet(work / "results" / "metrics.parquet")
    assert metrics.config.tolist() == ["real", "tiny-sd-cfg2-w2s"] and metrics.n_test.tolist()[1] == 500
    manifest = pd.read_parquet(gen[0] / "manifest.parquet")
    assert len(manifest) == 400 and (manifest.guidance_scale == 2.0).all()  # 40 per class, for scale 400
    assert (gen[0] / "arrays.npy").exists()
    assert "tiny-sd-cfg2-w2s" in (work / "report" / "index.html").read_text()
    # everything is cached on a second run
    before = (gen[0] / "stage.json").stat().st_mtime_ns
    assert main(["study", str(study_file), "--workdir", str(work), "-q"]) == 0
    assert (gen[0] / "stage.json").stat().st_mtime_ns == before


def test_synthetic_configs_are_validated(study_file, tmp_path):
    text = study_file.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('strategy = "word2sen"', 'strategy = "poetry"'))
    with pytest.raises(ConfigError, match=r"\[synthetic\[0\]\] unknown prompt strategy 'poetry'"):
        load_study(bad)
    bad.write_text(text.replace("guidance = 2.0", "guidanse = 2.0"))
    with pytest.raises(ConfigError, match=r"unknown key 'synthetic\[0\].guidanse' \(did you mean 'guidance'\?\)"):
        load_study(bad)
    bad.write_text(text + text[text.index("[[synthetic]]"):])
    with pytest.raises(ConfigError, match="distinct names"):
        load_study(bad)


def test_in_captions_captions_are_a_stage_of_their_own_made_once(study_file, tiny_fmnist, tmp_path):
    """The captions in-captions prompts draw from are one cached stage per captioner and seed, with the captioner's
    resources: run again, the study captions nothing (it used to caption every in-captions configuration's pool,
    2 here, on every run, before it knew its set was there). The pool is the one the dataset itself gives, so the
    sets' prompts, and so their ids, are as before."""
    from synscale.config import find_study
    from synscale.data.datasets import create_dataset
    from synscale.prompts.captioners import CAPTIONERS, captions_per_class
    from synscale.prompts.stages import read_caption_pool
    from synscale.stage import StageResult
    from synscale.study import build_plan

    calls = []

    @CAPTIONERS.register("counted-attributes")
    def counted(images, keys):
        calls.append(len(keys))
        return CAPTIONERS.create("attributes", images, keys)

    try:
        text = study_file.read_text().replace('strategy = "word2sen"', 'strategy = "in-captions"\ncaptioner = "counted-attributes"')
        second = text[text.index("[[synthetic]]"):].replace('name = "tiny-sd-cfg2-w2s"', 'name = "tiny-sd-cfg4"').replace(
            "guidance = 2.0", "guidance = 4.0")
        path = tmp_path / "study.toml"
        path.write_text(text + second + "\n[metrics]\ntest_from = \"training\"\nper_class = 10\n")
        work = tmp_path / "w"
        assert main(["study", str(path), "--workdir", str(work), "-q"]) == 0
        assert calls and sum(calls) == 2000  # one pool: 200 images of each of the 10 classes, in batches
        pools = [p for p in (work / "stages" / "captions").iterdir() if not p.name.startswith(".")]
        assert len(pools) == 1
        calls.clear()
        assert main(["study", str(path), "--workdir", str(work), "-q"]) == 0
        assert calls == []
    finally:
        CAPTIONERS._entries.pop("counted-attributes", None)
    ds = create_dataset("fashion-mnist", str(tiny_fmnist))
    assert read_caption_pool(StageResult("captions", "x", pools[0], True)) == captions_per_class(ds, "train", "attributes",
                                                                                                 pool=200)
    cfg = load_study(find_study("imagenet-sd"))
    nodes = {k: n for k, n in build_plan(cfg).plan.nodes.items() if n.kind == "captions"}
    assert len(nodes) == 2 and all(n.needs.gpus == 1 and n.needs.gpu_optional for n in nodes.values())  # BLIP-2
