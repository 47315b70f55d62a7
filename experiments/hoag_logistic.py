"""HOAG against grid search, random search and TPE on L2-regularized logistic regression:
suboptimality of the validation loss against seconds.

Data: `hypergrad.problems.synthetic_classification` (a fresh draw per seed; 50% train,
25% validation, 25% test). Hyperparameter: the penalty `alpha` of `mean log-loss +
alpha/2 ||w||^2` (`hypergrad.problems.logistic`), searched in `[1e-6, 1e2]` (log).

- HOAG: `hypergrad.tune.hoag(problem, {"alpha": 1}, max_iter=...)` (inexact inner and
  adjoint solves with a decreasing tolerance, warm starts); its history, run with a
  callback (`experiments._common.timed_hoag`), gives the time and the hyperparameter of
  every outer step.
- grid search: `BUDGET` log-spaced values, from the strongest penalty down;
- random search: `BUDGET` log-uniform draws (Optuna's RandomSampler, seeded);
- TPE: Optuna's TPESampler, `BUDGET` trials, seeded.

The black-box methods evaluate each value with the problem's own solver, compiled once.
Every compiled function is called once before the clocks start (the times exclude
compilation; the compile times are reported apart). Every hyperparameter a method
proposes is re-evaluated afterwards, untimed, by scipy's L-BFGS-B to a gradient norm of
1e-10 (the regularization benchmark's referee, warm-started along a path);
`s = (v - v_best) / (v_null - v_best)` with `v` the running best re-evaluated value,
`v_best` the best of a dense grid of 100 values or of any proposal, `v_null` the value at
the strongest penalty (BENCHMARKS.md). Figure: the time until `s <= 1e-3`.

Reference: Pedregosa, "Hyperparameter optimization with approximate gradient", ICML
2016, https://arxiv.org/abs/1602.02355
"""

import math
import time

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

TITLE = "HOAG against grid search, random search and TPE on L2 logistic regression"
PEDREGOSA = (
    "Pedregosa, Hyperparameter optimization with approximate gradient, ICML 2016, "
    "https://arxiv.org/abs/1602.02355"
)
LOW, HIGH, START = 1e-6, 1e2, 1.0
TARGETS = (1e-2, 1e-3)


def _problem(seed, n, p):
    X, y = problems.synthetic_classification(2 * n, p, informative=p // 10, seed=seed)
    a, b = n, n + n // 2
    return problems.logistic(X[:a], y[:a], X[a:b], y[a:b], X[b:], y[b:], alpha=START)


@jax.jit
def _value(problem, alpha):
    return hg.outer_loss(problem, {"alpha": alpha})


class _Referee:
    """The tight validation loss at `alpha`: scipy's L-BFGS-B to a gradient norm of 1e-10
    (`benchmarks.regularization.fit_logistic`, independent of hypergrad's solvers),
    warm-started from the nearest penalty fitted before (a path)."""

    def __init__(self, problem):
        self.X, self.y = (np.asarray(a) for a in problem.train)
        self.Xv, self.yv = (np.asarray(a) for a in problem.val)
        self.fitted = {}  # log alpha -> z

    def __call__(self, alpha):
        from scipy.special import log_expit

        from benchmarks.regularization import fit_logistic

        key = float(np.log(alpha))
        z0 = None
        if self.fitted:
            z0 = self.fitted[min(self.fitted, key=lambda k: abs(k - key))]
        C = 1.0 / (alpha * len(self.y))  # ours: mean log-loss + alpha/2 ||w||^2
        w, b, z = fit_logistic(self.X, self.y, C, l1=False, z0=z0)
        self.fitted[key] = z
        m = (2 * self.yv - 1) * (self.Xv @ w + b)
        return float(-np.mean(log_expit(m)))


def _black_box(problem, proposals):
    """Evaluate `proposals()` (a generator fed back the values) with the timed solver."""
    times, alphas = [], []
    start = time.perf_counter()
    gen = proposals()
    value = None
    while True:
        try:
            a = gen.send(value)
        except StopIteration:
            break
        value = float(_value(problem, jnp.asarray(a)))
        times.append(time.perf_counter() - start)
        alphas.append(a)
    return times, alphas


def _grid(budget):
    def gen():
        for a in np.geomspace(HIGH, LOW, budget):
            yield float(a)

    return gen


def _optuna(sampler, budget):
    optuna = quiet_optuna()

    def gen():
        study = optuna.create_study(sampler=sampler)
        for _ in range(budget):
            trial = study.ask()
            v = yield trial.suggest_float("alpha", LOW, HIGH, log=True)
            study.tell(trial, v)

    return gen


def run(quick: bool = False) -> dict:
    jax.config.update("jax_enable_x64", True)
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    n, p = (200, 20) if quick else (2000, 300)
    budget = 8 if quick else 30
    optuna = quiet_optuna()
    methods = ("hoag", "grid", "random", "tpe")
    t_hit = {lvl: {m: [] for m in methods} for lvl in TARGETS}
    solves_hit = {m: [] for m in methods}
    final_s = {m: [] for m in methods}
    compile_s, whole_loop_s = {}, []
    curves = {m: [] for m in methods}
    for seed in seeds:
        pr = _problem(seed, n, p)
        # Warm-ups: every compiled program of the timed runs exists before the clocks start.
        t0 = time.perf_counter()
        _value(pr, jnp.asarray(START)).block_until_ready()
        compile_s.setdefault("black_box", []).append(time.perf_counter() - t0)

        res, times, whole = timed_hoag(pr, {"alpha": START}, lower=LOW, upper=HIGH, max_iter=budget)
        whole_loop_s.append(whole)
        runs = {
            "hoag": (times, [float(np.asarray(e["hparams"]["alpha"])) for e in res.history]),
            "grid": _black_box(pr, _grid(budget)),
            "random": _black_box(pr, _optuna(optuna.samplers.RandomSampler(seed=seed), budget)),
            "tpe": _black_box(pr, _optuna(optuna.samplers.TPESampler(seed=seed), budget)),
        }
        referee = _Referee(pr)
        dense = [referee(a) for a in np.geomspace(HIGH, LOW, 20 if quick else 100)]
        tight = {m: [referee(a) for a in alphas] for m, (_, alphas) in runs.items()}
        v_best = min(min(dense), *(min(v) for v in tight.values()))
        v_null = referee(HIGH)
        for m, (times, _) in runs.items():
            s = suboptimality(tight[m], v_best, v_null)
            for lvl in TARGETS:
                t_hit[lvl][m].append(time_to(times, s, lvl))
            hits = np.nonzero(np.minimum.accumulate(s) <= TARGETS[-1])[0]
            solves_hit[m].append(int(hits[0]) + 1 if hits.size else math.inf)
            final_s[m].append(float(np.min(s)))
            curves[m].append({"time_s": times, "s": np.minimum.accumulate(s)})
        print(
            seed,
            {m: round(t_hit[1e-3][m][-1], 3) for m in methods},
            {m: f"{final_s[m][-1]:.1e}" for m in methods},
        )

    t3 = {m: over_seeds(t_hit[1e-3][m], stat="median", unit="s") for m in methods}
    others = ("grid", "random", "tpe")
    # A method that never reaches the level within its budget would take at least its whole
    # run, and (conservatively) at least HOAG's time: the ratio is then an upper bound.
    t_hoag = np.asarray(t_hit[1e-3]["hoag"])
    spent = {m: np.array([c["time_s"][-1] for c in curves[m]]) for m in others}
    best_other = np.min(
        [
            np.where(np.isfinite(t_hit[1e-3][m]), t_hit[1e-3][m], np.maximum(spent[m], t_hoag))
            for m in others
        ],
        axis=0,
    )
    # HOAG never there: inf, also when no black-box method gets there either.
    ratio = over_seeds(
        np.where(
            np.isfinite(t_hoag), t_hoag / np.where(np.isfinite(t_hoag), best_other, 1), np.inf
        ),
        stat="median",
    )
    # Where the black-box methods stand when HOAG first reaches 1e-3.
    at_hoag = []
    for i, t in enumerate(t_hit[1e-3]["hoag"]):
        if not math.isfinite(t):
            continue
        best = min(
            (
                c["s"][np.searchsorted(c["time_s"], t, side="right") - 1]
                if np.searchsorted(c["time_s"], t, side="right") > 0
                else 1.0
            )
            for m in others
            for c in [curves[m][i]]
        )
        at_hoag.append(float(max(best, 1e-16)))
    claims = [
        claim(
            "hoag_reaches_1e-3_first",
            "HOAG reaches a normalized suboptimality of 1e-3 on the validation loss in less "
            "time than grid search, random search and TPE.",
            source=src(
                "Pedregosa 2016",
                figure="suboptimality against time, L2 logistic regression (20news, real-sim)",
                value="HOAG ~1e-3 in ~1.4 s; the others far off at 3.5-6 s",
                reference=PEDREGOSA,
            ),
            ours=ratio,
            verdict=HOLDS if math.isfinite(ratio["high"]) and ratio["high"] < 1 else FAILS,
            reason="ours: HOAG's time to s <= 1e-3 over the fastest black-box method's (one "
            "that never gets there counts with its whole run or HOAG's time, the longer: the "
            "ratio is then an upper bound), median over seeds with the range; holds if the "
            "whole range is below 1. Medians of the time to 1e-3 (inf: never within the "
            "budget): "
            + ", ".join(f"{m} {t3[m]['value']:.3g} s" for m in methods)
            + "; compilation excluded; HOAG's times are its stepwise run's (with a callback); "
            f"its whole loop of {budget} steps takes {np.median(whole_loop_s):.2g} s",
            time_to_1e3=t3,
        ),
        claim(
            "others_far_off_when_hoag_arrives",
            "When HOAG first reaches 1e-3, the best black-box method is still far off (above "
            "1e-2).",
            source=src(
                "Pedregosa 2016",
                figure="suboptimality against time, L2 logistic regression",
                value="the others far off at HOAG's time",
                reference=PEDREGOSA,
            ),
            ours=over_seeds(at_hoag, stat="median")
            if at_hoag
            else over_seeds([math.inf], stat="median"),
            verdict=HOLDS if at_hoag and min(at_hoag) > 1e-2 else FAILS,
            reason="best suboptimality any black-box method had reached by HOAG's time to "
            f"1e-3, median over the {len(at_hoag)} seeds where HOAG got there; holds if above "
            "1e-2 on every seed",
        ),
    ]

    def band(m):
        grid_t = np.geomspace(1e-3, max(max(c["time_s"]) for mm in methods for c in curves[mm]), 60)
        rows = []
        for c in curves[m]:
            idx = np.searchsorted(c["time_s"], grid_t, side="right") - 1
            rows.append(np.where(idx >= 0, np.asarray(c["s"])[np.maximum(idx, 0)], 1.0))
        rows = np.maximum(np.asarray(rows), 1e-16)
        return grid_t, np.median(rows, 0), rows.min(0), rows.max(0)

    figures = [
        figure(
            "suboptimality",
            "Suboptimality of the validation loss against time",
            xlabel="seconds (compilation excluded)",
            ylabel="normalized suboptimality s",
            xscale="log",
            yscale="log",
            series=[series(m, *band(m)[:2], low=band(m)[2], high=band(m)[3]) for m in methods],
            caption="Median over seeds with the range; s floored at 1e-16.",
        )
    ]
    return {
        "seeds": seeds,
        "settings": {
            "data": f"synthetic_classification(n={2 * n}, p={p}, informative={p // 10}, seed); "
            "50/25/25 split",
            "range": [LOW, HIGH],
            "budget": f"{budget} outer steps (HOAG) or evaluations (black box)",
            "hoag": f"hypergrad.tune.hoag from alpha={START}",
            "black_box_solver": "the problem's own solver (hypergrad.problems.logistic)",
            "reference": "scipy L-BFGS-B to a gradient norm of 1e-10 (warm-started path), "
            "dense grid of 100 values",
            "targets": list(TARGETS),
            "float64": True,
        },
        "claims": claims,
        "figures": figures,
        "data": {
            "time_to": {str(k): v for k, v in t_hit.items()},
            "solves_to_1e-3": solves_hit,
            "final_suboptimality": final_s,
            "compile_s": compile_s,
            "hoag_whole_loop_s": whole_loop_s,
        },
    }
