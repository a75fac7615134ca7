"""Every registry's entries, by name: each declares what the code around it reads (its capabilities, its columns,
its evaluation sets), so a new entry is one entry in one place."""

from __future__ import annotations

import pytest

from synscale.data.datasets import DATASETS, DataSource
from synscale.evaluate.registry import EVALUATIONS
from synscale.metrics.core import METRICS, metric_columns


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_is_a_data_source(name: str) -> None:
    """A source shares DataSource's interface and reads with its own items/load/splits/fingerprint; what it cannot
    say cheaply (count, class counts, image sizes) is None by the base, never probed for with hasattr."""
    cls = DATASETS.get(name)
    assert issubclass(cls, DataSource)
    for method in ("splits", "fingerprint", "items", "load"):
        assert getattr(cls, method) is not getattr(DataSource, method), f"{name} does not read its own {method}"
    assert cls.samples is DataSource.samples  # one definition of items + load


@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_declares_its_columns(name: str) -> None:
    m = METRICS.get(name)
    assert m.columns and set(m.columns) <= set(metric_columns())
    assert set(m.per_class) <= set(m.columns) and set(m.per_class) <= set(metric_columns(per_class=True))


@pytest.mark.parametrize("name", EVALUATIONS.names())
def test_every_evaluation_adds_its_sets_only_where_configured(name: str) -> None:
    """On the demo (val, four shifts; no OOD sets, probes or zero-shot sets) and with one of each configured, an
    entry gives one evaluation per configured set, each on a node of the plan."""
    from synscale.config import find_study, load_study
    from synscale.study.build import _Builder

    extra = ['evaluate.sets=[{name = "o", root = "/x"}]', 'evaluate.probes=[{name = "p", root = "/y"}]',
             'evaluate.zero_shot=[{name = "z", dataset = "fashion-mnist"}]']
    expect = {"val": (["val"], ["val"]), "shifts": (["sketch", "rendition", "v2", "a"],) * 2,
              "sets": ([], ["o"]), "probes": ([], ["probe:p"]), "zero-shot": ([], ["z"])}[name]
    for overrides, names in zip(([], extra), expect, strict=True):
        cfg = load_study(find_study("fashion-mnist"), overrides=overrides)
        b = _Builder(cfg)
        train, test = b.shards(cfg.data.train_split), b.shards(cfg.data.test_split)
        evals = EVALUATIONS.get(name)(b, cfg, test, train)
        assert [e.name for e in evals] == names
        for e in evals:
            keys = [e.set_key] if e.probe is None else list(e.probe_sets)
            assert keys and all(k in b.sp.plan.nodes for k in keys)


@pytest.mark.parametrize("study", ["fashion-mnist", "imagenet-sd", "laion-clip"])
def test_every_plan_node_calls_a_stage_function_of_one_signature(study: str) -> None:
    """Every node of a plan runs a stage function of its package's stages module (or of the study layer, where a
    stage composes packages) with the one signature fn(ctx, *, <inputs>, <params>): the node's inputs and params
    are exactly its keyword-only parameters (the required ones all given), so no adapter sits between them."""
    import inspect

    from synscale.config import find_study, load_study
    from synscale.study import build_plan

    homes = {"synscale.data.stages", "synscale.prompts.stages", "synscale.generate.stages", "synscale.train.stages",
             "synscale.evaluate.stages", "synscale.study.nodes", "synscale.study.reference",
             "synscale.study.adaptive", "synscale.study.retrieve"}
    for node in build_plan(load_study(find_study(study))).plan.nodes.values():
        assert node.fn.__module__ in homes, (node.key, node.fn.__module__)
        params = list(inspect.signature(node.fn).parameters.values())
        assert params[0].name == "ctx" and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, node.key
        kw = {p.name: p for p in params[1:]}
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in kw.values()), node.key
        given = set(node.inputs) | set(node.args)
        assert given <= set(kw), (node.key, given - set(kw))
        assert {n for n, p in kw.items() if p.default is inspect.Parameter.empty} <= given, node.key
