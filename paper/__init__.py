"""The paper: `paper/paper.md` with placeholders, built into `paper/build/paper.html` by
`python -m paper build`, every number, table and figure drawn from
`experiments/results/*.json`. See `paper._build` for the placeholder syntax.
"""
