from pathlib import Path

import pytest

from synscale.config import ConfigError, find_study, load_study, parse_override

GOOD = """
name = "t"
scales = [1000, 2000]
[train]
lr = 0.01
[train.schedule]
zero_scale = 500
iters_per_doubling = 10
warmup_per_doubling = 1
[sizes.smoke]
scales = [1000]
train.lr = 0.5
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "study.toml"
    p.write_text(text)
    return p


def test_valid_file_and_sizes(tmp_path):
    p = write(tmp_path, GOOD)
    cfg = load_study(p)
    assert cfg.scales == [1000, 2000] and cfg.train.lr == 0.01 and cfg.train.schedule.iters_per_doubling == 10.0
    smoke = load_study(p, "smoke")
    assert smoke.scales == [1000] and smoke.train.lr == 0.5
    assert load_study(p, "full") == cfg  # no [sizes.full]: the file as written


def test_unknown_key_names_file_key_and_allowed(tmp_path):
    p = write(tmp_path, GOOD.replace("lr = 0.01", "lr_rate = 0.01"))
    with pytest.raises(ConfigError) as e:
        load_study(p)
    msg = str(e.value)
    assert str(p) in msg and "'train.lr_rate'" in msg and "did you mean 'lr'" in msg
    assert "allowed keys in [train]:" in msg and "batch_size" in msg and "weight_decay" in msg


def test_unknown_top_level_and_nested_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'scale'.*allowed keys in \[study\]"):
        load_study(write(tmp_path, GOOD.replace("scales = [1000, 2000]", "scales = [1000, 2000]\nscale = 3")))
    with pytest.raises(ConfigError, match=r"'train.schedule.zero'.*allowed keys in \[train.schedule\]: zero_scale"):
        load_study(write(tmp_path, GOOD.replace("zero_scale = 500", "zero = 500")))


def test_mistyped_values(tmp_path):
    with pytest.raises(ConfigError, match=r"'train.lr' must be a number, got 'fast'"):
        load_study(write(tmp_path, GOOD.replace("lr = 0.01", 'lr = "fast"')))
    with pytest.raises(ConfigError, match=r"'scales\[1\]' must be an integer"):
        load_study(write(tmp_path, GOOD.replace("[1000, 2000]", "[1000, 2.5]")))
    with pytest.raises(ConfigError, match=r"'train.augment' must be one of 'none', 'flip', 'flip-shift'"):
        load_study(write(tmp_path, GOOD.replace("lr = 0.01", 'augment = "rotate"')))
    with pytest.raises(ConfigError, match="strictly increasing"):
        load_study(write(tmp_path, GOOD.replace("[1000, 2000]", "[2000, 1000]")))
    with pytest.raises(ConfigError, match="must exceed train.schedule.zero_scale"):
        load_study(write(tmp_path, GOOD.replace("[1000, 2000]", "[400, 2000]")))
    with pytest.raises(ConfigError, match="missing required key"):
        load_study(write(tmp_path, GOOD.replace('name = "t"', "")))


def test_size_overrides_are_validated(tmp_path):
    p = write(tmp_path, GOOD.replace("train.lr = 0.5", "train.lrr = 0.5"))
    with pytest.raises(ConfigError, match=r"\[sizes.smoke\].*unknown key 'train.lrr'"):
        load_study(p, "smoke")
    with pytest.raises(ConfigError, match="unknown size 'huge'"):
        load_study(p, "huge")


def test_set_overrides(tmp_path):
    p = write(tmp_path, GOOD)
    cfg = load_study(p, overrides=["train.lr=0.002", "scales=[1000, 4000]", "train.model=resnet18", "data.root=/x/y"])
    assert cfg.train.lr == 0.002 and cfg.scales == [1000, 4000] and cfg.train.model == "resnet18"
    assert cfg.data.root == "/x/y"
    with pytest.raises(ConfigError, match=r"--set train.lrr=1.*unknown key 'train.lrr'"):
        load_study(p, overrides=["train.lrr=1"])
    with pytest.raises(ConfigError, match=r"'train.batch_size' must be an integer"):
        load_study(p, overrides=["train.batch_size=big"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("train.lr")


def test_frozen_and_shipped_study_validates():
    cfg = load_study(find_study("fashion-mnist"))
    with pytest.raises(AttributeError):
        cfg.name = "x"  # type: ignore[misc]
    for size in ("smoke", "default", "full"):
        assert len(load_study(find_study("fashion-mnist"), size).scales) >= 3
    demo = load_study(find_study("fashion-mnist"))
    assert len(demo.scales) >= 5 and len(demo.synthetic) == 16  # the grid (tests/test_grid.py has its shape)
    assert {s.model for s in demo.synthetic} == {f"builtin:{f}" for f in ("latent-diffusion", "pixel-diffusion",
                                                                          "masked-token")}
    with pytest.raises(ConfigError, match="shipped studies: .*fashion-mnist"):
        find_study("no-such-study")


def test_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_study(write(tmp_path, "name = "))


def test_identity_reads_the_rule_declared_on_each_field() -> None:
    """schema.identity: a field is in the id unless declared not_in_id, or in_id_if_changed and at its default;
    nested configs and lists of them follow their own fields' rules."""
    from dataclasses import dataclass, field

    from synscale.schema import IF_CHANGED, OUT, identity, in_id_if_changed, keys_by_rule, not_in_id

    @dataclass(frozen=True)
    class Inner:
        a: int = 1
        fast: bool = not_in_id(False)
        new: str = in_id_if_changed("old")

    @dataclass(frozen=True)
    class Outer:
        x: float = 0.5
        where: str = not_in_id("here")
        inner: Inner = field(default_factory=Inner)
        many: list[Inner] = in_id_if_changed(factory=list)

    assert identity(Outer()) == {"x": 0.5, "inner": {"a": 1}}
    o = Outer(where="there", inner=Inner(fast=True, new="new"), many=[Inner(a=2)])
    assert identity(o) == {"x": 0.5, "inner": {"a": 1, "new": "new"}, "many": [{"a": 2}]}
    assert keys_by_rule(Outer, OUT) == {"where": "here"} and keys_by_rule(Outer, IF_CHANGED) == {"many": []}
    # the study's own tables: where a run executes is in no id
    from synscale.config import GenerationConfig, MetricsConfig
    from synscale.train.config import TrainConfig

    assert set(keys_by_rule(TrainConfig, OUT)) == {"recipe", "loader", "workers", "checkpoint_every", "tensorboard",
                                                   "token_cache"}
    assert set(keys_by_rule(GenerationConfig, OUT)) == {"executor", "ray_actors", "ray_cpus", "ray_gpus"}
    assert set(keys_by_rule(MetricsConfig, OUT)) == {"batch_size", "device", "compile"}
