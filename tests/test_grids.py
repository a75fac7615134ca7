"""The paper's grids as study files: they validate and dry-run on a machine without GPUs or data, in
seconds and without torch, with the plan and its compute estimate; [models], [generation], per-source scales
and the large-scale CLIP recipe."""

import re
import subprocess
import sys

import pytest

from synscale.config import ConfigError, find_study, load_study


def dry_run(study: str, *extra: str) -> str:
    code = ("import sys; from synscale.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'the dry-run imported torch'; raise SystemExit(rc)")
    res = subprocess.run([sys.executable, "-c", code, "study", study, "--dry-run", "--no-checks", *extra], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_imagenet_grid_is_the_papers_appendix_c():
    cfg = load_study(find_study("imagenet-sd"))
    syn = {s.name: s for s in cfg.synthetic}
    assert len(syn) == 52  # the distinct configurations of tables A4-A6
    by_model = {m: sum(s.model == cfg.models[m] for s in syn.values()) for m in ("sd", "imagen", "muse")}
    assert by_model == {"sd": 45, "imagen": 3, "muse": 4}
    assert sorted(s.guidance for s in syn.values() if s.strategy == "in-captions" and s.model == cfg.models["sd"]) == \
        [1.5, 2, 3, 4, 6, 7.5, 8, 10]
    assert all(s.captioner == "hf:/models/blip2-opt-2.7b" for s in syn.values() if s.strategy == "in-captions")
    # [generation] defaults under each table's own keys
    assert syn["sd-classname-cfg2"].steps == 50 and syn["sd-classname-cfg2"].executor == "ray"
    assert syn["muse-incaptions-cfg0.3"].steps == 12 and syn["muse-incaptions-cfg0.3"].size == 0
    # the scaling curves of figure 3: SD to 64M, Imagen and Muse to 8M, real to the largest balanced subset
    assert cfg.source_scales("sd-incaptions-cfg2")[-1] == 64_000_000
    assert cfg.source_scales("imagen-incaptions-cfg1.5")[-1] == 8_000_000
    assert cfg.source_scales("sd-clip7-cfg3") == [1_300_000]
    assert cfg.source_scales("real") == [125_000, 250_000, 500_000, 732_000]
    # a path given once for every configuration
    moved = load_study(find_study("imagenet-sd"), overrides=["models.sd=/mnt/sd15"])
    assert sum(s.model == "/mnt/sd15" for s in moved.synthetic) == 45


def test_grids_dry_run_without_torch_with_their_compute():
    out = dry_run("imagenet-sd")
    assert ("plan: 1123 stages (shards 8, ood 4, subset 96, train 96, evaluate 475, probe 285, generate 104, captions 2, "
            "metrics 53)") in out
    # 0.125M-0.5M: synscale's floor, said where it applies
    assert "   125,000    3,052     321   12,500,992   100.0  (schedule.min_epochs floor" in out
    assert "64,000,000  665,000  70,000" in out  # above the first doubling, the paper's rule
    # 52 x 1.3M, less the five scaling configurations' grid points, plus their 64M / 8M sets and the
    # 53 metrics test sets of 50 per class
    assert "images generated: 271,700,000" in out
    assert "generate     104     271,700,000            0      28,756.0  H100" in out
    assert "measured: SD 1.5 (random weights), 512 px, 50 steps" in out and "assumed:" in out
    # the longest run (a 64M-image ViT-B/16) by machines of 8 GPUs: its device-hours / (8 x machines)
    m = re.search(r"longest training run: train (\S+) D=64000000: ([\d,.]+) h on one device; wall time on machines of "
                  r"nproc = 8 device\(s\) each \(train.nodes; linear scaling, assumed\) 1: ([\d.]+) h, 2: ([\d.]+) h, "
                  r"4: ([\d.]+) h, 8: ([\d.]+) h", out)
    assert m, out[-1500:]
    hours = float(m.group(2).replace(",", ""))
    assert [float(m.group(i)) for i in (3, 4, 5, 6)] == pytest.approx([hours / 8 / k for k in (1, 2, 4, 8)], abs=0.06)

    out = dry_run("laion-clip", "--set", "clip.scales=[1000000, 128000000]")
    assert "from 100,000,000 captions: ViT-B-16, batch 32768" in out
    assert " 1,000,000    3,907     600" in out and "128,000,000  125,000   2,000" in out  # Table A3's two recipes
    assert "CLIP sources: clip-real, sd-cfg1.5, mixed (6 models" in out
    assert "images generated: 128,000,000" in out
    # img2dataset's JPEGs kept (auto) against PNG: the pairs' bytes, 128M of them at 224 px, by the format ratios
    png = dry_run("laion-clip", "--set", "clip.scales=[1000000, 128000000]", "--set", 'clip.pairs.image_format="png"')
    tb = [float(re.search(r"image sets stored .*: ~([\d.]+) TB", o).group(1)) for o in (out, png)]
    assert tb[1] - tb[0] == pytest.approx(128e6 * 224 * 224 * 3 * (0.5 - 0.13) / 1e12, rel=0.02)


def test_models_generation_defaults_and_source_scales_validate():
    path = find_study("fashion-mnist")
    with pytest.raises(ConfigError, match=r"uses \$\{models.sd\} but \[models\] has no 'sd'; set it with --set models.sd=PATH"):
        load_study(path, "smoke", ['synthetic=[{name = "a", model = "${models.sd}"}]'])
    cfg = load_study(path, "smoke", ["generation.steps=3", "curves=[]", "mix=[]", "grid=[]",
                                     'synthetic=[{name = "a", model = "builtin:latent-diffusion"}, '
                                     '{name = "b", model = "builtin:latent-diffusion", steps = 5, scales = [100, 200]}]'])
    assert [s.steps for s in cfg.synthetic] == [3, 5]
    assert cfg.source_scales("a") == cfg.scales == [100, 200, 400] and cfg.source_scales("b") == [100, 200]
    with pytest.raises(ConfigError, match="scales must be positive, strictly increasing"):
        load_study(path, "smoke", ["data.scales=[2000, 1000]"])
    # stage ids: a configuration's own scales do not enter its generated set's id (its size is per_class)
    from synscale.config import SyntheticConfig
    from synscale.schema import OUT, keys_by_rule

    assert "scales" in keys_by_rule(SyntheticConfig, OUT)
