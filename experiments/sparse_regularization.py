"""Lasso, elastic net and weighted lasso at n = 1000, p = 5000: HOAG against
scikit-learn's CV estimators and TPE, and thousands of penalties against one.

Data (a fresh draw per seed): a Gaussian design with AR(1) correlation 0.5 between
neighboring columns, 50 non-zero coefficients (N(0, 1)), noise standard deviation 1;
1000 training rows, 250 held-out (validation) rows, 250 test rows; targets centered on
the training mean (no intercept). Criterion: the held-out mean squared error.

- HOAG: `hypergrad.tune.hoag` on `problems.lasso` (`alpha`) and `problems.elastic_net`
  (`alpha1`, `alpha2`), from `alpha_max / 10`; per-step times from its history with a
  callback (`experiments._common.timed_hoag`), compilation excluded (a warm-up run first).
- CV estimators: `LassoCV` and `ElasticNetCV` (l1_ratio in {0.1, 0.5, 0.9}) with the
  training/held-out split as their one fold (`PredefinedSplit`), scikit-learn's defaults
  otherwise (100 alphas, tol 1e-4); the time of `fit` (which refits on all rows).
- TPE: Optuna's TPESampler over the same box, each trial a scikit-learn `Lasso` /
  `ElasticNet` fit at its default tolerance on the training rows, `TRIALS` trials.

Every proposal is re-evaluated untimed by a tight scikit-learn fit (tol 1e-8,
warm-started at the method's own solution); `s = (v - v_best) / (v_null - v_best)` with
`v_best` the best of the tight lasso path (100 alphas) or of any proposal, `v_null` the
held-out MSE of the zero model; a proposal far from the target (`s > 0.1` at a
tol-1e-6 fit) keeps that fit's value. Weighted lasso: HOAG on `problems.weighted_lasso` (one
penalty per feature, 5000; `MAX_ITER / 2` outer steps) from the best single penalty HOAG
found, against that single penalty on held-out and test MSE.

References: Bertrand, Klopfenstein, Blondel, Vaiter, Gramfort and Salmon, "Implicit
differentiation of Lasso-type models for hyperparameter optimization", ICML 2020,
https://arxiv.org/abs/2002.08943; Bertrand et al., "Implicit differentiation for fast
hyperparameter selection in non-smooth convex learning", JMLR 2022,
https://arxiv.org/abs/2105.01637
"""

import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import hypergrad as hg
from hypergrad import problems

from ._common import (
    FAILS,
    HOLDS,
    claim,
    figure,
    over_seeds,
    quiet_optuna,
    series,
    suboptimality,
    time_to,
    timed_hoag,
)
from ._common import source as src

TITLE = "Lasso, elastic net and weighted lasso (n=1000, p=5000): HOAG against CV and TPE"
BERTRAND_2020 = (
    "Bertrand, Klopfenstein, Blondel, Vaiter, Gramfort, Salmon, Implicit differentiation of "
    "Lasso-type models for hyperparameter optimization, ICML 2020, "
    "https://arxiv.org/abs/2002.08943"
)
BERTRAND_2022 = (
    "Bertrand, Klopfenstein, Massias, Blondel, Vaiter, Gramfort, Salmon, Implicit "
    "differentiation for fast hyperparameter selection in non-smooth convex learning, "
    "JMLR 2022, https://arxiv.org/abs/2105.01637"
)
TARGET = 1e-3
LOW = 1e-3  # the box is [alpha_max * LOW, alpha_max] for every penalty
# The tight path that seeds v_best: 30 penalties down to alpha_max / 100 (a tol-1e-8 path to
# alpha_max / 1000 took 80 s a seed); any proposal's tight value below it lowers v_best.
PATH_ALPHAS, PATH_EPS = 30, 1e-2
L1_RATIOS = (0.1, 0.5, 0.9)


def _data(seed, n, p, n_val):
    rng = np.random.default_rng(seed)
    m = n + 2 * n_val
    X = rng.standard_normal((m, p))
    for j in range(1, p):  # AR(1) columns: Toeplitz correlation 0.5^|i-j|
        X[:, j] = 0.5 * X[:, j - 1] + np.sqrt(0.75) * X[:, j]
    w = np.zeros(p)
    w[rng.choice(p, 50, replace=False)] = rng.standard_normal(50)
    y = X @ w + rng.standard_normal(m)
    y = y - y[:n].mean()
    return (X[:n], y[:n]), (X[n : n + n_val], y[n : n + n_val]), (X[n + n_val :], y[n + n_val :])


def _sk(a1, a2):
    """Our (alpha1, alpha2) as scikit-learn's (alpha, l1_ratio)."""
    from sklearn.linear_model import ElasticNet, Lasso

    if a2 == 0:
        return Lasso(alpha=a1, fit_intercept=False)
    return ElasticNet(alpha=a1 + a2, l1_ratio=a1 / (a1 + a2), fit_intercept=False)


def _mse(data, coef):
    X, y = data
    return float(np.mean((X @ coef - y) ** 2))


class _Referee:
    """Tight held-out and test MSE of a proposal (scikit-learn, tol 1e-8, warm start).

    Screening, as the regularization benchmark does: a proposal is first fitted at tol
    1e-6; if it is far from the target (`s > 0.1` against `screen = (v_path_best,
    v_null)`, and the final `v_best` can only be lower) its loose value is kept: tight fits
    at penalties far below the optimum take minutes at p = 5000, and TPE proposes them.
    """

    def __init__(self, train, val, test):
        self.train, self.val, self.test = train, val, test
        self.screen, self.cache = None, {}

    def _fit(self, a1, a2, coef, tol):
        model = _sk(a1, a2).set_params(tol=tol, max_iter=100_000, warm_start=coef is not None)
        if coef is not None:
            model.coef_ = np.array(coef, dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(*self.train)
        return model.coef_

    def __call__(self, a1, a2=0.0, coef=None):
        key = (round(float(np.log(a1)), 6), round(float(np.log(a2)), 6) if a2 else None)
        if key not in self.cache:  # HOAG's late steps repeat a penalty to 6 digits
            self.cache[key] = self._score(a1, a2, coef)
        return self.cache[key]

    def _score(self, a1, a2, coef):
        if self.screen is not None:
            coef = self._fit(a1, a2, coef, 1e-6)
            v_best, v_null = self.screen
            if (_mse(self.val, coef) - v_best) / (v_null - v_best) > 0.1:
                return _mse(self.val, coef), _mse(self.test, coef)
        coef = self._fit(a1, a2, coef, 1e-8)
        return _mse(self.val, coef), _mse(self.test, coef)


def _tpe(train, val, box, trials, seed):
    optuna = quiet_optuna()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    times, props = [], []
    start = time.perf_counter()
    for _ in range(trials):
        trial = study.ask()
        a1 = trial.suggest_float("alpha1", *box["alpha1"], log=True)
        a2 = trial.suggest_float("alpha2", *box["alpha2"], log=True) if "alpha2" in box else 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _sk(a1, a2).fit(*train)
        study.tell(trial, _mse(val, model.coef_))
        times.append(time.perf_counter() - start)
        props.append((a1, a2, model.coef_.copy()))
    return times, props


def _cv(train, val, elastic):
    from sklearn.linear_model import ElasticNetCV, LassoCV
    from sklearn.model_selection import PredefinedSplit

    X = np.vstack([train[0], val[0]])
    y = np.concatenate([train[1], val[1]])
    fold = PredefinedSplit(np.r_[-np.ones(len(train[1])), np.zeros(len(val[1]))])
    est = (
        ElasticNetCV(l1_ratio=list(L1_RATIOS), cv=fold, fit_intercept=False)
        if elastic
        else LassoCV(cv=fold, fit_intercept=False)
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    spent = time.perf_counter() - start
    if elastic:
        a1, a2 = est.alpha_ * est.l1_ratio_, est.alpha_ * (1 - est.l1_ratio_)
    else:
        a1, a2 = est.alpha_, 0.0
    return spent, (a1, a2)


def _hoag(problem, h0, lower, upper, max_iter):
    res, times, whole = timed_hoag(problem, h0, lower=lower, upper=upper, max_iter=max_iter)
    props = [{k: np.asarray(v) for k, v in e["hparams"].items()} for e in res.history]
    return res, times, props, whole


def _one_seed(seed, n, p, n_val, max_iter, trials, quick):
    from sklearn.linear_model import lasso_path

    train, val, test = _data(seed, n, p, n_val)
    ref = _Referee(train, val, test)
    amax = problems.alpha_max(*train)
    lo, hi = amax * LOW, amax
    v_null = _mse(val, np.zeros(p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alphas, coefs, _ = lasso_path(*train, n_alphas=PATH_ALPHAS, eps=PATH_EPS, tol=1e-8)
    path = [_mse(val, coefs[:, i]) for i in range(len(alphas))]
    ref.screen = (min(path), v_null)
    out = {}
    for kind in ("lasso", "elastic_net"):
        elastic = kind == "elastic_net"
        if elastic:
            pr = problems.elastic_net(*train, *val)
            h0 = {"alpha1": amax / 10, "alpha2": amax / 10}
            box = {"alpha1": (lo, hi), "alpha2": (lo, hi)}
        else:
            pr = problems.lasso(*train, *val)
            h0 = {"alpha": amax / 10}
            box = {"alpha1": (lo, hi)}
        res, h_times, h_props, whole = _hoag(pr, h0, lo, hi, max_iter)
        key1 = "alpha1" if elastic else "alpha"
        h_vals = [
            ref(float(hp[key1]), float(hp["alpha2"]) if elastic else 0.0)[0] for hp in h_props
        ]
        t_times, t_props = _tpe(train, val, box, trials, seed)
        t_vals = [ref(a1, a2, coef)[0] for a1, a2, coef in t_props]
        cv_time, (c1, c2) = _cv(train, val, elastic)
        cv_val = ref(c1, c2)[0]
        v_best = min(min(path), min(h_vals), min(t_vals), cv_val)
        s = {
            "hoag": suboptimality(h_vals, v_best, v_null),
            "tpe": suboptimality(t_vals, v_best, v_null),
            "cv": suboptimality([cv_val], v_best, v_null),
        }
        times = {"hoag": h_times, "tpe": t_times, "cv": [cv_time]}
        out[kind] = {
            "time_to": {m: time_to(times[m], s[m], TARGET) for m in s},
            "spent": {m: times[m][-1] for m in s},
            "best_s": {m: float(np.min(s[m])) for m in s},
            "curve_hoag": {"time_s": h_times, "s": np.minimum.accumulate(s["hoag"])},
            "curve_tpe": {"time_s": t_times, "s": np.minimum.accumulate(s["tpe"])},
            "cv_alpha": (c1, c2),
            "hoag_whole_loop_s": whole,
        }
        if not elastic:
            best_alpha = float(res.hparams["alpha"])
    # Weighted lasso from the best single penalty.
    single_val, single_test = ref(best_alpha)
    pw = problems.weighted_lasso(*train, *val, *test, alpha=best_alpha)
    res_w, _, w_time = timed_hoag(
        pw, {"alpha": np.full(p, best_alpha)}, lower=lo, upper=hi * 10, max_iter=max_iter // 2
    )
    w = hg.solve(
        pw.inner,
        pw.init_params,
        {"alpha": jnp.asarray(res_w.hparams["alpha"])},
        pw.train,
        solver=pw.solver,
    ).params
    out["weighted"] = {
        "val_ratio": _mse(val, np.asarray(w)) / single_val,
        "test_ratio": _mse(test, np.asarray(w)) / single_test,
        "time_s": w_time,
        "nonzero": int(np.sum(np.asarray(w) != 0)),
    }
    return out


def run(quick: bool = False) -> dict:
    jax.config.update("jax_enable_x64", True)
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    n, p, n_val = (100, 300, 50) if quick else (1000, 5000, 250)
    max_iter, trials = (6, 6) if quick else (20, 20)
    per_seed = []
    for seed in seeds:
        per_seed.append(_one_seed(seed, n, p, n_val, max_iter, trials, quick))
        r = per_seed[-1]
        print(seed, {k: r[k]["time_to"] for k in ("lasso", "elastic_net")}, r["weighted"])

    claims = []
    for kind, label in (("lasso", "lasso"), ("elastic_net", "elastic net")):
        rows = [r[kind] for r in per_seed]
        for other, name in (("cv", "the CV estimator"), ("tpe", "TPE")):
            # A method that never reaches the level took at least its whole run.
            # ... and at least HOAG's time (conservative: it might have got there later).
            # HOAG never there: inf, also when the other never gets there either.
            ratio = [
                math.inf
                if not math.isfinite(r["time_to"]["hoag"])
                else r["time_to"]["hoag"]
                / (
                    r["time_to"][other]
                    if math.isfinite(r["time_to"][other])
                    else max(r["spent"][other], r["time_to"]["hoag"])
                )
                for r in rows
            ]
            stat = over_seeds(ratio, stat="median")
            hoag_t = over_seeds([r["time_to"]["hoag"] for r in rows], stat="median", unit="s")
            other_t = over_seeds([r["time_to"][other] for r in rows], stat="median", unit="s")
            claims.append(
                claim(
                    f"{kind}_hoag_faster_than_{other}",
                    f"On the {label} at n = {n}, p = {p}, HOAG reaches a held-out suboptimality "
                    f"of {TARGET:g} faster than {name}.",
                    source=src(
                        "Bertrand 2020",
                        figure="held-out loss against time (lasso, elastic net)",
                        value="implicit differentiation reaches the best held-out loss faster "
                        "than grid search and Bayesian optimization",
                        reference=BERTRAND_2020,
                    ),
                    ours=stat,
                    verdict=HOLDS if math.isfinite(stat["high"]) and stat["high"] < 1 else FAILS,
                    reason=f"HOAG's time to s <= {TARGET:g} over {name}'s (when it never gets "
                    "there: its whole run or HOAG's time, the longer, so the ratio is an upper "
                    "bound; inf where HOAG never gets there), median over seeds with "
                    f"the range; holds if the whole range is below 1. Median times: HOAG "
                    f"{hoag_t['value']:.3g} s, {name} {other_t['value']:.3g} s (inf: never); "
                    "compilation excluded",
                    hoag_time=hoag_t,
                    other_time=other_t,
                )
            )
    wv = over_seeds([r["weighted"]["val_ratio"] for r in per_seed], log=True)
    wt = over_seeds([r["weighted"]["test_ratio"] for r in per_seed], log=True)
    claims += [
        claim(
            "weighted_lasso_held_out",
            f"The weighted lasso ({p} penalties tuned by HOAG) reaches a lower held-out error "
            "than the best single penalty.",
            source=src(
                "Bertrand 2022",
                value="implicit differentiation scales to the weighted lasso's thousands of "
                "penalties",
                reference=BERTRAND_2022,
            ),
            ours=wv,
            verdict=HOLDS if wv["high"] < 1 else FAILS,
            reason="held-out MSE (weighted) over held-out MSE (best single penalty), geometric "
            "mean over seeds; holds if the interval lies below 1",
        ),
        claim(
            "weighted_lasso_test",
            "The weighted lasso's lower held-out error carries over to the test rows.",
            source=src(
                "Bertrand 2022",
                value="weighted lasso generalizes (test error) on the problems shown",
                reference=BERTRAND_2022,
            ),
            ours=wt,
            verdict=HOLDS if wt["high"] < 1 else FAILS,
            reason="test MSE (weighted) over test MSE (best single penalty); holds if the "
            "interval lies below 1 (above 1: the penalties overfit the held-out rows)",
        ),
    ]

    def curve_series(kind, m):
        cs = [r[kind][f"curve_{m}"] for r in per_seed]
        t_max = max(max(c["time_s"]) for c in cs)
        grid_t = np.geomspace(1e-2, t_max, 50)
        rows = []
        for c in cs:
            idx = np.searchsorted(c["time_s"], grid_t, side="right") - 1
            rows.append(np.where(idx >= 0, np.asarray(c["s"])[np.maximum(idx, 0)], 1.0))
        rows = np.maximum(np.asarray(rows), 1e-12)
        return series(m, grid_t, np.median(rows, 0), low=rows.min(0), high=rows.max(0))

    figures = [
        figure(
            f"{kind}_suboptimality",
            f"{kind}: held-out suboptimality against time",
            xlabel="seconds (compilation excluded)",
            ylabel="normalized suboptimality s",
            xscale="log",
            yscale="log",
            series=[curve_series(kind, "hoag"), curve_series(kind, "tpe")]
            + [
                series(
                    "CV estimator (its choice, at its fit time)",
                    [r[kind]["spent"]["cv"] for r in per_seed],
                    [max(r[kind]["best_s"]["cv"], 1e-12) for r in per_seed],
                )
            ],
            caption="Median over seeds with the range; s floored at 1e-12.",
        )
        for kind in ("lasso", "elastic_net")
    ]
    return {
        "seeds": seeds,
        "settings": {
            "data": f"Gaussian AR(1) 0.5 design, p={p}, 50 non-zero N(0,1) coefficients, noise "
            f"1; {n} train, {n_val} held-out, {n_val} test rows (fresh per seed)",
            "hoag": f"hypergrad.tune.hoag, max_iter={max_iter}, from alpha_max/10, box "
            f"[alpha_max {LOW:g}, alpha_max]",
            "cv": "LassoCV / ElasticNetCV(l1_ratio=[0.1, 0.5, 0.9]) with PredefinedSplit, "
            "defaults otherwise",
            "tpe": f"{trials} trials of scikit-learn Lasso / ElasticNet at default tolerance",
            "referee": "scikit-learn fit at tol 1e-8, warm-started",
            "target": TARGET,
            "float64": True,
        },
        "claims": claims,
        "figures": figures,
        "data": {"per_seed": per_seed},
    }
