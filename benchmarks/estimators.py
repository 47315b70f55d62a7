"""The `estimators` section of the `regularization` benchmark: each `hypergrad.sklearn`
estimator against the scikit-learn CV estimator it replaces, fit to fit.

Pairs: `HyperLasso` / `LassoCV(cv=5)`, `HyperElasticNet` / `ElasticNetCV(cv=5, l1_ratio=
[.1, .5, .7, .9, .95, .99, 1])` (the ratios its docstring advises), `HyperRidge` /
`RidgeCV()` (both leave-one-out by default), and on classification `HyperLogisticRegression`
/ `LogisticRegressionCV(scoring="neg_log_loss")` with the L2 (lbfgs) and L1 (saga, its L1
solver) penalties, all at their defaults otherwise (5 folds each where the default is
folds).

Data sets: correlated synthetic regressions (AR(1) 0.5 columns, 20 true nonzeros, noise
1) of 300 x 1500 and 1000 x 5000 rows x features, a low-rank design (rank 20 plus small
noise, 400 x 2000), diabetes (442 x 10) and breast cancer (569 x 30), standardized; 80%
of the rows to fit, 20% to score.

Measured, in rounds (every estimator and baseline once per round, interleaved, so that
drift of the shared machine hits them alike): the wall time of `fit` in the same process
after a first fit (compiled), the median over rounds (5; 41 for pairs whose fits both
take under 50 ms, see `SHORT_ROUNDS`); the first fit's time (compilation
included, reported); the test score (R^2, and for the classifiers log-loss and accuracy);
and the time of `fit` in a fresh Python process whose compilation cache is warm (the
in-process fits filled it; import and data loading not counted), against an allowance
of scikit-learn's in-process fit time where that is 1 s or more, else that time plus 0.5 s
(issue 9's goal: `<= 1.0` of the allowance).
Goals (issue 9): our fit time over scikit-learn's `<= 0.3` (`HyperRidge`: `<= 1.0`, its cost
being the same one factorization); test score at least scikit-learn's minus 0.005 (R^2,
log-loss) or 0.01 (accuracy). NumPy/SciPy BLAS runs with one thread on both sides (see
`_fit`).

One lasso solve (`_solver_cases`): `hypergrad.solvers.CoordinateDescent` against skglm's
`Lasso` (working-set coordinate descent with Anderson extrapolation, compiled by Numba) on
the correlated 1000 x 5000 design (750 training rows; --quick: 300 x 1000), at
`alpha_max / 10`, `/ 38` (near the held-out optimum) and `/ 100`, to a duality gap of
`1e-6 ||y||^2 / n` (scikit-learn's `tol=1e-6`): from zero and warm-started from the
solution at a 10% larger alpha (a step along a path), each after a first (compiling)
call. skglm stops on its KKT violations, not on the gap: it runs at the largest of
`1e-4, 1e-5, ..., 1e-12` whose solution meets the gap (checked by an independent NumPy
computation of the gap, also applied to ours). Goal (issue 9: "warm, in-process"): the
warm-started solve `<= 1.5x` skglm's, with the gap met; the solve from zero is reported
beside it.
"""

import statistics
import time
import warnings

import numpy as np

from ._harness import case
from .regularization import ENET_L1_RATIOS, _data

ROUNDS = (5, 1)  # full, --quick
# Fits shorter than SHORT_S (both sides' medians after ROUNDS) get SHORT_ROUNDS rounds in
# all: a few-millisecond fit is timed to within the machine's jitter only over many.
SHORT_S, SHORT_ROUNDS = 0.05, (41, 1)


def _correlated(n, p, seed=0):
    """The regularization benchmark's AR(1) 0.5 design, with 20 true nonzeros."""
    return _data(n, p, seed=seed, nonzeros=20)


def _low_rank(n, p, rank=20, seed=1, nonzeros=20):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, p)) / np.sqrt(rank)
    X += 0.1 * rng.standard_normal((n, p))
    w = np.zeros(p)
    w[rng.choice(p, nonzeros, replace=False)] = rng.standard_normal(nonzeros)
    return X, X @ w + rng.standard_normal(n)


def _datasets(quick):
    from sklearn.datasets import load_breast_cancer, load_diabetes
    from sklearn.preprocessing import StandardScaler

    def std(X, y):
        return StandardScaler().fit_transform(X), y

    out = {
        "synthetic 300 x 1500": ("regression", _correlated(300, 1500)),
        "diabetes 442 x 10": ("regression", std(*load_diabetes(return_X_y=True))),
        "breast cancer 569 x 30": ("classification", std(*load_breast_cancer(return_X_y=True))),
    }
    if not quick:
        out["synthetic 1000 x 5000"] = ("regression", _correlated(1000, 5000))
        out["low rank 400 x 2000"] = ("regression", _low_rank(400, 2000))
    return out


def _pairs(kind):
    from sklearn.linear_model import ElasticNetCV, LassoCV, LogisticRegressionCV, RidgeCV

    from hypergrad.sklearn import HyperElasticNet, HyperLasso, HyperLogisticRegression, HyperRidge

    if kind == "regression":
        return {
            "lasso": (HyperLasso, lambda: LassoCV(cv=5), "<= 0.3"),
            "elastic net": (
                HyperElasticNet,
                lambda: ElasticNetCV(cv=5, l1_ratio=ENET_L1_RATIOS),
                "<= 0.3",
            ),
            "ridge": (HyperRidge, lambda: RidgeCV(), "<= 1.0"),
        }
    return {
        "l2 logistic": (
            lambda: HyperLogisticRegression(penalty="l2"),
            lambda: LogisticRegressionCV(
                scoring="neg_log_loss", l1_ratios=(0.0,), use_legacy_attributes=False
            ),
            "<= 0.3",
        ),
        "l1 logistic": (
            lambda: HyperLogisticRegression(penalty="l1"),
            lambda: LogisticRegressionCV(
                scoring="neg_log_loss",
                l1_ratios=(1.0,),
                solver="saga",
                use_legacy_attributes=False,
            ),
            "<= 0.3",
        ),
    }


def _scores(model, X, y, kind):
    if kind == "regression":
        return {"r2": float(model.score(X, y))}
    from sklearn.metrics import accuracy_score, log_loss

    # Not model.score: LogisticRegressionCV(scoring="neg_log_loss") scores by its scoring,
    # which made the baseline's "accuracy" a negative log-loss (an accuracy goal that could
    # not fail).
    proba = model.predict_proba(X)
    return {
        "log_loss": float(log_loss(y, proba)),
        "accuracy": float(accuracy_score(y, model.predict(X))),
    }


def _fit(make, X, y):
    """`(seconds, fitted model)`. NumPy and SciPy run with one BLAS thread for both
    sides (scikit-learn's faster setting on this shared 2-core machine, and what our
    estimators' host-side work, such as `HyperRidge`'s factorization, then gets too);
    JAX keeps its own threads."""
    from threadpoolctl import threadpool_limits

    model = make()
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # saga and coordinate descent at max_iter
        start = time.perf_counter()
        model.fit(X, y)
        return time.perf_counter() - start, model


_FRESH = """
import json, sys, time, warnings
import numpy as np
from threadpoolctl import threadpool_limits
import hypergrad.sklearn as hs
data = np.load(sys.argv[1])
model = getattr(hs, sys.argv[2])(**json.loads(sys.argv[3]))
with warnings.catch_warnings(), threadpool_limits(1):
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    model.fit(data["X"], data["y"])
print(time.perf_counter() - start)
"""

# Our estimators as the fresh process builds them (by name, from hypergrad.sklearn).
_FRESH_MODELS = {
    "lasso": ("HyperLasso", {}),
    "elastic net": ("HyperElasticNet", {}),
    "ridge": ("HyperRidge", {}),
    "l2 logistic": ("HyperLogisticRegression", {"penalty": "l2"}),
    "l1 logistic": ("HyperLogisticRegression", {"penalty": "l1"}),
}


def _fresh_fit(name, X, y):
    """Seconds of `fit` in a new Python process (the compilation cache as the user has
    it: warm after the fits of this process)."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    cls, kwargs = _FRESH_MODELS[name]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npz")
        np.savez(path, X=X, y=y)
        out = subprocess.run(
            [sys.executable, "-c", _FRESH, path, cls, json.dumps(kwargs)],
            capture_output=True,
            text=True,
            check=True,
        )
    return float(out.stdout.strip().splitlines()[-1])


def _score_goals(ours, theirs, kind):
    """Test-score goals: ours at least theirs minus 0.005 (R^2), at most plus 0.005
    (log-loss), at least minus 0.01 (accuracy)."""
    if kind == "regression":
        return {"r2": ours["r2"] >= theirs["r2"] - 0.005}
    return {
        "log_loss": ours["log_loss"] <= theirs["log_loss"] + 0.005,
        "accuracy": ours["accuracy"] >= theirs["accuracy"] - 0.01,
    }


def _lasso_gap(X, y, w, alpha):
    """The lasso's duality gap `P(w) - D(theta)` for `1/(2n) ||y - X w||^2 + alpha ||w||_1`,
    `theta` the residual scaled into the dual feasible set (NumPy, independent of both
    solvers)."""
    n = len(y)
    r = y - X @ w
    primal = r @ r / (2 * n) + alpha * np.abs(w).sum()
    theta = r / max(1.0, np.abs(X.T @ r).max() / (n * alpha))
    dual = (y @ y - (y - theta) @ (y - theta)) / (2 * n)
    return primal - dual


def _solver_cases(quick):
    """One lasso solve: ours against skglm's, from zero and warm-started (see the module
    docstring)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from skglm import Lasso as SkglmLasso

    from hypergrad import problems
    from hypergrad.solvers import run as run_solver

    n, p = (300, 1000) if quick else (1000, 5000)
    X, y = _correlated(n, p)
    X, y = X[: 3 * n // 4], y[: 3 * n // 4]
    target = 1e-6 * (y @ y) / len(y)
    amax = float(np.abs(X.T @ y).max() / len(y))
    pr = problems.lasso(X, y, X, y, tol=1e-6)
    solver, fun, train = pr.solver, pr.inner, pr.train

    @jax.jit
    def ours(alpha, w, state):
        h = {"alpha": alpha}
        state = solver.reinit(fun, w, state, h, train) if state is not None else None
        return run_solver(solver, fun, w, h, train, state=state)

    def solve_ours(alpha, start):
        w0, state = start if start is not None else (jnp.zeros(p), None)
        sol = ours(alpha, w0, state)
        return np.asarray(jax.block_until_ready(sol.params)), (sol.params, sol.state)

    def skglm_tol(alpha, start):
        for tol in 10.0 ** -np.arange(4, 13):
            m = SkglmLasso(alpha=alpha, tol=tol, fit_intercept=False, warm_start=True)
            if start is not None:
                m.coef_ = start.copy()
            m.fit(X, y)
            if _lasso_gap(X, y, m.coef_, alpha) <= target:
                return tol
        return tol

    def solve_skglm(alpha, start, tol):
        m = SkglmLasso(alpha=alpha, tol=tol, fit_intercept=False, warm_start=True)
        if start is not None:
            m.coef_ = start.copy()
        m.fit(X, y)
        return m.coef_

    cases = []
    for divisor in (10, 38, 100):
        alpha = amax / divisor
        w_prev, ours_prev = solve_ours(1.1 * alpha, None)
        skglm_prev = solve_skglm(1.1 * alpha, None, 1e-12)
        for start in ("zero", "warm"):
            o_start = None if start == "zero" else ours_prev
            s_start = None if start == "zero" else skglm_prev
            tol = skglm_tol(alpha, s_start)
            w_ours = solve_ours(alpha, o_start)[0]  # compiles on the first call
            t_ours, t_skglm = [], []
            for _ in range(ROUNDS[int(quick)] * 3):
                start_t = time.perf_counter()
                w_ours = solve_ours(alpha, o_start)[0]
                t_ours.append(time.perf_counter() - start_t)
                start_t = time.perf_counter()
                w_skglm = solve_skglm(alpha, s_start, tol)
                t_skglm.append(time.perf_counter() - start_t)
            figures = {
                "time_s": statistics.median(t_ours),
                "runs_s": t_ours,
                "gap": float(_lasso_gap(X, y, w_ours, alpha)),
                "nonzeros": int(np.sum(w_ours != 0)),
            }
            baseline = {
                "name": f"skglm Lasso (tol={tol:g})",
                "time_s": statistics.median(t_skglm),
                "runs_s": t_skglm,
                "gap": float(_lasso_gap(X, y, w_skglm, alpha)),
            }
            title = f"solver lasso {len(y)} x {p} alpha_max/{divisor} from {start}: vs skglm"
            goal = "<= 1.5" if start == "warm" else None
            cases.append(case(title, figures, baseline=baseline, goal=goal))
            cases[-1]["gap_target"] = float(target)
            cases[-1]["gap_met"] = bool(figures["gap"] <= target)
            if goal:
                cases[-1]["met"] = cases[-1]["met"] and cases[-1]["gap_met"]
    return cases


def run(quick: bool = False) -> dict:
    rounds = ROUNDS[int(quick)]
    cases, definitions = _solver_cases(quick), {}
    for data_name, (kind, (X, y)) in _datasets(quick).items():
        n = len(y)
        rng = np.random.default_rng(0)
        order = rng.permutation(n)
        cut = int(0.8 * n)
        tr, te = order[:cut], order[cut:]
        Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]
        pairs = _pairs(kind)
        first = {name: _fit(ours, Xtr, ytr)[0] for name, (ours, _, _) in pairs.items()}
        times = {name: ([], []) for name in pairs}
        models = {}
        for r in range(max(rounds, SHORT_ROUNDS[int(quick)])):
            for name, (ours, theirs, _) in pairs.items():
                if r >= rounds and max(map(statistics.median, times[name])) > SHORT_S:
                    continue  # more rounds only for the pairs of short fits
                t_ours, m_ours = _fit(ours, Xtr, ytr)
                t_theirs, m_theirs = _fit(theirs, Xtr, ytr)
                times[name][0].append(t_ours)
                times[name][1].append(t_theirs)
                models[name] = (m_ours, m_theirs)
        for name, (_, _, goal) in pairs.items():
            m_ours, m_theirs = models[name]
            s_ours, s_theirs = _scores(m_ours, Xte, yte, kind), _scores(m_theirs, Xte, yte, kind)
            met = _score_goals(s_ours, s_theirs, kind)
            figures = {
                "time_s": statistics.median(times[name][0]),
                "runs_s": times[name][0],
                "first_fit_s": first[name],
                "test": s_ours,
                "outer_steps": getattr(m_ours, "n_iter_", None),
                "stop_reason": getattr(m_ours, "stop_reason_", None),
            }
            baseline = {
                "name": type(m_theirs).__name__,
                "time_s": statistics.median(times[name][1]),
                "runs_s": times[name][1],
                "test": s_theirs,
            }
            title = f"estimators {data_name} {name}: second fit vs {type(m_theirs).__name__}"
            cases.append(case(title, figures, baseline=baseline, goal=goal))
            cases[-1]["score_goals_met"] = met
            theirs_s = baseline["time_s"]
            allowance = theirs_s if theirs_s >= 1.0 else theirs_s + 0.5
            fresh = {"time_s": _fresh_fit(name, Xtr, ytr)}
            allowed = {
                "name": f"{type(m_theirs).__name__} in-process time"
                + ("" if theirs_s >= 1.0 else " + 0.5 s"),
                "time_s": allowance,
                "fit_s": theirs_s,
            }
            title = f"estimators {data_name} {name}: fresh process, warm cache, vs allowance"
            cases.append(case(title, fresh, baseline=allowed, goal="<= 1.0"))
        definitions[data_name] = {"kind": kind, "rows": n, "features": X.shape[1]}
    definitions["rounds"] = rounds
    definitions["rounds_short_fits"] = {"under_s": SHORT_S, "rounds": SHORT_ROUNDS[int(quick)]}
    definitions["split"] = "80% of the rows (a fixed random permutation) to fit, 20% to score"
    return {"cases": cases, "definitions": definitions}
