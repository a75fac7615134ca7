"""Metrics of synthetic training sets: recognizability, diversity, Fréchet distance, an LPIPS-style distance on
the reference network (`lpips_ref`; the paper's AlexNet LPIPS is `lpips_alex`), precision/recall,
density/coverage, Vendi; per configuration and per class (docs/metrics.md)."""

import dataclasses
from typing import Any

TEST_SEED_OFFSET = 1_000_003  # a configuration's test set: its seed + this, so no prompt/seed repeats its training set


def synthetic_test_config(syn: Any, per_class: int) -> Any:
    """The configuration of `syn`'s test set (a synscale.config.SyntheticConfig): the same model, prompts and
    guidance, other seeds."""
    return dataclasses.replace(syn, per_class=per_class, seed=syn.seed + TEST_SEED_OFFSET)
