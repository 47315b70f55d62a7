"""`regularization`: time to tune regularization strengths, HOAG against scikit-learn's CV
estimators and Optuna's TPE, side by side in one run.

Cases (issue 3), each with its own criterion:

- synthetic lasso and elastic net: a correlated design with a sparse truth (n=1000 rows,
  p=5000 features, AR(1) correlation 0.5, 50 nonzero coefficients, noise 1), split 750
  training / 250 held-out rows (plus a 250-row test split); criterion: the held-out mean
  squared error, no intercept;
- diabetes (442 x 10, standardized) lasso, elastic net and ridge; criterion: the mean
  over `KFold(5)` of each fold's validation MSE, an intercept fitted per fold;
- breast cancer (569 x 30, standardized) L1 and L2 logistic regression; criterion: the
  mean over `StratifiedKFold(5)` of each fold's validation log-loss;
- weighted lasso (one penalty per feature, 5000 penalties) on the synthetic data, against
  the best single penalty, on held-out and test MSE;
- HOAG against a plain optax outer loop (Adam in log space, fixed tolerance) on the
  synthetic lasso.

Measured (see `/work/shared/BENCHMARKS.md`): every hyperparameter a method proposes is
re-evaluated afterwards, untimed, by a tight fit (scikit-learn's coordinate descent at
tol 1e-8 for the regressions, scipy's L-BFGS-B at gtol 1e-10 for the logistic ones,
closed form for ridge; a point far from the target, s > 0.1, keeps the value of a fit at
tol 1e-6, see `_Referee`); `s = (v - v_best) / (v_null - v_best)` with `v` the running best
re-evaluated value, `v_best` the best of a dense grid (>= 100 values per hyperparameter,
tight tolerance) or of any method's proposals if lower, `v_null` the criterion of the
trivial model (zero coefficients, intercept only). The figure is the wall time until
`s <= 1e-2` and `s <= 1e-3`, the median over runs (a run that never gets there counts as
infinitely slow), and the number of inner solves until then. HOAG's clock starts before
it builds its problem from the data. Its cold start includes tracing after
`jax.clear_caches()` (`--quick`: each problem's first run in the process), the compiled
programs then coming from the library's persistent compilation cache, on by default,
which the first round fills: what a user's second run on the machine waits for (issue
9 and issue 10's first call of a fresh process). Its compile-excluded figure comes from
runs in a warm process. All methods search the same
box of log-uniform penalties; scikit-learn runs with one BLAS thread (its faster setting
on a shared 2-core machine). Runs go in rounds (HOAG cold, HOAG warm, the CV estimator,
TPE seeds), so that drift of a shared machine hits every method alike.

The CV estimators are single shots: their time to target is their whole `fit` when their
choice reaches the level, else they never get there (their figure then carries the time
they took, `spent_s`). Goals (issue 3): HOAG at least 10x faster than the scikit-learn CV
estimator and 3x faster than TPE on the synthetic lasso and elastic net at `s <= 1e-3`
(judged on the cold start and compile excluded); the weighted lasso's held-out and test MSE below
the best single penalty's. Where only the baseline never reaches the level, HOAG's time
over the baseline's whole run bounds the ratio from above and the goal is judged on that
bound; where HOAG never reaches it, the goal is not met.
"""

import math
import os
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from hypergrad import problems  # noqa: E402
from hypergrad.tune import hoag  # noqa: E402

from ._harness import _meets, case  # noqa: E402

LEVELS = (1e-2, 1e-3)
# HOAG's first run after `jax.clear_caches()`: tracing included; the compiled programs come
# from the library's persistent compilation cache (on by default, see hypergrad._cache),
# as on a user's second run on the same machine, not from XLA.
COLD = "cold start, in-memory caches cleared, disk cache warm"
# name: (full run, --quick)
SIZES = {
    "runs": (3, 1),  # rounds: HOAG cold and warm, the CV estimator, TPE seeds
    "clear": (True, False),  # jax.clear_caches() before a cold run (quick: first run)
    "tpe_per_round": (3, 1),
    "trials": (40, 6),  # TPE trials per seed (synthetic elastic net: 1.5x)
    "outer": (20, 8),  # HOAG steps
    "grid": (200, 15),  # diabetes lasso and ridge grids
    "logistic_grid": (100, 8),
    "coarse": ((13, 30), (5, 8)),  # synthetic elastic net coarse grid
    "dense": (100, 10),  # synthetic lasso grid; elastic net grids per hyperparameter
}
ENET_L1_RATIOS = [0.1, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0]  # ElasticNetCV's docstring advice


# --- data -------------------------------------------------------------------------------


def _data(n, p, seed=0, nonzeros=50):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    for j in range(1, p):
        X[:, j] = 0.5 * X[:, j - 1] + np.sqrt(0.75) * X[:, j]
    w = np.zeros(p)
    w[rng.choice(p, nonzeros, replace=False)] = rng.standard_normal(nonzeros)
    y = X @ w + rng.standard_normal(n)
    return X, y


def _mse(X, y, w, b=0.0):
    r = X @ w + b - y
    return float(r @ r / len(y))


def _log_loss(X, y, w, b):
    from scipy.special import log_expit

    z = X @ w + b
    return float(-np.mean(y * log_expit(z) + (1 - y) * log_expit(-z)))


# --- tight refits (the referee) ---------------------------------------------------------


def _enet_sk(a1, a2):
    """scikit-learn's `(alpha, l1_ratio)` of our `(alpha1, alpha2)`."""
    return a1 + a2, a1 / (a1 + a2)


def _fit_enet(X, y, a1, a2, coef=None, tol=1e-10):
    from sklearn.linear_model import ElasticNet

    alpha, ratio = _enet_sk(a1, a2)
    m = ElasticNet(
        alpha=alpha,
        l1_ratio=ratio,
        fit_intercept=False,
        tol=tol,
        max_iter=100000,
        warm_start=coef is not None,
    )
    if coef is not None:
        m.coef_ = coef.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return m.fit(X, y).coef_


def fit_logistic(X, y, C, l1, z0=None, gtol=1e-10):
    """scikit-learn's `LogisticRegression(C)` solved to high accuracy, labels in {0, 1}:
    `argmin C sum log-loss + ||w||_1` (`l1`) or `||w||^2 / 2`, intercept unpenalized, by
    L-BFGS-B (on the split `w = u - v`, `u, v >= 0` for L1), the objective divided by `C n`
    so that the gradient tolerance `gtol` means the same at every C. `z0`: a previous `z`
    to start from. Returns `(w, b, z)`. The benchmark's referee; tests/test_sklearn.py uses it
    too (saga, scikit-learn's L1 solver, is off by percents at tol 1e-6 on breast cancer).
    """
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit
    from threadpoolctl import threadpool_limits

    n, p = X.shape
    s = 2 * y - 1
    lam = 1 / (C * n)

    def parts(z):
        w = z[:p] - z[p : 2 * p] if l1 else z[:p]
        return w, z[-1]

    def f(z):
        w, b = parts(z)
        m = s * (X @ w + b)
        g = -s * expit(-m) / n
        gw = X.T @ g
        if l1:
            val = -np.mean(log_expit(m)) + lam * np.sum(z[: 2 * p])
            grad = np.concatenate([gw + lam, -gw + lam, [g.sum()]])
        else:
            val = -np.mean(log_expit(m)) + 0.5 * lam * w @ w
            grad = np.concatenate([gw + lam * w, [g.sum()]])
        return val, grad

    size = 2 * p + 1 if l1 else p + 1
    z0 = np.zeros(size) if z0 is None else z0
    bounds = [(0, None)] * (2 * p) + [(None, None)] if l1 else None
    with threadpool_limits(1):  # small products: two BLAS threads only contend (40x slower)
        res = minimize(
            f,
            z0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options=dict(maxiter=20000, maxfun=40000, ftol=1e-15, gtol=gtol),
        )
    w, b = parts(res.x)
    return w, b, res.x


class _Referee:
    """The tight criterion of a case: `h -> mean over folds of the validation loss`,
    cached; each fit warm-starts from the nearest hyperparameters fitted before.

    Screening (once `screen = (v_grid, v_null)` is set): a point is first fitted at a
    loose tolerance (coordinate descent 1e-6, L-BFGS-B gtol 1e-6); if it is far from the
    target (`s > 0.1` against the grid's best, which `v_best` can only lower) its loose
    value is kept, its error being orders of magnitude below the 0.09 that could bring
    it under `s = 1e-2`. Tight fits at penalties far below the optimum take minutes on
    the synthetic data, and TPE proposes such points."""

    def __init__(self, kind, X, y, folds, center):
        self.kind, self.X, self.y, self.folds, self.center = kind, X, y, folds, center
        self.cache = {}  # key -> (value, per-fold state)
        self.screen = None
        self.loose = 0

    def _key(self, h):
        return tuple(round(math.log(max(float(h[k]), 1e-300)), 10) for k in sorted(h))

    def _nearest(self, key):
        if not self.cache:
            return None
        best = min(self.cache, key=lambda k: sum((a - b) ** 2 for a, b in zip(k, key, strict=True)))
        return self.cache[best][1]

    def _fold(self, i, h, start, tight):
        tr, va = self.folds[i]
        Xt, yt, Xv, yv = self.X[tr], self.y[tr], self.X[va], self.y[va]
        if self.kind in ("lasso", "enet", "ridge"):
            xm, ym = (Xt.mean(0), yt.mean()) if self.center else (0.0, 0.0)
            Xt, yt, Xv, yv = Xt - xm, yt - ym, Xv - xm, yv - ym
        if self.kind in ("lasso", "enet"):
            a1, a2 = (h["alpha"], 0.0) if self.kind == "lasso" else (h["alpha1"], h["alpha2"])
            coef = _fit_enet(Xt, yt, float(a1), float(a2), start, tol=1e-8 if tight else 1e-6)
            return _mse(Xv, yv, coef), coef
        if self.kind == "ridge":  # scikit-learn's alpha on the summed loss: closed form
            a = float(h["alpha"])
            coef = np.linalg.solve(Xt.T @ Xt + a * np.eye(Xt.shape[1]), Xt.T @ yt)
            return _mse(Xv, yv, coef), None
        gtol = 1e-10 if tight else 1e-6
        w, b, z = fit_logistic(Xt, yt, float(h["C"]), self.kind == "l1", start, gtol=gtol)
        return _log_loss(Xv, yv, w, b), z

    def _fit(self, h, starts, tight):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # small problems: threads only contend
            out = [
                self._fold(i, h, None if starts is None else starts[i], tight)
                for i in range(len(self.folds))
            ]
        return float(np.mean([v for v, _ in out])), [s for _, s in out]

    def __call__(self, h):
        key = self._key(h)
        if key not in self.cache:
            starts = self._nearest(key)
            if self.screen is not None and self.kind != "ridge":
                value, starts = self._fit(h, starts, tight=False)
                v_grid, v_null = self.screen
                if (value - v_grid) / (v_null - v_grid) > 0.1:
                    self.cache[key] = (value, starts)
                    self.loose += 1
                    return value
            self.cache[key] = self._fit(h, starts, tight=True)
        return self.cache[key][0]


# --- dense grids ------------------------------------------------------------------------


def _fold_xy(X, y, fold, center):
    tr, va = fold
    Xt, yt, Xv, yv = X[tr], y[tr], X[va], y[va]
    if center:
        xm, ym = Xt.mean(0), yt.mean()
        Xt, yt, Xv, yv = Xt - xm, yt - ym, Xv - xm, yv - ym
    return Xt, yt, Xv, yv


def _path_values(X, y, folds, center, l1_ratio, alphas, tol, cols=None):
    """Mean validation MSE along an elastic-net path (`alphas` descending), per alpha,
    and the solutions (per fold, `p x len(alphas)`). With `cols` (a set, grown in place),
    solved on those columns and certified on all of them by the KKT conditions; columns
    that violate them are added until none does."""
    from sklearn.linear_model import enet_path

    total = np.zeros(len(alphas))
    solutions = []
    for fold in folds:
        Xt, yt, Xv, yv = _fold_xy(X, y, fold, center)
        p = Xt.shape[1]
        use = np.arange(p) if cols is None else np.asarray(sorted(cols))
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, c, _ = enet_path(
                    Xt[:, use], yt, l1_ratio=l1_ratio, alphas=alphas, tol=tol, max_iter=100000
                )
            W = np.zeros((p, len(alphas)))
            W[use] = c
            if len(use) == p:
                break
            # KKT off the working set: |x_j^T r| / n <= alpha * l1_ratio where w_j = 0.
            G = np.abs(Xt.T @ (yt[:, None] - Xt @ W)) / len(yt)
            out = np.ones(p, bool)
            out[use] = False
            bad = out & np.any(G > alphas * l1_ratio * (1 + 1e-7), axis=1)
            if not bad.any():
                break
            use = np.union1d(use, np.flatnonzero(bad))
        if cols is not None:
            cols.update(int(j) for j in use)
        R = yv[:, None] - Xv @ W
        total += np.mean(R**2, axis=0)
        solutions.append(W)
    return total / len(folds), solutions


def _enet_box_grid(X, y, folds, center, lo, hi, n_t, n_a, tol, cols=None):
    """The box `lo <= (alpha1, alpha2) <= hi` by `n_t` elastic-net paths (fixed
    `log(alpha2 / alpha1)`, evenly spaced) of `n_a` alphas each, sheared to cover the box
    in log scale. Returns the best value, `(alpha1, alpha2)` there, and the columns in
    the support of the solutions next to it (a working set for a finer grid)."""
    (l1, l2), (h1, h2) = np.log(lo), np.log(hi)
    best = (np.inf, None, set())
    for t in np.linspace(l2 - h1, h2 - l1, n_t):  # t = log(alpha2 / alpha1)
        u_lo, u_hi = max(l1, l2 - t), min(h1, h2 - t)  # log alpha1 inside the box
        if u_hi < u_lo:
            continue
        a1 = np.exp(np.linspace(u_hi, u_lo, n_a))
        vals, sols = _path_values(
            X, y, folds, center, 1 / (1 + np.exp(t)), a1 * (1 + np.exp(t)), tol, cols
        )
        i = int(np.argmin(vals))
        if vals[i] < best[0]:
            near = {
                int(j) for W in sols for j in np.flatnonzero(W[:, max(i - 3, 0) : i + 4].any(1))
            }
            best = (float(vals[i]), (float(a1[i]), float(a1[i] * np.exp(t))), near)
    return best


def _logistic_grid(X, y, folds, Cs, l1):
    from threadpoolctl import threadpool_limits

    total = np.zeros(len(Cs))
    with threadpool_limits(1):
        for tr, va in folds:
            z = None
            for i, C in enumerate(Cs):  # increasing C, warm-started
                w, b, z = fit_logistic(X[tr], y[tr], C, l1, z)
                total[i] += _log_loss(X[va], y[va], w, b)
    return total / len(folds)


# --- methods ----------------------------------------------------------------------------


def _time_to(trace, value, v_best, v_null, level):
    """First time (and index) at which the running best re-evaluated value reaches
    `s <= level`; `(None, None)` if never."""
    best = np.inf
    for i, (t, h) in enumerate(trace):
        best = min(best, value(h))
        if (best - v_best) / (v_null - v_best) <= level:
            return t, i
    return None, None


def _median(xs):
    """Median over runs, a run that never got there counting as infinitely slow."""
    m = float(np.median([np.inf if x is None else x for x in xs]))
    return m if math.isfinite(m) else None


def _hoag_run(build, to_h, cold, **kwargs):
    """One HOAG run; `cold`: JIT caches cleared first (see `COLD`). Returns a trace
    of (seconds since the clock started, hparams), and the result."""
    if cold:
        jax.clear_caches()
    start = time.perf_counter()
    problem = build()
    built = time.perf_counter() - start
    # A callback makes HOAG step from Python and time each step (its whole compiled loop
    # reports no per-step times).
    res = hoag(problem, callback=lambda entry: None, **kwargs)
    return [(built + e["time_s"], to_h(e["hparams"])) for e in res.history], res


# scikit-learn and scipy run with one BLAS thread: with two, on this shared 2-core machine,
# LogisticRegressionCV on breast cancer took 7.5 s instead of 0.3 s and LassoCV on the
# synthetic data 4.4 s instead of 1.3 s (threads oversubscribed); one is their faster
# setting here, and so the fair one. JAX keeps its default (its time barely changes).
def _baseline(fn):
    from threadpoolctl import threadpool_limits

    def run(*args):
        with threadpool_limits(1):
            return fn(*args)

    return run


def _tpe_run(space, objective, seed, trials):
    """Optuna TPE (seeded) over the log-uniform `space` {name: (lo, hi)} driving
    `objective(h)` (scikit-learn fits at their defaults): a trace of (time, h)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trace, start = [], time.perf_counter()

    def obj(trial):
        h = {k: trial.suggest_float(k, lo, hi, log=True) for k, (lo, hi) in space.items()}
        value = objective(h)
        trace.append((time.perf_counter() - start, h))
        return value

    optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed)).optimize(
        obj, n_trials=trials
    )
    return trace


def _tpe_seeds(space, objective, r, sizes):
    """Round `r`'s TPE seeds: `r * k, ..., r * k + k - 1`, `k = sizes["tpe_per_round"]`."""
    k = sizes["tpe_per_round"]
    return [_tpe_run(space, objective, r * k + j, sizes["trials"]) for j in range(k)]


def _timed(fn):
    start = time.perf_counter()
    h = fn()
    return time.perf_counter() - start, h


def _rounds(runs, methods):
    """`{name: [run_0, ...]}`: each round calls every method once (`fn(round)`), so that
    the drift of a shared machine hits all of them alike."""
    out = {name: [] for name in methods}
    for r in range(runs):
        for name, fn in methods.items():
            out[name].append(fn(r))
    return out


# --- comparison -------------------------------------------------------------------------


def _log(message):
    """Progress on stderr (the results file is the output)."""
    print(f"[regularization {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _compare(name, ref, v_null, grid, hoag_cold, hoag_warm, cv, tpe, folds, goals, extra=None):
    """Cases of one problem: HOAG (cold start and compile excluded) against the CV
    estimator and TPE at each level. `grid`: (v_grid, description); `cv`: (name, runs,
    inner solves); `tpe`: traces; `extra`: {name: (runs, figures)} more HOAG variants."""
    all_h = [h for tr, _ in hoag_cold + hoag_warm for _, h in tr]
    all_h += [h for _, h in cv[1]] + [h for tr in tpe for _, h in tr]
    for runs, _ in (extra or {}).values():
        all_h += [h for tr, _ in runs for _, h in tr]
    v_grid = grid[0]
    v_best = min(v_grid, *(ref(h) for h in all_h))
    s = lambda v: (v - v_best) / (v_null - v_best)  # noqa: E731
    definitions = {
        "criterion": ref.kind,
        "v_best": v_best,
        "v_null": v_null,
        "grid": grid[1],
        "grid_s": s(v_grid),  # > 0: a method's proposal beat the grid
        "referee_points": len(ref.cache),
        "referee_loose_points (s > 0.1)": ref.loose,
    }
    cases = []
    for level in LEVELS:
        tag = f"s<=1e{int(round(math.log10(level)))}"

        def hoag_fig(runs, level=level):
            hits = [_time_to(tr, ref, v_best, v_null, level) for tr, _ in runs]
            times = [t for t, _ in hits]
            solves = [
                None if i is None else (i + 1) * res.num_solves // len(res.history)
                for (_, i), (_, res) in zip(hits, runs, strict=True)
            ]
            return {
                "time_s": _median(times),
                "runs_s": times,
                "inner_solves": _median(solves),
                "spent_s": _median([tr[-1][0] for tr, _ in runs]),
                "outer_steps_run": len(runs[0][1].history),
                "inner_iterations_run": runs[0][1].num_inner_steps,
                "final_s": s(min(ref(h) for _, h in runs[0][0])),
            }

        ours = {COLD: hoag_fig(hoag_cold), "compile excluded": hoag_fig(hoag_warm)}
        cv_times = [t if s(ref(h)) <= level else None for t, h in cv[1]]
        cv_fig = {
            "name": cv[0],
            "time_s": _median(cv_times),
            "runs_s": cv_times,
            "spent_s": _median([t for t, _ in cv[1]]),
            "s": [s(ref(h)) for _, h in cv[1]],
            "inner_solves": cv[2],
        }
        hits = [_time_to(tr, ref, v_best, v_null, level) for tr in tpe]
        tpe_fig = {
            "name": "Optuna TPE + scikit-learn fits (defaults)",
            "time_s": _median([t for t, _ in hits]),
            "runs_s": [t for t, _ in hits],
            "inner_solves": _median([None if i is None else (i + 1) * folds for _, i in hits]),
            "spent_s": _median([tr[-1][0] for tr in tpe]),
            "trials": len(tpe[0]),
            "seeds": len(tpe),
            "final_s": [s(min(ref(h) for _, h in tr)) for tr in tpe],
        }
        for label, fig in ours.items():
            for base, goal in ((cv_fig, goals[0]), (tpe_fig, goals[1])):
                title = f"{name} {tag}: HOAG ({label}) vs {base['name']}"
                goal = goal if level == LEVELS[-1] else None
                cases.append(_case(title, fig, base, goal))
        for label, (runs, _) in (extra or {}).items():
            fig = hoag_fig(runs)
            title = f"{name} {tag}: HOAG (compile excluded) vs {label}"
            cases.append(_case(title, ours["compile excluded"], {"name": label, **fig}, None))
    return cases, definitions


def _case(title, fig, base, goal):
    if fig["time_s"] is not None and base["time_s"] is not None:
        return case(title, fig, baseline=base, goal=goal)
    # No ratio without both times. When only the baseline never got there, HOAG's time
    # over the baseline's whole run is an upper bound of the ratio: the goal is met if
    # that bound meets it, and not shown otherwise.
    spent = base.get("spent_s")
    if fig["time_s"] is None:
        note = "HOAG never reached the level"
        bound = None
    else:
        bound = fig["time_s"] / spent
        note = (
            f"{base['name']} never reached the level in its whole run ({spent:.3g} s); "
            f"HOAG's time over that run, an upper bound of the ratio: {bound:.3g}"
        )
    out = case(title, fig, note=note)
    out["baseline"] = base
    if goal is not None:
        out.update(goal=goal, ratio_upper_bound=bound)
        out["met"] = bool(bound is not None and _meets(bound, goal))
    return out


# --- the cases --------------------------------------------------------------------------


def _regression_case(
    name, kind, X, y, folds, center, box, grid, cv_fit, cv_solves, sizes, goals, extra=None
):
    """One regression case. `kind` lasso / enet / ridge; `box` {name: (lo, hi)} on our
    scale (ridge: scikit-learn's alpha); `grid()` -> (v_grid, description)."""
    from sklearn.linear_model import ElasticNet, Lasso, Ridge

    _log(f"{name}: grid")
    ref = _Referee(kind, X, y, folds, center)
    v_null = float(
        np.mean([np.mean((y[va] - (y[tr].mean() if center else 0.0)) ** 2) for tr, va in folds])
    )
    g = grid()
    ref.screen = (g[0], v_null)
    nf = float(np.mean([len(tr) for tr, _ in folds]))
    Xtr, ytr, Xva, yva = (X[folds[0][0]], y[folds[0][0]], X[folds[0][1]], y[folds[0][1]])
    single = len(folds) == 1 and not center

    def build():
        if kind == "ridge":  # our alpha is on the averaged loss: scikit-learn's over n_fold
            kw = {"alpha": 1.0 / nf}  # scikit-learn's alpha = 1
            builder = problems.ridge_rows
        elif kind == "lasso":
            kw, builder = {}, problems.lasso
        else:
            kw, builder = {}, problems.elastic_net
        if single:
            return builder(Xtr, ytr, Xva, yva, **kw)
        return problems.kfold(builder, X, y, folds, center=center, **kw)

    scale = (lambda a: a * nf) if kind == "ridge" else (lambda a: a)
    to_h = lambda hp: {k: scale(float(v)) for k, v in hp.items()}  # noqa: E731
    bounds = {k: (lo / nf, hi / nf) if kind == "ridge" else (lo, hi) for k, (lo, hi) in box.items()}
    kw = dict(
        lower={k: b[0] for k, b in bounds.items()},
        upper={k: b[1] for k, b in bounds.items()},
        max_iter=sizes["outer"],
    )

    def objective(h):
        total = 0.0
        for tr, va in folds:
            if kind == "lasso":
                m = Lasso(alpha=h["alpha"], fit_intercept=center)
            elif kind == "enet":
                alpha, ratio = _enet_sk(h["alpha1"], h["alpha2"])
                m = ElasticNet(alpha=alpha, l1_ratio=ratio, fit_intercept=center)
            else:
                m = Ridge(alpha=h["alpha"], fit_intercept=center)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m.fit(X[tr], y[tr])
            total += float(np.mean((m.predict(X[va]) - y[va]) ** 2))
        return total / len(folds)

    _log(f"{name}: HOAG, {cv_fit[0]}, TPE in rounds")
    methods = {
        "cold": lambda r: _hoag_run(build, to_h, sizes["clear"], **kw),
        "warm": lambda r: _hoag_run(build, to_h, False, **kw),
        **{
            label: (lambda r, o=opts: _hoag_run(build, to_h, False, **kw, **o))
            for label, opts in (extra or {}).items()
        },
        "cv": _baseline(lambda r: _timed(cv_fit[1])),
        "tpe": _baseline(lambda r: _tpe_seeds(box, objective, r, sizes)),
    }
    out = _rounds(sizes["runs"], methods)
    _log(f"{name}: re-evaluation")
    cv = (cv_fit[0], out["cv"], cv_solves)
    extra_runs = {label: (out[label], None) for label in extra or {}}
    return _compare(
        name,
        ref,
        v_null,
        g,
        out["cold"],
        out["warm"],
        cv,
        sum(out["tpe"], []),
        len(folds),
        goals,
        extra_runs,
    )


def _logistic_case(name, penalty, X, y, folds, sizes):
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    l1 = penalty == "l1"
    _log(f"{name}: grid")
    ref = _Referee(penalty, X, y, folds, center=False)
    base = [np.mean(y[tr]) for tr, _ in folds]
    v_null = float(
        np.mean(
            [
                -np.mean(y[va] * np.log(b) + (1 - y[va]) * np.log(1 - b))
                for (_, va), b in zip(folds, base, strict=True)
            ]
        )
    )
    Cs = np.logspace(-4, 4, sizes["grid"])
    vals = _logistic_grid(X, y, folds, Cs, l1)
    i = int(np.argmin(vals))
    grid = (
        float(vals[i]),
        f"{len(Cs)} C log-spaced over [1e-4, 1e4], L-BFGS-B gtol 1e-10; best C {Cs[i]:.4g}",
    )
    ref.screen = (grid[0], v_null)
    nf = float(np.mean([len(tr) for tr, _ in folds]))
    # alpha (our penalty on the averaged loss) = 1 / (C n_fold).
    to_h = lambda hp: {"C": 1 / (float(hp["alpha"]) * nf)}  # noqa: E731
    builder = problems.sparse_logistic if l1 else problems.logistic_rows

    def build():
        return problems.kfold(builder, X, y, folds, alpha=1 / nf)

    kw = dict(lower=1 / (1e4 * nf), upper=1 / (1e-4 * nf), max_iter=sizes["outer"])
    solver = "saga" if l1 else "lbfgs"
    ratio = 1.0 if l1 else 0.0

    def objective(h):
        total = 0.0
        for tr, va in folds:
            m = LogisticRegression(C=h["C"], l1_ratio=ratio, solver=solver)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m.fit(X[tr], y[tr])
            total += _log_loss(X[va], y[va], m.coef_[0], m.intercept_[0])
        return total / len(folds)

    def fit_cv():
        m = LogisticRegressionCV(
            l1_ratios=(ratio,),
            solver=solver,
            scoring="neg_log_loss",
            cv=folds,
            use_legacy_attributes=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(X, y)
        return {"C": float(np.ravel(m.C_)[0])}

    _log(f"{name}: HOAG, LogisticRegressionCV, TPE in rounds")
    space = {"C": (1e-4, 1e4)}
    out = _rounds(
        sizes["runs"],
        {
            "cold": lambda r: _hoag_run(build, to_h, sizes["clear"], **kw),
            "warm": lambda r: _hoag_run(build, to_h, False, **kw),
            "cv": _baseline(lambda r: _timed(fit_cv)),
            "tpe": _baseline(lambda r: _tpe_seeds(space, objective, r, sizes)),
        },
    )
    _log(f"{name}: re-evaluation")
    cv = (f"LogisticRegressionCV ({solver}, defaults)", out["cv"], 10 * len(folds) + 1)
    return _compare(
        name,
        ref,
        v_null,
        grid,
        out["cold"],
        out["warm"],
        cv,
        sum(out["tpe"], []),
        len(folds),
        (None, None),
    )


def _lasso_grid(X, y, folds, center, lo, hi, n, tol):
    alphas = np.logspace(np.log10(hi), np.log10(lo), n)
    vals, _ = _path_values(X, y, folds, center, 1.0, alphas, tol)
    i = int(np.argmin(vals))
    desc = (
        f"{n} alphas log-spaced over [{lo:.4g}, {hi:.4g}], coordinate descent tol {tol:g}; "
        f"best alpha {alphas[i]:.4g} (index {i})"
    )
    return float(vals[i]), desc, alphas[i]


def run(quick: bool = False) -> dict:
    import optax
    from sklearn.datasets import load_breast_cancer, load_diabetes
    from sklearn.linear_model import ElasticNetCV, LassoCV, RidgeCV
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    load_start = os.getloadavg()
    sizes = {name: pair[int(quick)] for name, pair in SIZES.items()}
    n, p = (300, 1000) if quick else (1000, 5000)
    n_val = n // 4
    n_tr = n - n_val
    X, y = _data(n + n_val, p)
    Xtv, ytv = X[:n], y[:n]
    split = [(np.arange(n_tr), np.arange(n_tr, n))]
    amax = problems.alpha_max(X[:n_tr], y[:n_tr])
    lo, hi = amax * 1e-3, amax  # LassoCV's default range (eps=1e-3)
    syn = {k: sizes[k] for k in ("runs", "clear", "tpe_per_round", "trials", "outer")}
    cases, definitions = [], {}

    # Synthetic lasso: grid down to alpha_max / 300 (the held-out MSE rises steeply below
    # alpha_max / 100; coordinate descent below alpha_max / 300 costs minutes per path).
    v, desc, a_grid = _lasso_grid(Xtv, ytv, split, False, amax / 300, amax, sizes["dense"], 1e-8)

    c, d = _regression_case(
        "synthetic lasso",
        "lasso",
        Xtv,
        ytv,
        split,
        False,
        {"alpha": (lo, hi)},
        lambda: (v, desc),
        (
            "LassoCV (defaults, same split)",
            lambda: {"alpha": float(LassoCV(cv=split, fit_intercept=False).fit(Xtv, ytv).alpha_)},
        ),
        101,
        syn,
        ("<= 0.1", "<= 0.3333"),
        extra={
            "plain optax Adam(0.2) outer loop, fixed tol 1e-6": dict(
                optimizer=optax.adam(0.2), decrease=1.0, tol=1e-6
            )
        },
    )
    cases += c
    definitions["synthetic lasso"] = d

    # Synthetic elastic net: a coarse grid over the box (alpha1 >= alpha_max / 300), then a
    # dense grid on a box around its best, solved on a working set (the supports next to
    # the coarse best) and certified by the KKT conditions on all columns.
    nc, na = sizes["coarse"]
    _log("synthetic elastic net: coarse grid")
    _, (a1c, a2c), supports = _enet_box_grid(
        Xtv, ytv, split, False, (amax / 300, lo / 10), (hi, hi), nc, na, 1e-6
    )
    zoom_lo = (max(a1c / 3, lo), max(a2c / 30, lo / 10))
    zoom_hi = (min(a1c * 3, hi), min(a2c * 30, hi))
    nd = sizes["dense"]

    def enet_grid():
        v, (a1, a2), _ = _enet_box_grid(
            Xtv, ytv, split, False, zoom_lo, zoom_hi, nd, nd, 1e-10, set(supports)
        )
        return v, (
            f"coarse: {nc} x {na} over alpha1 in [alpha_max/300, alpha_max], alpha2 in the "
            f"box, tol 1e-6, best (alpha1, alpha2) = ({a1c:.4g}, {a2c:.4g}); dense: {nd} "
            f"paths of fixed alpha2/alpha1 x {nd} alphas over alpha1 in [{zoom_lo[0]:.4g}, "
            f"{zoom_hi[0]:.4g}], alpha2 in [{zoom_lo[1]:.4g}, {zoom_hi[1]:.4g}], tol 1e-10 "
            f"on a working set certified by the KKT conditions; best ({a1:.4g}, {a2:.4g})"
        )

    def enet_cv():
        m = ElasticNetCV(l1_ratio=ENET_L1_RATIOS, cv=split, fit_intercept=False).fit(Xtv, ytv)
        return {"alpha1": m.alpha_ * m.l1_ratio_, "alpha2": m.alpha_ * (1 - m.l1_ratio_)}

    c, d = _regression_case(
        "synthetic elastic net",
        "enet",
        Xtv,
        ytv,
        split,
        False,
        {"alpha1": (lo, hi), "alpha2": (lo / 10, hi)},
        enet_grid,
        (f"ElasticNetCV (l1_ratio={ENET_L1_RATIOS}, same split)", enet_cv),
        100 * len(ENET_L1_RATIOS) + 1,
        dict(syn, trials=int(sizes["trials"] * 1.5)),
        ("<= 0.1", "<= 0.3333"),
    )
    cases += c
    definitions["synthetic elastic net"] = d

    # Weighted lasso from the best single penalty, against it.
    _log("weighted lasso")
    cases += _weighted(X, y, n_tr, n, a_grid, 15 if quick else 30)
    definitions["weighted lasso"] = {
        "start": "every penalty at the best single penalty of the lasso grid",
        "hoag": "30 outer steps (quick: 15), first tolerance 1e-4 (the start is a tuned penalty; "
        "from 1e-2 the first inexact values are too far off to step from), max_move 0.5",
    }

    # Diabetes: KFold(5), intercept per fold.
    Xd, yd = load_diabetes(return_X_y=True)
    Xd = StandardScaler().fit_transform(Xd)
    kf = list(KFold(5).split(Xd))
    amax_d = problems.alpha_max(Xd - Xd.mean(0), yd - yd.mean())
    lo_d, hi_d = amax_d * 1e-3, amax_d
    small = syn
    ng = sizes["grid"]
    nd = sizes["dense"]

    def lasso_cv_d():
        return {"alpha": float(LassoCV(cv=kf).fit(Xd, yd).alpha_)}

    c, d = _regression_case(
        "diabetes lasso",
        "lasso",
        Xd,
        yd,
        kf,
        True,
        {"alpha": (lo_d, hi_d)},
        lambda: _lasso_grid(Xd, yd, kf, True, lo_d, hi_d, ng, 1e-10)[:2],
        ("LassoCV (defaults, same folds)", lasso_cv_d),
        5 * 100 + 1,
        small,
        (None, None),
    )
    cases += c
    definitions["diabetes lasso"] = d

    def enet_cv_d():
        m = ElasticNetCV(l1_ratio=ENET_L1_RATIOS, cv=kf).fit(Xd, yd)
        return {"alpha1": m.alpha_ * m.l1_ratio_, "alpha2": m.alpha_ * (1 - m.l1_ratio_)}

    def enet_grid_d():
        box = ((lo_d, lo_d / 10), (hi_d, hi_d))
        v, (a1, a2), _ = _enet_box_grid(Xd, yd, kf, True, *box, nd, nd, 1e-10)
        return v, (
            f"{nd} paths of fixed alpha2/alpha1 x {nd} alphas covering the box, tol 1e-10; "
            f"best ({a1:.4g}, {a2:.4g})"
        )

    c, d = _regression_case(
        "diabetes elastic net",
        "enet",
        Xd,
        yd,
        kf,
        True,
        {"alpha1": (lo_d, hi_d), "alpha2": (lo_d / 10, hi_d)},
        enet_grid_d,
        (f"ElasticNetCV (l1_ratio={ENET_L1_RATIOS}, same folds)", enet_cv_d),
        5 * 100 * len(ENET_L1_RATIOS) + 1,
        small,
        (None, None),
    )
    cases += c
    definitions["diabetes elastic net"] = d

    ridge_alphas = np.logspace(-3, 5, 100)

    def ridge_cv_d():
        m = RidgeCV(alphas=ridge_alphas, cv=kf, scoring="neg_mean_squared_error").fit(Xd, yd)
        return {"alpha": float(m.alpha_)}

    def ridge_grid_d():
        ref = _Referee("ridge", Xd, yd, kf, True)
        grid = np.logspace(-3, 5, ng)
        vals = [ref({"alpha": a}) for a in grid]
        i = int(np.argmin(vals))
        return float(
            vals[i]
        ), f"{ng} alphas log-spaced over [1e-3, 1e5], closed form; best {grid[i]:.4g}"

    c, d = _regression_case(
        "diabetes ridge",
        "ridge",
        Xd,
        yd,
        kf,
        True,
        {"alpha": (1e-3, 1e5)},
        ridge_grid_d,
        ("RidgeCV (100 alphas over [1e-3, 1e5], same folds, MSE)", ridge_cv_d),
        5 * 100 + 1,
        small,
        (None, None),
    )
    cases += c
    definitions["diabetes ridge"] = d

    # Breast cancer: StratifiedKFold(5), labels in {0, 1}.
    Xc, yc = load_breast_cancer(return_X_y=True)
    Xc = StandardScaler().fit_transform(Xc)
    yc = yc.astype(np.float64)
    sk = list(StratifiedKFold(5).split(Xc, yc))
    for penalty in ("l1", "l2"):
        c, d = _logistic_case(
            f"breast cancer {penalty} logistic",
            penalty,
            Xc,
            yc,
            sk,
            dict(small, grid=sizes["logistic_grid"]),
        )
        cases += c
        definitions[f"breast cancer {penalty} logistic"] = d

    definitions.update(
        {
            "s": "(v - v_best) / (v_null - v_best), v the running best tight re-evaluated "
            "criterion",
            "time_s": f"median over {sizes['runs']} runs (TPE: over "
            f"{sizes['runs'] * sizes['tpe_per_round']} seeds) of the "
            "wall time until s <= level; a run that never gets there counts as infinite; "
            "None: the median never got there",
            "inner_solves": "inner problems solved until the level (HOAG: outer steps x folds; "
            "TPE: trials x folds; CV estimators: path points x folds + refit, their whole run)",
            "data": f"synthetic AR(1) 0.5, n_train={n_tr}, n_val={n_val}, n_test={n_val}, p={p}, "
            "50 nonzeros; diabetes 442 x 10 and breast cancer 569 x 30, standardized",
            "box": "lasso/enet: alpha and alpha1 in [alpha_max * 1e-3, alpha_max] (LassoCV's "
            "range), alpha2 in [alpha_max * 1e-4, alpha_max] (so that the elastic net can come "
            "within s ~ 1e-4 of the lasso); "
            "logistic: C in [1e-4, 1e4]; ridge: alpha in [1e-3, 1e5] (scikit-learn's scale)",
            "hoag": f"hypergrad.tune.hoag, default schedule (tol 1e-2 * 0.6^k, min 1e-8), "
            f"{sizes['outer']} outer steps, start at the problem's default penalty",
            "sizes": sizes,
            "load_average_1min": {"start": load_start[0], "end": os.getloadavg()[0]},
        }
    )
    notes = [
        "Target: issue 3 asks for 'within 0.1% of the target'; BENCHMARKS.md replaces that "
        "relative gap by the normalized suboptimality s <= 1e-3 (a held-out criterion is "
        "flat near its minimum), and s <= 1e-2 is reported too.",
        f"Repetitions: {sizes['runs']} rounds, each running HOAG cold (jax.clear_caches(): "
        "tracing included, programs from the persistent compilation cache), HOAG warm, "
        f"the CV estimator and {sizes['tpe_per_round']} TPE "
        "seeds in turn; time_s is the median over rounds (TPE: over all its seeds; more "
        "seeds than rounds because a TPE run's first random trials can land near the "
        "optimum by luck, and the criterion is flat there).",
        f"TPE: {sizes['trials']} trials per seed (elastic net on the synthetic data: 1.5x); "
        "a seed that has not reached the level by then counts as never.",
        "Grids: >= 100 values per hyperparameter in the full run (synthetic lasso 100 "
        "alphas down to alpha_max/300, the optimum being near alpha_max/38; synthetic "
        "elastic net a coarse 13 x 30 grid, then 100 x 100 on a box around its best; "
        "diabetes 200 alphas, 100 x 100 for the elastic net; breast cancer 100 C); see "
        "each problem's definitions.grid. --quick uses small grids and one round.",
        "scikit-learn and scipy run with one BLAS thread (threadpoolctl): their faster "
        "setting on this shared 2-core machine.",
        "The CV estimators refit on all rows at the end; their time includes it, HOAG does "
        "not refit.",
        "The machine is shared with other processes: load_average_1min in definitions.",
    ]
    return {"cases": cases, "definitions": definitions, "notes": notes}


def _weighted(X, y, n_tr, n, a_grid, steps):
    from sklearn.linear_model import Lasso

    from hypergrad.solvers import run as run_solver

    Xt, yt, Xv, yv, Xs, ys = X[:n_tr], y[:n_tr], X[n_tr:n], y[n_tr:n], X[n:], y[n:]
    p = X.shape[1]
    start = time.perf_counter()
    pw = problems.weighted_lasso(Xt, yt, Xv, yv, Xs, ys, alpha=a_grid, tol=1e-8)
    rw = hoag(pw, max_iter=steps, max_move=0.5, tol=1e-4)
    t_w = time.perf_counter() - start
    h = {"alpha": jax.numpy.asarray(rw.hparams["alpha"])}
    ww = np.asarray(run_solver(pw.solver, pw.inner, pw.init_params, h, pw.train).params)
    m = Lasso(alpha=a_grid, fit_intercept=False, tol=1e-10, max_iter=100000)
    wl = m.fit(Xt, yt).coef_
    weighted = {
        "held_out_mse": _mse(Xv, yv, ww),
        "test_mse": _mse(Xs, ys, ww),
        "time_s": t_w,
        "outer_steps": len(rw.history),
        "penalties": p,
        "nonzeros": int(np.sum(ww != 0)),
    }
    single_fig = {
        "name": "best single-penalty lasso (grid)",
        "held_out_mse": _mse(Xv, yv, wl),
        "test_mse": _mse(Xs, ys, wl),
        "alpha": a_grid,
        "nonzeros": int(np.sum(wl != 0)),
    }
    return [
        case(
            f"weighted lasso ({p} penalties) {key.replace('_', ' ')} vs best single penalty",
            weighted,
            baseline=single_fig,
            key=key,
            goal="< 1.0",
        )
        for key in ("held_out_mse", "test_mse")
    ]
