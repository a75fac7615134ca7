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
