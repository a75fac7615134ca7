"""Evaluation: classification loss and top-1, overall and per class."""
