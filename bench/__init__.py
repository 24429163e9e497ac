"""Benchmarks: synthetic anime clips with a known ideal motion, quality metrics against it, and speed runs."""
