"""`regularization`: time to tune a lasso penalty, HOAG against scikit-learn and Optuna.

Case covered (see the results file's `definitions` and `not_covered`): a synthetic
correlated design with a sparse truth (n=1000 rows, p=5000 features, AR(1) correlation
0.5, 50 nonzero coefficients, noise 1), split 750 training / 250 held-out rows; the
criterion is the held-out mean squared error of the lasso at `alpha`.

- target `v_best`: the best held-out MSE over a dense grid (200 values from `alpha_max`
  to `alpha_max / 1000`, scikit-learn's `lasso_path` at tol 1e-10), or any method's
  tight re-evaluation if lower; `v_null`: the MSE of the zero model.
- every method's proposals are re-evaluated afterwards (untimed) with a tight
  scikit-learn fit, so an optimistic inexact value counts for nothing;
- time to target: wall time from the start (before the method sees the data,
  compilation included) until the best re-evaluated value has normalized suboptimality
  `s <= 1e-2` and `s <= 1e-3` (BENCHMARKS.md), median of 3 runs; HOAG's runs after the
  first reuse compiled programs (reported separately as `warm`).
- baselines: `LassoCV` with the same held-out split (`cv=[(train, val)]`, defaults: 100
  alphas, tol 1e-4), Optuna's TPE driving `Lasso` fits (log-uniform alpha, 3 seeds).
- weighted lasso (5000 penalties) started from HOAG's lasso penalty, against the best
  single penalty of the grid, on held-out and test loss (a second 250-row test split).
"""

import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from hypergrad import problems  # noqa: E402
from hypergrad.tune import hoag  # noqa: E402

from ._harness import case  # noqa: E402


def _data(n, p, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    for j in range(1, p):
        X[:, j] = 0.5 * X[:, j - 1] + np.sqrt(0.75) * X[:, j]
    w = np.zeros(p)
    w[rng.choice(p, 50, replace=False)] = rng.standard_normal(50)
    y = X @ w + rng.standard_normal(n)
    return X, y


def _mse(X, y, w):
    r = X @ w - y
    return float(r @ r / len(y))


def _tight(Xt, yt, Xv, yv, alpha):
    from sklearn.linear_model import Lasso

    m = Lasso(alpha=float(alpha), fit_intercept=False, tol=1e-10, max_iter=100000)
    return _mse(Xv, yv, m.fit(Xt, yt).coef_)


def _time_to(trace, v_best, v_null, level):
    """First time at which the running best of (time, value) pairs reaches `s <= level`."""
    best = np.inf
    for t, v in trace:
        best = min(best, v)
        if (best - v_best) / (v_null - v_best) <= level:
            return t
    return None


def run(quick: bool = False) -> dict:
    import optuna
    from sklearn.linear_model import LassoCV, lasso_path

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n, p = (300, 1000) if quick else (1000, 5000)
    X, y = _data(n + (n // 4 if quick else 250), p)
    n_tr, n_val = (n * 3) // 4, n // 4
    Xt, yt = X[:n_tr], y[:n_tr]
    Xv, yv = X[n_tr : n_tr + n_val], y[n_tr : n_tr + n_val]
    Xs, ys = X[n_tr + n_val :], y[n_tr + n_val :]
    amax = problems.alpha_max(Xt, yt)
    v_null = _mse(Xv, yv, np.zeros(p))

    grid = amax * np.logspace(0, -3, 200)
    _, coefs, _ = lasso_path(Xt, yt, alphas=grid, tol=1e-10, max_iter=100000)
    grid_vals = np.array([_mse(Xv, yv, coefs[:, i]) for i in range(len(grid))])
    v_best = float(grid_vals.min())
    alpha_grid_best = float(grid[grid_vals.argmin()])

    # HOAG, 3 runs: the first compiles, the others reuse the compiled programs.
    hoag_runs = []
    for _ in range(3):
        start = time.perf_counter()
        pr = problems.lasso(Xt, yt, Xv, yv, Xs, ys, tol=1e-8)
        built = time.perf_counter() - start
        res = hoag(pr, max_iter=20)
        trace = [
            (built + e["time_s"], _tight(Xt, yt, Xv, yv, e["hparams"]["alpha"]))
            for e in res.history
        ]
        hoag_runs.append((trace, res))
    v_best = min(v_best, *(v for tr, _ in hoag_runs for _, v in tr))

    # LassoCV on the same held-out split.
    Xtv, ytv = X[: n_tr + n_val], y[: n_tr + n_val]
    split = [(np.arange(n_tr), np.arange(n_tr, n_tr + n_val))]
    cv_times, cv_vals = [], []
    for _ in range(3):
        start = time.perf_counter()
        cv = LassoCV(cv=split, fit_intercept=False).fit(Xtv, ytv)
        cv_times.append(time.perf_counter() - start)
        cv_vals.append(_tight(Xt, yt, Xv, yv, cv.alpha_))

    # Optuna TPE driving Lasso fits, 3 seeds.
    from sklearn.linear_model import Lasso

    tpe_traces = []
    for seed in range(3):
        trace, start = [], time.perf_counter()

        def objective(trial, trace=trace, start=start):
            a = trial.suggest_float("alpha", amax * 1e-3, amax, log=True)
            w = Lasso(alpha=a, fit_intercept=False).fit(Xt, yt).coef_
            trace.append((time.perf_counter() - start, a))
            return _mse(Xv, yv, w)

        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(objective, n_trials=15 if quick else 40)
        tpe_traces.append([(t, _tight(Xt, yt, Xv, yv, a)) for t, a in trace])
    v_best = min(v_best, *(v for tr in tpe_traces for _, v in tr))

    def med(xs):
        xs = [x for x in xs if x is not None]
        return float(np.median(xs)) if len(xs) == 3 else None

    cases = []
    for level, tag in ((1e-2, "s<=1e-2"), (1e-3, "s<=1e-3")):
        h_all = [_time_to(tr, v_best, v_null, level) for tr, _ in hoag_runs]
        h_warm = h_all[1:]
        hoag_fig = {
            "time_s": med(h_all),
            "first_run_s (compile included)": h_all[0],
            "warm_runs_s (compile excluded)": h_warm,
            "inner_solves": len(hoag_runs[0][1].history),
            "inner_iterations": hoag_runs[0][1].num_inner_steps,
        }
        cv_t = [
            t if (v - v_best) / (v_null - v_best) <= level else None
            for t, v in zip(cv_times, cv_vals, strict=True)
        ]
        cv_fig = {
            "name": "LassoCV (defaults, same split)",
            "time_s": med(cv_t),
            "runs_s": cv_t,
            "s": [(v - v_best) / (v_null - v_best) for v in cv_vals],
            "inner_solves": 100 + 1,
        }
        tpe_t = [_time_to(tr, v_best, v_null, level) for tr in tpe_traces]
        tpe_fig = {
            "name": "Optuna TPE + Lasso",
            "time_s": med(tpe_t),
            "runs_s": tpe_t,
            "trials": len(tpe_traces[0]),
        }
        for base, goal in ((cv_fig, "<= 0.1"), (tpe_fig, "<= 0.3333")):
            name = f"synthetic lasso held-out {tag}: HOAG vs {base['name']}"
            if hoag_fig["time_s"] is None or base["time_s"] is None:
                cases.append(
                    case(
                        name,
                        hoag_fig,
                        note="a method never reached the target: "
                        f"hoag {hoag_fig['time_s']}, baseline {base['time_s']}",
                    )
                )
                cases[-1]["baseline"] = base
            else:
                cases.append(case(name, hoag_fig, baseline=base, goal=goal))

    # Weighted lasso from HOAG's best single penalty.
    a0 = float(hoag_runs[0][1].hparams["alpha"])
    pw = problems.weighted_lasso(Xt, yt, Xv, yv, Xs, ys, alpha=a0, tol=1e-8)
    start = time.perf_counter()
    rw = hoag(pw, max_iter=30, max_move=0.5)
    t_w = time.perf_counter() - start
    from hypergrad.solvers import run as run_solver

    h = {"alpha": jax.numpy.asarray(rw.hparams["alpha"])}
    ww = np.asarray(run_solver(pw.solver, pw.inner, pw.init_params, h, pw.train).params)
    m = Lasso(alpha=alpha_grid_best, fit_intercept=False, tol=1e-10, max_iter=100000)
    wl = m.fit(Xt, yt).coef_
    weighted = {
        "held_out_mse": _mse(Xv, yv, ww),
        "test_mse": _mse(Xs, ys, ww),
        "time_s": t_w,
        "outer_steps": len(rw.history),
        "penalties": p,
    }
    single = {
        "name": "best single-penalty lasso (grid)",
        "held_out_mse": _mse(Xv, yv, wl),
        "test_mse": _mse(Xs, ys, wl),
        "alpha": alpha_grid_best,
    }
    cases.append(
        case(
            "weighted lasso held-out MSE vs best single penalty",
            weighted,
            baseline=single,
            key="held_out_mse",
            goal="< 1.0",
        )
    )
    cases.append(
        case(
            "weighted lasso test MSE vs best single penalty",
            weighted,
            baseline=single,
            key="test_mse",
            goal="< 1.0",
        )
    )
    return {
        "cases": cases,
        "definitions": {
            "v_best": v_best,
            "v_null": v_null,
            "alpha_max": amax,
            "s": "(v - v_best) / (v_null - v_best), v the best tight re-evaluated held-out MSE",
            "time_s": "median over 3 runs of the wall time until s <= level (None: never)",
            "data": f"synthetic AR(1) 0.5, n_train={n_tr}, n_val={n_val}, p={p}, 50 nonzeros",
        },
        "not_covered": [
            "elastic net (synthetic, diabetes), L1/L2 logistic (breast cancer): not run yet; "
            "the estimators' agreement with the CV estimators is in tests/test_sklearn.py",
            "ElasticNetCV, LogisticRegressionCV, RidgeCV baselines",
            "plain optax outer optimizer comparison (hoag(..., optimizer=optax.adam(...)))",
        ],
    }
