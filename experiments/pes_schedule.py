"""PES against truncated backpropagation and truncated ES on a learning-rate schedule.

Inner problem: multinomial logistic regression on digits, full-batch gradient descent for
`T` steps with the schedule `lr_t = exp(theta_0 + theta_1 t / T)`. Meta-objective: the sum
over truncations of the validation loss at the end of each truncation (`T / K` terms).
Target: its exact gradient by backpropagation through the full unroll. Each estimator
sees the unroll only in truncations of `K` steps; its per-episode estimate is the sum of
its per-truncation estimates. Over independent episodes (one PRNG key each) we report
the bias (mean estimate minus target, with its standard error), the variance, and the
projection of each episode's estimate on the target, `<g, g*> / ||g*||^2` (1 for an
unbiased estimator on average).

Reference: Vicol, Metz and Sohl-Dickstein, "Unbiased Gradient Estimation in Unrolled
Computation Graphs with Persistent Evolution Strategies", 2021,
https://arxiv.org/abs/2112.13835
"""

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad.methods import PES
from hypergrad.problems import load

from ._common import FAILS, HOLDS, claim, figure, measured, over_seeds, series, softmax_xent
from ._common import source as src

TITLE = "PES is unbiased where truncation is biased (learning-rate schedule on digits)"
REFERENCE = (
    "Vicol, Metz, Sohl-Dickstein, Unbiased Gradient Estimation in Unrolled Computation "
    "Graphs with Persistent Evolution Strategies, ICML 2021, https://arxiv.org/abs/2112.13835"
)
THETA = (np.log(0.05), 1.0)  # lr from 0.05 rising to 0.14 over the unroll


def _setup(T):
    d = load("digits", seed=0)
    train = (jnp.asarray(d.X_train), jnp.asarray(d.y_train, jnp.int32))
    val = (jnp.asarray(d.X_val), jnp.asarray(d.y_val, jnp.int32))
    p = train[0].shape[1]
    w0 = {"W": jnp.zeros((p, 10)), "b": jnp.zeros(10)}

    def loss(w, data):
        X, y = data
        return softmax_xent(X @ w["W"] + w["b"], y)

    def unroll(w, theta, step, num_steps):
        def body(i, w):
            lr = jnp.exp(theta[0] + theta[1] * (step + i) / T)
            g = jax.grad(loss)(w, train)
            return jax.tree.map(lambda a, b: a - lr * b, w, g)

        w = jax.lax.fori_loop(0, num_steps, body, w)
        return w, loss(w, val)

    return w0, unroll


def run(quick: bool = False) -> dict:
    jax.config.update("jax_enable_x64", True)
    T, K, particles, sigma, runs = (20, 5, 4, 0.01, 8) if quick else (100, 10, 16, 0.01, 200)
    theta = jnp.asarray(THETA)
    w0, unroll = _setup(T)

    def total(th):
        w, tot = w0, 0.0
        for j in range(T // K):
            w, loss = unroll(w, th, j * K, K)
            tot = tot + loss
        return tot

    target = np.asarray(jax.jit(jax.grad(total))(theta))

    def tbptt(th):
        w, g = w0, jnp.zeros_like(th)
        for j in range(T // K):
            start = jax.lax.stop_gradient(w)
            g = g + jax.grad(lambda t, s=start, j=j: unroll(s, t, j * K, K)[1])(th)
            w, _ = unroll(w, th, j * K, K)
        return g

    g_tbptt = np.asarray(jax.jit(tbptt)(theta))
    norm2 = float(target @ target)
    estimators = {
        "truncated_backprop": {
            "mean": g_tbptt,
            "bias": g_tbptt - target,
            "relative_bias": float(np.linalg.norm(g_tbptt - target) / np.sqrt(norm2)),
            "projection": float(g_tbptt @ target / norm2),
        }
    }
    seeds = list(range(runs))
    projections = {}
    for name, persistent in (("pes", True), ("truncated_es", False)):
        est = PES(particles, sigma, K, T, persistent=persistent)

        def episode(key, est=est):
            state = est.init(key, theta, w0)

            def body(s, _):
                g, _, s = est.step(s, theta, unroll)
                return s, g

            _, gs = jax.lax.scan(body, state, None, length=T // K)
            return gs.sum(0)

        keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
        g = np.asarray(jax.jit(jax.vmap(episode))(keys))
        mean, var = g.mean(0), g.var(0, ddof=1)
        se = np.sqrt(var / runs)
        projections[name] = g @ target / norm2
        estimators[name] = {
            "mean": mean,
            "bias": mean - target,
            "bias_standard_error": se,
            "bias_in_standard_errors": (mean - target) / se,
            "variance": var,
            "relative_bias": float(np.linalg.norm(mean - target) / np.sqrt(norm2)),
        }
        print(f"{name}: mean {np.round(mean, 4)} target {np.round(target, 4)}")

    pes = over_seeds(projections["pes"])
    tes = over_seeds(projections["truncated_es"])
    tb = measured(
        estimators["truncated_backprop"]["projection"], why="truncated backprop is deterministic"
    )
    claims = [
        claim(
            "pes_unbiased",
            "PES estimates of the meta-gradient of a truncated unroll are unbiased: their "
            "mean projection on the full-unroll gradient is 1.",
            source=src("Vicol 2021", value="unbiased", reference=REFERENCE),
            ours=pes,
            verdict=HOLDS if pes["low"] <= 1 <= pes["high"] else FAILS,
            reason=f"mean projection over {runs} episodes; holds if the 95% interval holds 1",
        ),
        claim(
            "truncated_backprop_biased",
            "Truncated backpropagation is biased: its estimate's projection on the "
            "full-unroll gradient is not 1.",
            source=src("Vicol 2021", value="biased", reference=REFERENCE),
            ours=tb,
            verdict=HOLDS if abs(tb["value"] - 1) > 0.05 else FAILS,
            reason="deterministic estimate; holds if its projection is more than 5% from 1 "
            f"(relative bias {estimators['truncated_backprop']['relative_bias']:.2f})",
        ),
        claim(
            "truncated_es_biased",
            "Truncated ES (perturbations resampled at each truncation) is biased like "
            "truncated backpropagation.",
            source=src("Vicol 2021", value="biased", reference=REFERENCE),
            ours=tes,
            verdict=HOLDS if not (tes["low"] <= 1 <= tes["high"]) else FAILS,
            reason=f"mean projection over {runs} episodes; holds if the 95% interval excludes 1",
        ),
    ]
    figures = [
        figure(
            "projections",
            "Projection of each estimate on the full-unroll gradient",
            xlabel="estimator",
            ylabel="<g, g*> / ||g*||^2 (1 = unbiased)",
            kind="bar",
            series=[
                series(
                    "mean over episodes (95% interval)",
                    ["truncated backprop", "truncated ES", "PES"],
                    [tb["value"], tes["value"], pes["value"]],
                    low=[tb["low"], tes["low"], pes["low"]],
                    high=[tb["high"], tes["high"], pes["high"]],
                )
            ],
        )
    ]
    return {
        "seeds": seeds,
        "settings": {
            "problem": "digits multinomial logistic regression, full-batch GD, schedule "
            "lr_t = exp(theta_0 + theta_1 t / T); meta-loss: sum of validation losses at "
            "the ends of the truncations",
            "T": T,
            "K": K,
            "particles": f"{particles} antithetic pairs",
            "sigma": sigma,
            "episodes": runs,
            "theta": theta,
            "float64": True,
        },
        "claims": claims,
        "figures": figures,
        "data": {"target_full_unroll_gradient": target, "estimators": estimators},
    }
