"""Metrics of synthetic training sets: recognizability, diversity, Fréchet distance, an LPIPS-style distance on
the reference network (`lpips_ref`; the paper's AlexNet LPIPS is `lpips_alex`), precision/recall,
density/coverage, Vendi; per configuration and per class (docs/metrics.md)."""

TEST_SEED_OFFSET = 1_000_003  # a configuration's test set: its seed + this, so no prompt/seed repeats its training set
