"""[[grid]] tables expand into synthetic configurations (model x strategy x guidance), validated like every key;
`curves` says which configurations get every scale; the demo's grid covers the paper's tables A4-A6."""

import pytest

from synscale.config import ConfigError, find_study, load_study
from synscale.study import build_plan

BASE = """
name = "g"
scales = [100, 200, 400]
curves = {curves}
[data]
dataset = "fashion-mnist"
[train]
recipe = "miniature-cnn"
schedule = {{zero_scale = 50, iters_per_doubling = 10, warmup_per_doubling = 1}}
{extra}
"""


def study(tmp_path, extra, curves='["best", "worst"]'):
    p = tmp_path / "s.toml"
    p.write_text(BASE.format(curves=curves, extra=extra))
    return p


GRID = """
[[grid]]
model = "builtin:latent-diffusion"
strategy = "classname"
guidance = [1.5, 2, 4]
[[grid]]
model = "builtin:latent-diffusion"
strategy = ["classname", "word2sen"]
guidance = 2
[[grid]]
model = ["builtin:pixel-diffusion", "builtin:masked-token"]
strategy = "in-captions"
guidance = [1, 2]
batch_size = 100
steps = 3
"""


def test_grid_expands_names_dedupes_and_trains_at_the_largest_scale(tmp_path):
    cfg = load_study(study(tmp_path, GRID))
    syn = {s.name: s for s in cfg.synthetic}
    assert list(syn) == ["ld-classname-g1.5", "ld-classname-g2", "ld-classname-g4", "ld-word2sen-g2",
                         "pd-in-captions-g1", "pd-in-captions-g2", "mt-in-captions-g1", "mt-in-captions-g2"]
    # the table's other keys go to each of its configurations
    assert syn["pd-in-captions-g1"].steps == 3 and syn["ld-classname-g2"].steps == 0
    assert syn["pd-in-captions-g1"].batch_size == 100 and syn["pd-in-captions-g1"].guidance == 1.0
    assert all(s.scales == [400] for s in syn.values())  # one scale: the grid's
    assert cfg.source_scales("real") == [100, 200, 400]


def test_a_configuration_in_two_tables_is_one_unless_its_settings_differ(tmp_path):
    cfg = load_study(study(tmp_path, GRID))
    names = [s.name for s in cfg.synthetic]
    assert names.count("ld-classname-g2") == 1 and len(names) == 8  # in tables 1 and 2
    clash = GRID.replace('strategy = ["classname", "word2sen"]\nguidance = 2\n',
                         'strategy = ["classname", "word2sen"]\nguidance = 2\nsteps = 4\n')
    with pytest.raises(ConfigError, match="grid\\[1\\] makes a configuration named 'ld-classname-g2'"):
        load_study(study(tmp_path, clash))


def test_curves_by_name_and_all(tmp_path):
    cfg = load_study(study(tmp_path, GRID, '["ld-classname-g2"]'))
    syn = {s.name: s for s in cfg.synthetic}
    assert cfg.source_scales("ld-classname-g2") == [100, 200, 400]
    assert cfg.source_scales("ld-classname-g4") == [400]
    cfg = load_study(study(tmp_path, GRID, '["all"]'))
    assert all(cfg.source_scales(s.name) == [100, 200, 400] for s in cfg.synthetic)
    assert syn  # noqa


def test_best_and_worst_are_picked_by_a_select_stage(tmp_path):
    extra = GRID + '[[mix]]\nname = "scarce"\nsynthetic = "best"\nreal_images = 100\n'
    sp = build_plan(load_study(study(tmp_path, extra)))
    nodes = sp.plan.nodes
    select = nodes["select best and worst"]
    assert select.kind == "select" and len(select.deps) == 8  # the val evaluation of each configuration at 400
    assert all(nodes[d].kind == "evaluate" for d in select.deps)
    picked = [k for k in nodes if k.startswith(("train best", "train worst"))]
    assert sorted(picked) == ["train best D=100", "train best D=200", "train best D=400", "train worst D=100",
                              "train worst D=200", "train worst D=400"]  # at 400: the grid's model, on the other sets
    mix = [k for k in nodes if k.startswith("train scarce")]
    assert mix == ["train scarce D=200", "train scarce D=300", "train scarce D=500"]
    assert all("select best and worst" in nodes[k].deps for k in picked + mix)


@pytest.mark.parametrize("extra, message", [
    ('[[grid]]\nstrategy = "classname"\n', "grid[0] needs 'model'"),
    ('[[grid]]\nmodel = "builtin:latent-diffusion"\nguidance = []\n', "grid[0].guidance is an empty list"),
    ('[[grid]]\nmodel = "builtin:latent-diffusion"\nguidance = ["two"]\n', "guidance a number"),
    ('[[grid]]\nmodel = "builtin:latent-diffusion"\nname = "{family}-x"\n', "only {model}, {strategy} and {guidance}"),
    ('[[grid]]\nmodel = "builtin:latent-diffusion"\nguidance = [2, 4]\nname = "same"\n', "named 'same'"),
    ('[[grid]]\nmodel = "builtin:latent-diffusion"\nstrategy = "classnames"\n', "unknown prompt strategy 'classnames'"),
    ('[[grid]]\nmodel = "builtin:latent-diffusion"\nstepz = 3\n', "unknown key 'synthetic[0].stepz'"),
])
def test_grid_errors_name_the_file_and_the_table(tmp_path, extra, message):
    with pytest.raises(ConfigError) as e:
        load_study(study(tmp_path, extra))
    assert str(tmp_path / "s.toml") in str(e.value) and message in str(e.value)


def test_curves_errors(tmp_path):
    with pytest.raises(ConfigError, match="curves: 'ld-nope' is not a synthetic configuration"):
        load_study(study(tmp_path, GRID, '["ld-nope"]'))
    with pytest.raises(ConfigError, match="'best' and 'worst' pick among"):
        load_study(study(tmp_path, ""))


def test_the_demo_grid_covers_tables_a4_to_a6():
    cfg = load_study(find_study("fashion-mnist"))
    syn = cfg.synthetic
    ld = [s for s in syn if s.model == "builtin:latent-diffusion"]
    assert len({s.strategy for s in ld if s.guidance == 2.0}) >= 4  # A4: prompt strategies at one guidance
    families = {s.model for s in syn if s.strategy == "in-captions"}
    assert len(families) == 3  # A5: the three built-in families
    for model in families:  # each over a guidance grid
        assert len({s.guidance for s in syn if s.model == model and s.strategy == "in-captions"}) >= 3
    assert len({s.guidance for s in ld if s.strategy == "classname"}) >= 4  # A6
    assert len(cfg.scales) >= 5 and all(cfg.source_scales(s.name) == [max(cfg.scales)] for s in syn)
    assert cfg.curves == ["best", "worst"] and cfg.mix[0].synthetic == "best"
    full = load_study(find_study("fashion-mnist"), "full")
    assert full.repeats == 3 and all(full.source_scales(s.name) == full.scales for s in full.synthetic)


def test_one_parser_of_model_references():
    """`builtin:<family>[@<weights>]` is read in one place (synscale.modelref) by the grid's names, the
    estimate, the results, preflight and the generator alike."""
    from synscale.study.estimate import family
    from synscale.modelref import builtin_family, is_builtin
    from synscale.grid import short_model

    assert builtin_family("builtin:masked-token@/w/mt") == ("masked-token", "/w/mt")
    assert builtin_family("builtin:pixel-diffusion") == ("pixel-diffusion", "")
    assert builtin_family("/models/sd15") is None and not is_builtin("CompVis/stable-diffusion-v1-4")
    assert short_model("builtin:masked-token@/w/mt") == "mt" and short_model("/models/sd15/") == "sd15"
    assert family("builtin:pixel-diffusion@/w") == "builtin:pixel-diffusion"
