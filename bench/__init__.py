"""Benchmarks: `python -m bench` (see bench/__main__.py). Never collected by the test suite."""
