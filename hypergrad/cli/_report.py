"""`hypergrad report STORAGE [--study NAME] [--out DIR] [--no-plots]`.

Prints a table of a study's trials (number, state, value(s), budget, seed, wall time,
inner solves, configuration) and its best value(s) (the Pareto front for several
objectives), and writes Optuna's matplotlib plots: `history.png` (optimization history)
and `params.png` (each parameter against the value), one pair per objective. Then the
analysis sections (`_report_analysis`: importance, sensitivity, seed robustness, the
validation-test gap), as text, as JSON with `--json PATH` and as plots.

Exit codes: 0 done; 2 the storage or study cannot be read, or matplotlib is missing
(the message says so; `--no-plots` prints the table alone).
"""

import math
import sys
import warnings
from pathlib import Path

from optuna.trial import TrialState

from . import _report_analysis


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="print a study's trials and best values, and plot them"
    )
    p.add_argument("storage", help="a SQLite file, a journal file (.log) or an Optuna URL")
    p.add_argument("--study", default=None, help="the study (needed if there are several)")
    p.add_argument("--out", default=None, help="folder for the plots (default report-STUDY)")
    p.add_argument("--no-plots", action="store_true", help="print the table only")
    _report_analysis.add_arguments(p)  # importance, sensitivity, seeds, gap; --json
    p.set_defaults(func=_main)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    return str(v)


def table(records) -> list[str]:
    """The lines of the trials table."""
    trials = records.trials()
    n_obj = len(records.study.directions)
    heads = [
        "#",
        "state",
        *(["value"] if n_obj == 1 else [f"value{i}" for i in range(n_obj)]),
        "budget",
        "seed",
        "wall_s",
        "solves",
        "config",
    ]
    rows = []
    for t in trials:
        vals = list(t.values) if t.values is not None else [None] * n_obj
        a = t.user_attrs
        config = " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
        rows.append(
            [
                str(t.number),
                t.state.name,
                *map(_fmt, vals),
                _fmt(a.get("budget")),
                _fmt(a.get("seed")),
                _fmt(a.get("wall_time_s")),
                _fmt(a.get("inner_solves")),
                config,
            ]
        )
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads) - 1)]
    lines = []
    for r in [heads, *rows]:
        lines.append(
            "  ".join(c.rjust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        )
    return lines


def best_lines(records) -> list[str]:
    study = records.study
    done = [t for t in records.trials() if t.state == TrialState.COMPLETE]
    if not done:
        return ["no trial has completed"]
    if len(study.directions) == 1:
        b = study.best_trial
        return [f"best: trial {b.number}, value {_fmt(b.value)}, config {b.params}"]
    lines = [f"Pareto front ({len(study.best_trials)} trials):"]
    for b in study.best_trials:
        lines.append(f"  trial {b.number}: values {[_fmt(v) for v in b.values]}, config {b.params}")
    return lines


def plot(records, out: Path) -> list[Path]:
    """Write the plots into `out`; the paths written."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "plots need matplotlib: pip install 'hypergrad-jax[plot]' (or pass --no-plots)"
        ) from None
    matplotlib.use("Agg")  # files only, whether or not there is a display
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    out.mkdir(parents=True, exist_ok=True)
    study = records.study
    written = []
    n_obj = len(study.directions)
    for i in range(n_obj):
        suffix = "" if n_obj == 1 else f"-{i}"
        kw = (
            {}
            if n_obj == 1
            else {"target": lambda t, i=i: t.values[i], "target_name": f"objective {i}"}
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            for name, fn in (
                ("history", ovm.plot_optimization_history),
                ("params", ovm.plot_slice),
            ):
                ax = fn(study, **kw)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
                path = out / f"{name}{suffix}.png"
                fig.savefig(path, dpi=80, bbox_inches="tight")
                plt.close(fig)
                written.append(path)
    return written


def _main(args) -> int:
    from ..records import Records, RecordsError

    try:
        records = Records.open(args.storage, args.study, read_only=True)  # never writes
        lines = table(records)
        best = best_lines(records)
    except RecordsError as e:
        print(f"hypergrad report: {e}", file=sys.stderr)
        return 2
    print(f"study {records.name!r} in {records.where}: {len(lines) - 1} trials")
    print("\n".join(lines))
    print("\n".join(best))
    if not args.no_plots and len(lines) > 1:
        out = Path(args.out or f"report-{records.name}")
        try:
            paths = plot(records, out)
        except ImportError as e:
            print(f"hypergrad report: {e}", file=sys.stderr)
            return 2
        print("plots: " + ", ".join(str(p) for p in paths))
    return _report_analysis.run(records, args, Path(args.out or f"report-{records.name}"))
