"""PES against truncated backpropagation and truncated ES on a learning-rate schedule.

Inner problem: multinomial logistic regression on digits, full-batch gradient descent for
`T` steps with the schedule `lr_t = exp(theta_0 + theta_1 t / T)`. Meta-objective: the sum
over truncations of the validation loss at the end of each truncation (`T / K` terms).
Target: its exact gradient by backpropagation through the full unroll. Each estimator
sees the unroll only in truncations of `K` steps; its per-episode estimate is the sum of
its per-truncation estimates. Over `RUNS` independent episodes (keys) we report the bias
(mean estimate minus target, with its standard error) and the variance.

`python -m experiments.pes_schedule` writes `experiments/results/pes_schedule.json`.

Reference: Vicol, Metz and Sohl-Dickstein, "Unbiased Gradient Estimation in Unrolled
Computation Graphs with Persistent Evolution Strategies", 2021,
https://arxiv.org/abs/2112.13835
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad.methods import PES
from hypergrad.problems import load

from ._common import softmax_xent, write_results

T, K, PARTICLES, SIGMA, RUNS = 100, 10, 16, 0.01, 200
THETA = jnp.array([np.log(0.05), 1.0])  # lr from 0.05 rising to 0.14 over the unroll


def _setup():
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


def main():
    started = time.time()
    jax.config.update("jax_enable_x64", True)
    w0, unroll = _setup()

    def total(theta):
        w, tot = w0, 0.0
        for j in range(T // K):
            w, l = unroll(w, theta, j * K, K)
            tot = tot + l
        return tot

    target = np.asarray(jax.jit(jax.grad(total))(THETA))

    def tbptt(theta):
        w, g = w0, jnp.zeros_like(theta)
        for j in range(T // K):
            start = jax.lax.stop_gradient(w)
            g = g + jax.grad(lambda th, s=start, j=j: unroll(s, th, j * K, K)[1])(theta)
            w, _ = unroll(w, theta, j * K, K)
        return g

    g_tbptt = np.asarray(jax.jit(tbptt)(THETA))

    results = {
        "truncated_backprop": {
            "mean": g_tbptt,
            "bias": g_tbptt - target,
            "bias_standard_error": [0.0, 0.0],
            "variance": [0.0, 0.0],
            "relative_bias": float(np.linalg.norm(g_tbptt - target) / np.linalg.norm(target)),
        }
    }
    for name, persistent in (("pes", True), ("truncated_es", False)):
        est = PES(PARTICLES, SIGMA, K, T, persistent=persistent)

        def episode(key, est=est):
            state = est.init(key, THETA, w0)

            def body(s, _):
                g, _, s = est.step(s, THETA, unroll)
                return s, g

            _, gs = jax.lax.scan(body, state, None, length=T // K)
            return gs.sum(0)

        keys = jax.random.split(jax.random.key(0), RUNS)
        g = np.asarray(jax.jit(jax.vmap(episode))(keys))
        mean, var = g.mean(0), g.var(0, ddof=1)
        se = np.sqrt(var / RUNS)
        results[name] = {
            "mean": mean,
            "bias": mean - target,
            "bias_standard_error": se,
            "bias_in_standard_errors": (mean - target) / se,
            "variance": var,
            "relative_bias": float(np.linalg.norm(mean - target) / np.linalg.norm(target)),
        }
    for k, v in results.items():
        print(
            f"{k:20s} mean {np.round(v['mean'], 4)}  bias {np.round(v['bias'], 4)} "
            f"+- {np.round(v['bias_standard_error'], 4)}  var {np.round(v['variance'], 4)}"
        )
    print("target", target)
    path = write_results(
        "pes_schedule",
        {
            "settings": {
                "problem": "digits multinomial logistic regression, full-batch GD, schedule "
                "lr_t = exp(theta_0 + theta_1 t / T); meta-loss: sum of validation losses "
                "at the ends of the truncations",
                "T": T,
                "K": K,
                "particles": f"{PARTICLES} antithetic pairs",
                "sigma": SIGMA,
                "runs": RUNS,
                "theta": THETA,
                "float64": True,
            },
            "target_full_unroll_gradient": target,
            "estimators": results,
        },
        started,
    )
    print("wrote", path)


if __name__ == "__main__":
    main()
