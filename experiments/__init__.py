"""Reproductions of the field's classic claims, each a module `experiments/NAME.py` run by
`python -m experiments run NAME [--quick]`, writing `experiments/results/NAME.json` with
its claims, the source's numbers, ours with intervals over seeds, and verdicts. The
format and the helpers are in `experiments._common`; `paper/` builds the paper from the
results files.
"""
