"""Benchmarks and checks, each run from the repository's root as
`python -m tools.NAME` (e.g. `python -m tools.bench_eval --help`)."""
