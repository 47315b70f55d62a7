"""`hypergrad reproduce STORAGE --study NAME --trial N [--rtol R]`.

Re-runs a recorded trial from its record (objective, configuration, seed, budget) and
says whether the result matches: bit for bit on the recorded CPU, device and library
versions, within `--rtol` (default 1e-6) elsewhere; see `hypergrad.records.reproduce`.

Exit codes: 0 reproduced; 1 not reproduced; 2 the record cannot be read or re-run.
"""

import sys


def register(subparsers) -> None:
    from ..records._reproduce import DEFAULT_RTOL

    p = subparsers.add_parser("reproduce", help="re-run a recorded trial and compare")
    p.add_argument("storage", help="a SQLite file, a journal file (.log) or an Optuna URL")
    p.add_argument("--study", default=None, help="the study (needed if there are several)")
    p.add_argument("--trial", type=int, required=True, help="the trial number")
    p.add_argument(
        "--rtol",
        type=float,
        default=DEFAULT_RTOL,
        help=f"tolerance off the recorded machine (default {DEFAULT_RTOL:g})",
    )
    p.set_defaults(func=_main)


def _main(args) -> int:
    from ..records import RecordsError, reproduce

    try:
        result = reproduce(args.storage, args.study, args.trial, rtol=args.rtol)
    except (RecordsError, ValueError) as e:
        print(f"hypergrad reproduce: {e}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0 if result.matches else 1
