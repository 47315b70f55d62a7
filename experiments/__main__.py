"""`python -m experiments run [--quick] [--out DIR] [NAME ...]` and `python -m experiments list`.

`run` runs the named experiments (all if none) one after another and writes
`experiments/results/NAME.json` (quick runs: `experiments/results/quick/NAME.json`),
then prints each claim with its verdict. See `experiments/_common.py` for the format.
"""

import argparse
import sys
from pathlib import Path

from ._common import RESULTS_DIR, names, run_experiment, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run experiments and write their results files")
    run_p.add_argument("names", nargs="*", metavar="NAME", help="experiments (all if none)")
    run_p.add_argument("--quick", action="store_true", help="small sizes, few seeds (smoke)")
    run_p.add_argument(
        "--out", type=Path, default=None, help=f"results folder (default {RESULTS_DIR})"
    )
    sub.add_parser("list", help="list the experiments")
    args = parser.parse_args(argv)
    known = names()
    if args.command == "list":
        print("\n".join(known))
        return 0
    chosen = args.names or known
    unknown = [n for n in chosen if n not in known]
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; known: {known}")
    for name in chosen:
        path = run_experiment(name, quick=args.quick, out_dir=args.out)
        print(summary(path), file=sys.stdout, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
