"""Benchmarks, run as scripts (`python bench/NAME.py`).

A package only so that mypy names them `bench.NAME`: `bench/calibration.py` would otherwise
clash with the `calibration` package.
"""
