"""Benchmarks: hypergrad measured side by side with the tools a user would pick instead.

Run them with `python -m benchmarks run [--quick] [--out DIR] [NAME ...]`; each writes
`benchmarks/results/NAME.json` (see `/work/shared/BENCHMARKS.md` for what is measured
and how). Benchmarks are not tests: they run on demand and write results files.
"""
