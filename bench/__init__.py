"""Benchmarks of the running stack; run from the repository root, e.g. `python -m bench.offline`."""
