"""Metrics of synthetic training sets: recognizability, diversity, Fréchet distance, LPIPS, precision/
recall, density/coverage, Vendi; per configuration and per class (docs/metrics.md)."""
