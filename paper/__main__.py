"""`python -m paper build [--results DIR] [--out DIR] [--no-figures] [--allow-quick]` and
`python -m paper check [--results DIR] [--out DIR] [--allow-quick]`.

`build` writes `OUT/paper.html` (default `paper/build/`) and its figures from the results
files; `check` re-reads the built document and reports every cited number that differs
from the results file it cites (exit status 1 if any).
"""

import argparse
import sys
from pathlib import Path

from ._build import BUILD_DIR, RESULTS_DIR, build, check


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("build", "build the paper"), ("check", "check a built paper")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--results", type=Path, default=RESULTS_DIR, help="results folder")
        p.add_argument("--out", type=Path, default=BUILD_DIR, help="output folder")
        p.add_argument("--allow-quick", action="store_true", help="a draft from quick (smoke) runs")
        if name == "build":
            p.add_argument("--no-figures", action="store_true", help="skip the figures")
    args = parser.parse_args(argv)
    if args.command == "build":
        path = build(
            args.results, args.out, figures=not args.no_figures, allow_quick=args.allow_quick
        )
        print(f"wrote {path}")
        return 0
    problems = check(args.out / "paper.html", args.results, allow_quick=args.allow_quick)
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
