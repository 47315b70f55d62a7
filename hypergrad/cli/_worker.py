"""`hypergrad worker STORAGE STUDY --space MOD:NAME [--objective MOD:FN] [--sampler S] ...`.

Joins a study (creating it if no worker has yet) and runs black-box trials into it with
`hypergrad.search.run`, as one of several workers on one or many machines. Start the
same command on each machine, pointing at one PostgreSQL database (or, on one machine
or a shared file system, a SQLite or journal file):

    export PGPASSWORD=...          # or a ~/.pgpass line; the URL need not carry it
    hypergrad worker postgresql://me@db.lab/runs ridge \\
        --objective mylab.ridge:objective --space mylab.ridge:SPACE --sampler tpe --trials 50

`--objective` defaults to the objective the study's trials record (when there is one);
the space is named by import reference since conditions and forbidden combinations live
in code. Samplers: `grid` (workers split the grid's points; runs until it is done),
`random`, `sobol` (each worker draws its own points: give each its own `--seed`; by
default a fresh one, printed), and Optuna's `tpe`, `gp`, `cmaes`, `nsga2` (asking from
the shared study). A worker killed in the middle leaves its trial `RUNNING`; the next
worker started on that host fails it and, for `grid`, runs its point again.

Nothing printed shows the password of the storage URL.

Exit codes: 0 done; 2 bad arguments, or the storage, study, objective or space cannot
be read; 130 interrupted (the trial in flight is recorded as failed).
"""

import os
import secrets
import sys

SAMPLERS = ("grid", "random", "sobol", "tpe", "gp", "cmaes", "nsga2")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "worker", help="join a shared study and run trials into it (one of several workers)"
    )
    p.add_argument("storage", help="a PostgreSQL URL, a SQLite file or a journal file (.log)")
    p.add_argument("study", help="the study's name (created if it does not exist yet)")
    p.add_argument("--space", required=True, help="the search space, as module:NAME")
    p.add_argument(
        "--objective",
        default=None,
        help="objective(config, *, seed) as module:function (default: the study's)",
    )
    p.add_argument("--sampler", default="grid", choices=SAMPLERS, help="default: grid")
    p.add_argument(
        "--trials", type=int, default=None, help="trials to run (grid: default all points)"
    )
    p.add_argument("--seed", type=int, default=None, help="proposer and run seed")
    p.add_argument("--resolution", type=int, default=5, help="grid points per real dimension")
    p.add_argument("--batch-size", type=int, default=1, help="proposals asked at once")
    p.add_argument(
        "--directions",
        nargs="+",
        default=None,
        help="minimize/maximize per objective for a new study (default: the study's, or minimize)",
    )
    p.add_argument("--x64", action="store_true", help="compute in float64 (jax_enable_x64)")
    p.set_defaults(func=_main)


def _fail(message: str) -> int:
    from ..records import mask_secrets

    print(f"hypergrad worker: {mask_secrets(message)}", file=sys.stderr)
    return 2


def _records(args):
    from ..records import Records, StorageError, StudyNotFoundError

    if args.directions is None:  # join with the study's directions, if it exists
        try:
            return Records.open(args.storage, args.study, create=False)
        except StudyNotFoundError:
            pass
        except StorageError:
            if "://" in args.storage or os.path.exists(args.storage):
                raise  # the file is there and unreadable: say so, do not overwrite it
    return Records.open(args.storage, args.study, directions=tuple(args.directions or ["minimize"]))


def _objective_ref(args, records) -> str:
    from ..records import RecordsError

    if args.objective:
        return args.objective
    refs = {t.user_attrs.get("objective") for t in records.trials()} - {None}
    if len(refs) != 1:
        raise RecordsError(
            f"give --objective: study {records.name!r} records "
            + (f"several objectives {sorted(refs)}" if refs else "no importable objective yet")
        )
    return refs.pop()


def _proposer(args, space, directions, seed):
    from ..search import GridSearch, OptunaSearch, RandomSearch, SobolSearch

    if args.sampler == "grid":
        return GridSearch(space, resolution=args.resolution)
    if args.sampler == "random":
        return RandomSearch(space, seed)
    if args.sampler == "sobol":
        return SobolSearch(space, seed)
    return OptunaSearch(space, args.sampler, seed=seed, directions=directions)


def _main(args) -> int:
    from ..records import RecordsError, resolve
    from ..search import GridSearch, run
    from ..space import Space

    if args.trials is not None and args.trials < 0:
        return _fail(f"--trials must be a non-negative int, got {args.trials}")
    if args.trials is None and args.sampler != "grid":
        return _fail(f"--sampler {args.sampler} needs --trials (only a grid ends by itself)")
    if args.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    seed = secrets.randbits(31) if args.seed is None else args.seed
    try:
        records = _records(args)
        space = resolve(args.space)
        if not isinstance(space, Space):
            raise RecordsError(f"--space {args.space!r} is a {type(space).__name__}, not a Space")
        ref = _objective_ref(args, records)
        objective = resolve(ref)
        directions = tuple(d.name.lower() for d in records.study.directions)
        proposer = _proposer(args, space, directions, seed)
        n = len(proposer) if args.trials is None else args.trials
        print(
            f"hypergrad worker: study {records.name!r} in {records.where}, "
            f"{len(records.trials())} trials there; objective {ref}, sampler {args.sampler}, "
            f"seed {seed}",
            flush=True,
        )
        result = run(objective, proposer, n, records=records, batch_size=args.batch_size, seed=seed)
    except KeyboardInterrupt:
        print("hypergrad worker: interrupted; the trial in flight is failed", file=sys.stderr)
        return 130
    except (RecordsError, ValueError, TypeError, ImportError) as e:
        return _fail(str(e))
    done = f"{len(result.trials)} trials" + (
        f" ({result.trials[0]} to {result.trials[-1]})" if result.trials else ""
    )
    best = "" if result.best_value is None else f"; best value {result.best_value:.6g}"
    left = ""
    if isinstance(proposer, GridSearch):
        left = "; the grid is done" if proposer.exhausted else "; grid points remain"
    print(f"hypergrad worker: ran {done}{best}{left}")
    return 0
