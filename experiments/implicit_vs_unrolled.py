"""Implicit against unrolled differentiation: time and memory as the inner iterations
grow, and the implicit Jacobian's error against the inner solution's error.

Problem: L2 logistic regression with one penalty per feature on synthetic data
(`experiments._setups.logistic_problem`), the inner problem solved by `t` steps of
gradient descent (step `1 / L`) from zero.

1. Cost. The hypergradient after `t` steps by `Unrolled()` (reverse mode through the
   steps) and by `Implicit(CG(tol=1e-10))` at the `t`-th iterate. Memory: the scratch
   bytes XLA allocates for the compiled hypergradient (`memory_analysis`), which depend on
   the program, not on the machine's load. Time: the compiled call, medians of calls
   taken in turns (`benchmarks._harness.time_side_by_side`), one data set per seed.
2. Precision. The Jacobian `d params / d alpha` that implicit differentiation returns at
   the `t`-th iterate (dense linear solve, so only the iterate is inexact) against the
   one at the exact solution, for growing `t`: the log-log slope of the Jacobian's
   relative error against the iterate's relative error.

Reference: Blondel, Berthet, Cuturi, Frostig, Hoyer, Llinares-Lopez, Pedregosa and Vert,
"Efficient and Modular Implicit Differentiation", NeurIPS 2022,
https://arxiv.org/abs/2105.15183
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hypergrad as hg
from benchmarks._harness import time_side_by_side
from hypergrad.solvers import OptaxSolver

from ._common import FAILS, HOLDS, claim, figure, measured, over_seeds, series
from ._common import source as src
from ._setups import REFERENCE_SOLVER, lipschitz, logistic_problem

TITLE = "Implicit against unrolled differentiation: cost and Jacobian precision"
REFERENCE = (
    "Blondel et al., Efficient and Modular Implicit Differentiation, NeurIPS 2022, "
    "https://arxiv.org/abs/2105.15183"
)
ALPHA = 0.02


def _gd(t, lr):
    return OptaxSolver(optax.sgd(lr), max_steps=t, tol=None)


def _hypergradient_fn(method, solver):
    grad = jax.grad(lambda h, pr: hg.outer_loss(pr, h, solver=solver, method=method))
    return jax.jit(lambda h, pr: grad(h, pr)["alpha"])


def _temp_bytes(fn, h, pr):
    analysis = fn.lower(h, pr).compile().memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)


def _jacobian_fn(solver):
    method = hg.Implicit(hg.Dense(symmetric=True))

    def params(alpha, pr):
        sol = hg.solve(
            pr.inner, pr.init_params, {"alpha": alpha}, pr.train, solver=solver, method=method
        )
        return sol.params["w"]

    return jax.jit(lambda alpha, pr: (params(alpha, pr), jax.jacfwd(params)(alpha, pr)))


def _loglog_slope(x, y):
    x, y = np.log10(np.asarray(x, float)), np.log10(np.asarray(y, float))
    return float(np.polyfit(x, y, 1)[0])


def run(quick: bool = False) -> dict:
    jax.config.update("jax_enable_x64", True)
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    n, p = (200, 40) if quick else (1000, 200)
    ts = [10, 30, 100] if quick else [10, 30, 100, 300, 1000, 3000]
    n_j, p_j = (60, 10) if quick else (200, 50)
    ts_j = [5, 10, 20, 40] if quick else [5, 10, 20, 40, 80, 160, 240, 320]
    reps = 3 if quick else 7

    # --- cost ---
    probs = [logistic_problem(s, n=n, p=p, alpha=ALPHA) for s in seeds]
    lr = 1.0 / max(lipschitz(pr, pr.hparams) for pr in probs)
    methods = {"unrolled": hg.Unrolled(), "implicit": hg.Implicit(hg.CG(tol=1e-10))}
    memory = {m: [] for m in methods}
    times = {m: np.zeros((len(seeds), len(ts))) for m in methods}
    for j, t in enumerate(ts):
        fns = {m: _hypergradient_fn(meth, _gd(t, lr)) for m, meth in methods.items()}
        for m, fn in fns.items():
            memory[m].append(_temp_bytes(fn, probs[0].hparams, probs[0]))
        for i, pr in enumerate(probs):
            timed = time_side_by_side({m: (fn, (pr.hparams, pr)) for m, fn in fns.items()}, reps)
            for m in methods:
                times[m][i, j] = timed[m]["time_s"]
        print(
            "t",
            t,
            {m: memory[m][-1] for m in methods},
            {m: float(np.median(times[m][:, j])) for m in methods},
        )

    # --- precision ---
    jac_err = np.zeros((len(seeds), len(ts_j)))
    inner_err = np.zeros((len(seeds), len(ts_j)))
    jprobs = [logistic_problem(s, n=n_j, p=p_j, alpha=ALPHA) for s in seeds]
    lr_j = 1.0 / max(lipschitz(pr, pr.hparams) for pr in jprobs)
    exact = _jacobian_fn(REFERENCE_SOLVER)
    refs = [exact(pr.hparams["alpha"], pr) for pr in jprobs]
    for j, t in enumerate(ts_j):
        fn = _jacobian_fn(_gd(t, lr_j))
        for i, (pr, (w_star, J_star)) in enumerate(zip(jprobs, refs, strict=True)):
            w, J = fn(pr.hparams["alpha"], pr)
            inner_err[i, j] = float(jnp.linalg.norm(w - w_star) / jnp.linalg.norm(w_star))
            jac_err[i, j] = float(jnp.linalg.norm(J - J_star) / jnp.linalg.norm(J_star))
    slopes = np.array([_loglog_slope(inner_err[i], jac_err[i]) for i in range(len(seeds))])
    proportionality = jac_err / inner_err

    mem_slope_unrolled = _loglog_slope(ts[-3:], memory["unrolled"][-3:])
    mem_growth_implicit = memory["implicit"][-1] / memory["implicit"][0]
    speedup = over_seeds(times["unrolled"][:, -1] / times["implicit"][:, -1], stat="median")
    time_slope = {
        m: over_seeds([_loglog_slope(ts[-3:], times[m][i, -3:]) for i in range(len(seeds))])
        for m in methods
    }
    slope = over_seeds(slopes)
    claims = [
        claim(
            "unrolled_memory_linear",
            "The memory of reverse-mode unrolled differentiation grows linearly with the "
            "number of inner iterations.",
            source=src(
                "Blondel 2022",
                value="unrolling stores every iterate: memory O(t)",
                reference=REFERENCE,
            ),
            ours=measured(
                mem_slope_unrolled,
                why="XLA's allocation for a compiled program does not depend on the seed",
            ),
            verdict=HOLDS if 0.8 <= mem_slope_unrolled <= 1.2 else FAILS,
            reason=f"log-log slope of scratch bytes against t over t = {ts[-3:]}; holds "
            "within [0.8, 1.2] (bytes: " + ", ".join(map(str, memory["unrolled"])) + ")",
        ),
        claim(
            "implicit_memory_constant",
            "The memory of implicit differentiation does not grow with the number of inner "
            "iterations.",
            source=src(
                "Blondel 2022",
                value="memory independent of the solver's iterations",
                reference=REFERENCE,
            ),
            ours=measured(
                mem_growth_implicit,
                unit="x",
                why="XLA's allocation for a compiled program does not depend on the seed",
            ),
            verdict=HOLDS if mem_growth_implicit <= 1.1 else FAILS,
            reason=f"scratch bytes at t = {ts[-1]} over those at t = {ts[0]}; holds if at "
            "most 1.1 (bytes: " + ", ".join(map(str, memory["implicit"])) + ")",
        ),
        claim(
            "implicit_faster_at_many_iterations",
            "With many inner iterations, implicit differentiation computes the hypergradient "
            "faster than unrolling.",
            source=src(
                "Blondel 2022",
                value="implicit differentiation faster than unrolling as iterations grow",
                reference=REFERENCE,
            ),
            ours=speedup,
            verdict=HOLDS if speedup["low"] > 1 else FAILS,
            reason=f"time of unrolled over implicit at t = {ts[-1]}, median over seeds with "
            f"the range; holds if the whole range is above 1. Log-log slopes of time against "
            f"t: unrolled {time_slope['unrolled']['value']:.2f}, implicit "
            f"{time_slope['implicit']['value']:.2f} (both pay the t forward steps)",
            time_slopes=time_slope,
        ),
        claim(
            "jacobian_error_linear_in_inner_error",
            "The implicit Jacobian's error is linear in the inner solution's error.",
            source=src(
                "Blondel 2022",
                value="||J(x_hat) - J(x*)|| <= C ||x_hat - x*|| (Jacobian precision theorem)",
                reference=REFERENCE,
            ),
            ours=slope,
            verdict=HOLDS if 0.9 <= slope["low"] and slope["high"] <= 1.1 else FAILS,
            reason="log-log slope of the Jacobian's relative error against the iterate's "
            "relative error over t = " + ", ".join(map(str, ts_j)) + "; holds if its interval "
            f"lies within [0.9, 1.1] (ratio error/inner error from "
            f"{proportionality.min():.3g} to {proportionality.max():.3g})",
        ),
    ]

    def band(rows, stat="median"):
        stats = [over_seeds(c, stat=stat) for c in np.asarray(rows).T]
        return [s["value"] for s in stats], [s["low"] for s in stats], [s["high"] for s in stats]

    figures = [
        figure(
            "memory",
            "Scratch memory of the compiled hypergradient",
            xlabel="inner iterations t",
            ylabel="bytes",
            xscale="log",
            yscale="log",
            series=[series(m, ts, memory[m]) for m in methods],
        ),
        figure(
            "time",
            "Time of one hypergradient",
            xlabel="inner iterations t",
            ylabel="seconds",
            xscale="log",
            yscale="log",
            series=[
                series(m, ts, *band(times[m])[:1], low=band(times[m])[1], high=band(times[m])[2])
                for m in methods
            ],
            caption="Medians over seeds with the range.",
        ),
        figure(
            "jacobian",
            "Implicit Jacobian error against inner error",
            xlabel="||x_t - x*|| / ||x*||",
            ylabel="||J_t - J*|| / ||J*||",
            xscale="log",
            yscale="log",
            kind="scatter",
            series=[series(f"seed {s}", inner_err[i], jac_err[i]) for i, s in enumerate(seeds)],
        ),
    ]
    return {
        "seeds": seeds,
        "settings": {
            "cost_problem": f"L2 logistic regression, one penalty per feature (alpha={ALPHA}),"
            f" n={n} train + {n} val, p={p}",
            "precision_problem": f"same, n={n_j}, p={p_j}",
            "inner": "gradient descent from zero, step 1/L (L: the largest bound over seeds)",
            "ts_cost": ts,
            "ts_precision": ts_j,
            "implicit": "CG(tol=1e-10) for the cost; Dense for the precision",
            "timing": f"compiled calls in turns, median of {reps}",
            "float64": True,
        },
        "claims": claims,
        "figures": figures,
        "data": {
            "memory_bytes": memory,
            "times_s": times,
            "inner_error": inner_err,
            "jacobian_error": jac_err,
            "jacobian_slopes": slopes,
        },
    }
