"""Benchmarks for attncourse. Run them with `make bench` or `python -m benchmarks`.

Each benchmark is a module ``benchmarks/bench_<name>.py`` that defines ``main()``;
benchmarks/run.py finds and runs them. Outputs belong in benchmarks/results/ (git-ignored).
"""
