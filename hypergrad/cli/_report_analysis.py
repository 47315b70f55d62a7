"""The analysis sections of `hypergrad report`: importance, sensitivity, seed robustness
and the validation-test gap of a recorded study, as text, JSON and plots.

Interface (what `_report` calls): `add_arguments(parser)` adds the options and the help
text that documents every section; `run(records, args, out) -> int` prints the sections,
writes the JSON (`--json`) and the plots (into `out`, unless `--no-plots`), and returns
the exit code (0; 2 for an option that cannot be honored, with the reason on stderr).

Invariant: the study is only read. A section that cannot be computed from what the
record holds says why and what would make it possible, and the others still run.
Computation happens only where the record (or an option) names code to run: the tuner's
problem factory or `--problem` for the sensitivity and the held-out re-check, the
recorded objective for `--reseed`.
"""

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
from optuna.study import StudyDirection
from optuna.trial import TrialState

SECTIONS = ("importance", "sensitivity", "seeds", "gap")
RESEED_TOP = 5  # configurations `--reseed` re-runs

EPILOG = """\
sections (--sections, all by default):

  importance   Global importance of each dimension over the completed trials, by
               Optuna's fANOVA (variance of the objective explained by each dimension's
               main effect, in a random forest fit to the trials; dimensions absent from
               some trials, i.e. conditional ones, are not assessed) and PED-ANOVA (how
               differently each dimension is distributed among the best 10% of trials;
               conditional dimensions included). The numbers are Optuna's
               get_param_importances, normalized to sum to 1, one table per objective.
               Plot: importance.png.

  sensitivity  Local sensitivity at one trial (--trial, default the best): the
               hypergradient of the validation objective in each continuous dimension's
               unconstrained coordinate u (df/du, what the tuner descends along), scaled
               to the dimension's range (df/dt, t the position in [0, 1] on the
               dimension's linear or log scale: the first-order change over the whole
               range), and the diagonal of the Hessian (d2f/du2, d2f/dt2) by
               Hessian-vector products when there are at most 32 scalar entries. Needs
               the bilevel problem: recorded by the tuner (hypergrad.tune.tune with a
               problem factory), or given by --problem MODULE:FUNCTION. Plot:
               sensitivity.png.

  seeds        Robustness over seeds: each configuration's mean over seeds, standard
               deviation and 95% Student-t interval; how often it ranks in the top k
               (--top-k) on a single seed, with a Clopper-Pearson interval; and the
               probability that it beats the chosen configuration (best mean) on a fresh
               seed, with a bootstrap interval. Read from the tuner's per-seed values or
               from equal configurations recorded with several seeds; --reseed N re-runs
               the 5 best configurations on N new seeds instead. Plot: seeds.png.

  gap          Validation-to-test gap of the chosen configuration: test minus validation
               value (sign flipped for a maximized objective) and its ratio to the
               validation value; a warning above --gap-threshold (default 10%, see
               hypergrad.analysis.GAP_THRESHOLD). Read from the trials' recorded test
               values (an objective's Outcome attrs {"test_value": ...}), with the rank
               correlation of validation and test values over trials; otherwise the
               chosen configuration is re-checked on the problem's test data when the
               problem is known (as for sensitivity). Plot: gap.png.

JSON: --json PATH writes every section's numbers to PATH. A multi-objective study gets
the importance, seeds and gap sections per objective.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The analysis options of `hypergrad report`, and the help text of its sections."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to show, among {', '.join(SECTIONS)}; "
        "'none' for the table alone (default: all)",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="write the sections as JSON")
    p.add_argument("--trial", type=int, default=None, help="sensitivity at this trial")
    p.add_argument(
        "--problem",
        default=None,
        metavar="MODULE:FUNCTION",
        help="factory problem(config, *, seed) -> BilevelProblem for sensitivity and re-check",
    )
    p.add_argument(
        "--method",
        choices=("implicit", "unrolled"),
        default="implicit",
        help="how sensitivity differentiates (unrolled for learning rates)",
    )
    p.add_argument("--top-k", type=int, default=3, help="rank-stability cut of 'seeds'")
    p.add_argument(
        "--reseed",
        type=int,
        default=0,
        metavar="N",
        help="re-run the 5 best configurations on N seeds",
    )
    p.add_argument(
        "--gap-threshold", type=float, default=None, help="relative gap that warns (default 0.10)"
    )
    p.add_argument("--seed", type=int, default=0, help="fANOVA's forest seed")


def _sections(text: str) -> tuple[str, ...]:
    if text.strip() == "none":
        return ()
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in chosen if s not in SECTIONS]
    if bad:
        raise ValueError(f"--sections: unknown section(s) {bad}; choose among {list(SECTIONS)}")
    return chosen


def _check_args(args) -> None:
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    if args.reseed < 0 or args.reseed == 1:
        raise ValueError(f"--reseed needs at least 2 seeds (or 0 for none), got {args.reseed}")
    t = args.gap_threshold
    if t is not None and not (math.isfinite(t) and t >= 0):
        raise ValueError(f"--gap-threshold must be a non-negative number, got {t}")


# -- computing the sections --------------------------------------------------------------


def _direction(study, i) -> str:
    return "minimize" if study.directions[i] == StudyDirection.MINIMIZE else "maximize"


def _best_trial(study, i):
    sign = 1.0 if study.directions[i] == StudyDirection.MINIMIZE else -1.0
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if math.isfinite(t.values[i])
    ]
    return min(done, key=lambda t: sign * t.values[i]) if done else None


def _importance(study, seed) -> list[dict]:
    from ..analysis import importances

    out = []
    for r in importances(study, seed=seed):
        out.append(
            {
                "evaluator": r.evaluator,
                "objective": r.objective,
                "values": {k: float(v) for k, v in r.values.items()},
                "not_assessed": list(r.not_assessed),
                "num_trials": r.num_trials,
                "error": r.error,
            }
        )
    return out


def _method(name):
    from .. import Implicit, Unrolled

    return Implicit() if name == "implicit" else Unrolled()


def _problem_at(records, trial, factory):
    from ..analysis import recorded_problem

    return recorded_problem(trial, factory)


def _sensitivity(records, args) -> dict:
    from ..analysis import sensitivity

    study = records.study
    if args.trial is not None:
        trial = records.trial(args.trial)
        if trial.state != TrialState.COMPLETE:
            return {"unavailable": f"trial {trial.number} is {trial.state.name}, not COMPLETE"}
    elif len(study.directions) > 1:
        return {"unavailable": "several objectives have no single best trial: pass --trial N"}
    else:
        trial = _best_trial(study, 0)
        if trial is None:
            return {"unavailable": "no trial has completed"}
    try:
        problem, space, config = _problem_at(records, trial, args.problem)
        s = sensitivity(problem, space, config, method=_method(args.method))
    except Exception as e:  # a report shows the other sections whatever breaks here
        hint = ""
        if "the inner solver but not its optimality condition" in str(e):
            hint = " (pass --method unrolled for hyperparameters only the solver reads)"
        return {"unavailable": f"{type(e).__name__}: {e}{hint}", "trial": trial.number}
    return {"trial": trial.number, "config": _plain(config), **s.as_dict()}


def _seeds(records, args, i) -> dict:
    from ..analysis import reseed, seed_robustness, seed_table

    try:
        table = (
            reseed(records, top=RESEED_TOP, seeds=args.reseed, objective=i)
            if args.reseed
            else seed_table(records.study, i)
        )
    except Exception as e:  # the recorded objective may fail to import or to run
        return {"unavailable": f"re-seeding failed: {type(e).__name__}: {e}"}
    if table is None:
        return {
            "unavailable": "no configuration was recorded with two or more seeds: "
            "re-run the best ones with --reseed N (runs the recorded objective)"
        }
    finite = np.all(np.isfinite(table.values), axis=1)
    if finite.sum() < 1:
        return {"unavailable": "every re-seeded run gave a non-finite value"}
    labels = [lab for lab, ok in zip(table.labels, finite, strict=True) if ok]
    r = seed_robustness(
        table.values[finite], top_k=args.top_k, direction=_direction(records.study, i)
    )
    out = r.as_dict(labels)
    out["source"] = table.source
    out["seeds"] = table.seeds
    out["values"] = {lab: v.tolist() for lab, v in zip(labels, table.values[finite], strict=True)}
    return out


def _gap(records, args, i) -> dict:
    import scipy.stats

    from ..analysis import GAP_THRESHOLD, held_out_recheck, test_values, validation_gap

    threshold = GAP_THRESHOLD if args.gap_threshold is None else args.gap_threshold
    direction = _direction(records.study, i)
    rows = test_values(records.study, i)
    if rows:
        sign = 1.0 if direction == "minimize" else -1.0
        best = min(rows, key=lambda r: sign * r[1])
        g = validation_gap(best[1], best[2], direction=direction, threshold=threshold, warn=False)
        out = {"source": "recorded", "trial": best[0], **g._asdict(), "describe": g.describe()}
        out["trials"] = [list(r) for r in rows]
        if len(rows) >= 3:
            rho = scipy.stats.spearmanr([r[1] for r in rows], [r[2] for r in rows]).statistic
            out["spearman"] = float(rho) if math.isfinite(rho) else None
        return out
    trial = _best_trial(records.study, i)
    if trial is None:
        return {"unavailable": "no trial has completed"}
    reason = (
        "no trial recorded a test value (an objective returns Outcome(value, "
        'attrs={"test_value": ...})) and the problem is not known for a re-check'
    )
    try:
        problem, space, config = _problem_at(records, trial, args.problem)
    except Exception as e:
        return {"unavailable": f"{reason} ({type(e).__name__}: {e})"}
    if problem.test is None:
        return {"unavailable": f"{reason}: the rebuilt problem has no test data"}
    import jax.numpy as jnp

    h = dict(problem.hparams)
    for n, v in config.items():
        h[n] = jnp.broadcast_to(jnp.asarray(v, jnp.result_type(h[n])), jnp.shape(h[n]))
    try:
        g = held_out_recheck(
            problem, h, method=_method(args.method), threshold=threshold, warn=False
        )
    except Exception as e:
        return {"unavailable": f"the held-out re-check failed: {type(e).__name__}: {e}"}
    return {"source": "re-check", "trial": trial.number, **g._asdict(), "describe": g.describe()}


def analyse(records, args) -> dict:
    """Every chosen section's numbers, JSON-ready."""
    sections = _sections(args.sections)
    study = records.study
    data: dict = {"study": records.name, "sections": list(sections), "objectives": []}
    if "sensitivity" in sections:
        data["sensitivity"] = _sensitivity(records, args)
    imp = _importance(study, args.seed) if "importance" in sections else []
    for i in range(len(study.directions)):
        obj: dict = {"index": i, "direction": _direction(study, i)}
        if "importance" in sections:
            obj["importance"] = [r for r in imp if r["objective"] == i]
        if "seeds" in sections:
            obj["seeds"] = _seeds(records, args, i)
        if "gap" in sections:
            obj["gap"] = _gap(records, args, i)
        data["objectives"].append(obj)
    return _plain(data)


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray | np.generic):
        return _plain(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN or infinity
    return x


# -- text ----------------------------------------------------------------------------------


def _f(v, spec=".4g") -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return "[" + ", ".join(_f(x, spec) for x in v) + "]"
    return format(v, spec)


def _table(heads, rows) -> list[str]:
    cells = [heads, *rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(heads))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def _importance_lines(rows) -> list[str]:
    names = []
    for r in rows:
        names += [n for n in list(r["values"]) + r["not_assessed"] if n not in names]
    heads = ["dimension", *(r["evaluator"] for r in rows)]
    body = [[n, *(_f(r["values"].get(n), ".3f") for r in rows)] for n in names]
    lines = _table(heads, body) if names else []
    for r in rows:
        if r["error"]:
            lines.append(f"{r['evaluator']}: not computed: {r['error']}")
        elif r["not_assessed"]:
            lines.append(
                f"{r['evaluator']} does not assess {', '.join(r['not_assessed'])} "
                "(absent from some trials: conditional)"
            )
    return lines


def _sensitivity_lines(s) -> list[str]:
    if "unavailable" in s:
        return [f"not computed: {s['unavailable']}"]
    heads = ["dimension", "value", "position t", "df/du", "df/dt", "d2f/du2", "d2f/dt2"]
    body = []
    hd, shd = s["hess_diag"] or {}, s["scaled_hess_diag"] or {}
    for n in s["ranking"]:
        body.append(
            [
                n,
                _f(s["config"][n]),
                _f(s["position"][n], ".3f"),
                _f(s["grad"][n]),
                _f(s["scaled_grad"][n]),
                _f(hd.get(n)),
                _f(shd.get(n)),
            ]
        )
    lines = [f"at trial {s['trial']}, value {s['value']:.6g}, by {s['method']}"]
    lines += _table(heads, body)
    if s["hess_diag"] is None:
        lines.append("Hessian diagonal skipped (more than 32 scalar entries)")
    return lines


def _seeds_lines(s) -> list[str]:
    if "unavailable" in s:
        return [f"not computed: {s['unavailable']}"]
    k, conf = s["top_k"], round(100 * s["confidence"])
    lines = [
        f"{len(s['configs'])} configurations x {s['num_seeds']} seeds ({s['source']}); "
        f"chosen: {s['chosen']}"
    ]
    heads = [
        "config",
        "mean",
        "std",
        f"{conf}% CI",
        f"in top {k}",
        "(CI)",
        "P(beats chosen)",
        "(CI)",
    ]
    body = [
        [
            str(r["config"]),
            _f(r["mean"], ".6g"),
            _f(r["std"]),
            _f(r["ci"]),
            _f(r["in_top_k"], ".2f"),
            _f(r["in_top_k_ci"], ".2f"),
            _f(r["p_better"], ".2f"),
            _f(r["p_better_ci"], ".2f"),
        ]
        for r in s["configs"]
    ]
    return lines + _table(heads, body)


def _gap_lines(g) -> list[str]:
    if "unavailable" in g:
        return [f"not computed: {g['unavailable']}"]
    what = "recorded test values" if g["source"] == "recorded" else "re-checked on test data"
    lines = [f"trial {g['trial']} ({what}): {g['describe']}"]
    if g.get("trials") is not None:
        rho = g.get("spearman")
        lines.append(
            f"{len(g['trials'])} trials with test values; rank correlation of validation "
            f"and test values {_f(rho, '.3f')}"
        )
    if g["exceeds"]:
        lines.append("WARNING: the validation set was overfit; re-check on fresh data or nested CV")
    return lines


def text(data) -> list[str]:
    """The sections as lines of text."""
    lines = []
    many = len(data["objectives"]) > 1
    if "sensitivity" in data:
        lines += ["", "== sensitivity (hypergradient) ==", *_sensitivity_lines(data["sensitivity"])]
    for obj in data["objectives"]:
        tag = f" (objective {obj['index']}, {obj['direction']})" if many else ""
        if "importance" in obj:
            lines += ["", f"== importance{tag} ==", *_importance_lines(obj["importance"])]
        if "seeds" in obj:
            lines += ["", f"== seed robustness{tag} ==", *_seeds_lines(obj["seeds"])]
        if "gap" in obj:
            lines += ["", f"== validation-test gap{tag} ==", *_gap_lines(obj["gap"])]
    return lines


# -- plots ---------------------------------------------------------------------------------


def plot(data, out: Path) -> list[Path]:
    """One figure per computed section (per objective where it applies); the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    many = len(data["objectives"]) > 1

    def save(fig, name):
        path = out / f"{name}.png"
        fig.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    s = data.get("sensitivity")
    if s and "unavailable" not in s:
        names = s["ranking"]
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
        vals = [s["magnitude"][n] for n in names]
        ax.barh(names[::-1], vals[::-1], color="tab:blue")
        ax.set_xlabel("|df/dt|: first-order change over the dimension's range")
        ax.set_title(f"hypergradient sensitivity at trial {s['trial']}")
        save(fig, "sensitivity")
    for obj in data["objectives"]:
        suffix = f"-{obj['index']}" if many else ""
        rows = [r for r in obj.get("importance", []) if r["values"]]
        if rows:
            names = []
            for r in rows:
                names += [n for n in r["values"] if n not in names]
            fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) * len(rows) + 1.2))
            height = 0.8 / len(rows)
            ys = np.arange(len(names))
            for j, r in enumerate(rows):
                ax.barh(
                    ys + j * height,
                    [r["values"].get(n, 0.0) for n in names],
                    height=height,
                    label=r["evaluator"],
                )
            ax.set_yticks(ys + 0.4 - height / 2, names)
            ax.invert_yaxis()
            ax.set_xlabel("importance (normalized)")
            ax.legend()
            save(fig, f"importance{suffix}")
        seeds = obj.get("seeds")
        if seeds and "unavailable" not in seeds:
            configs = seeds["configs"][:10]
            fig, ax = plt.subplots(figsize=(6, 0.4 * len(configs) + 1.2))
            for y, r in enumerate(configs):
                vals = seeds["values"][str(r["config"])]
                ax.plot(vals, [y] * len(vals), "o", color="0.6", ms=4)
                lo, hi = r["ci"]
                if lo is not None and hi is not None:
                    ax.plot([lo, hi], [y, y], "-", color="tab:blue")
                ax.plot([r["mean"]], [y], "D", color="tab:blue")
            ax.set_yticks(range(len(configs)), [str(r["config"]) for r in configs])
            ax.invert_yaxis()
            ax.set_xlabel("objective per seed (mean and 95% interval)")
            save(fig, f"seeds{suffix}")
        gap = obj.get("gap")
        if gap and "unavailable" not in gap and gap.get("trials"):
            v = np.array([r[1] for r in gap["trials"]])
            t = np.array([r[2] for r in gap["trials"]])
            fig, ax = plt.subplots(figsize=(5, 5))
            ax.plot(v, t, "o", color="0.5", ms=4, label="trials")
            ax.plot([gap["val"]], [gap["test"]], "*", color="tab:red", ms=12, label="chosen")
            lo, hi = min(v.min(), t.min()), max(v.max(), t.max())
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="test = validation")
            sign = 1.0 if obj["direction"] == "minimize" else -1.0
            th = gap["threshold"]
            xs = np.linspace(lo, hi, 50)
            ax.plot(xs, xs + sign * th * np.abs(xs), "k--", lw=0.8, label=f"{th:.0%} gap")
            ax.set_xlabel("validation value")
            ax.set_ylabel("test value")
            ax.legend()
            save(fig, f"gap{suffix}")
    return written


# -- entry point ---------------------------------------------------------------------------


def run(records, args, out: Path) -> int:
    """Print (or write as JSON) the chosen sections and plot them; the exit code."""
    from ..records import RecordsError

    try:
        _check_args(args)
        _sections(args.sections)
        if args.trial is not None:
            records.trial(args.trial)  # refuses a number the study does not have
    except (ValueError, RecordsError) as e:
        print(f"hypergrad report: {e}", file=sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental and few-trial warnings
        data = analyse(records, args)
    print("\n".join(text(data)))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
        except OSError as e:
            print(f"hypergrad report: --json {args.json}: {e}", file=sys.stderr)
            return 2
        print(f"analysis: {args.json}")
    if not args.no_plots and data["sections"]:
        try:
            paths = plot(data, out)
        except ImportError:
            print(
                "hypergrad report: plots need matplotlib: pip install 'hypergrad-jax[plot]' "
                "(or pass --no-plots)",
                file=sys.stderr,
            )
            return 2
        if paths:
            print("analysis plots: " + ", ".join(str(p) for p in paths))
    return 0
