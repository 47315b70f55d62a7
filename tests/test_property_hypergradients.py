"""Property test: on random well-conditioned ridge and logistic problems, implicit and
unrolled hypergradients match central finite differences.

Problems are drawn at fixed shapes and passed to the compiled functions as arguments, so
each function is compiled once for all examples.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import given
from hypothesis import strategies as st

import hypergrad as hg
from hypergrad import problems
from hypergrad.solvers import Newton, OptaxSolver

N, M, P = 30, 20, 4
STEPS = 1500


def _random_problem(kind, seed, log_alpha):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N + M, P))
    w = rng.standard_normal(P)
    alpha = float(np.exp(log_alpha))
    if kind == "ridge":
        y = X @ w + 0.5 * rng.standard_normal(N + M)
        return problems.ridge(X[:N], y[:N], X[N:], y[N:], alpha=alpha)
    y = (rng.random(N + M) < 1 / (1 + np.exp(-X @ w))).astype(float)
    return problems.logistic(X[:N], y[:N], X[N:], y[N:], alpha=alpha)


def _step_size(pb):
    # 1/L with L bounding the inner Hessian (see tests/_problems.hessian_bound).
    X = np.hstack([np.asarray(pb.train[0]), np.ones((N, 1))])
    scale = 1.0 if pb.name == "ridge" else 0.25
    return 1.0 / (scale * np.linalg.norm(X, 2) ** 2 / N + float(pb.hparams["alpha"]))


def _compiled(method, solver_for):
    def value(pb, h, lr):
        return hg.outer_loss(pb, h, solver=solver_for(lr), method=method)

    return jax.jit(value), jax.jit(jax.grad(value, argnums=1))


IMPLICIT = _compiled(hg.Implicit(hg.CG(tol=1e-13)), lambda lr: Newton(tol=1e-13))
UNROLLED = _compiled(
    hg.Unrolled(), lambda lr: OptaxSolver(lambda h: optax.sgd(lr), STEPS, tol=None)
)


@given(
    kind=st.sampled_from(["ridge", "logistic"]),
    seed=st.integers(0, 2**31 - 1),
    log_alpha=st.floats(np.log(0.05), np.log(5.0)),
)
def test_hypergradients_match_finite_differences(kind, seed, log_alpha):
    pb = _random_problem(kind, seed, log_alpha)
    lr = jnp.asarray(_step_size(pb))
    a = pb.hparams["alpha"]
    value, _ = IMPLICIT
    # Step eps^(1/3) * alpha: central-difference error ~ eps^(2/3) relative.
    step = np.finfo(float).eps ** (1 / 3) * float(a)
    fd = (value(pb, {"alpha": a + step}, lr) - value(pb, {"alpha": a - step}, lr)) / (2 * step)
    # Scale for the comparison: the loss's own size over alpha, so that a hypergradient
    # that happens to be near zero is compared on an absolute footing.
    scale = max(abs(float(fd)), 1e-3 * float(value(pb, pb.hparams, lr)) / float(a))
    for _, grad in (IMPLICIT, UNROLLED):
        got = grad(pb, pb.hparams, lr)["alpha"]
        # Gradient descent contracts by (1 - mu/L) per step with mu >= alpha >= 0.05 on the
        # weights and L < 5 on these draws (the unpenalized logistic intercept is slower,
        # but still well below 1e-6 after 1500 steps); 1e-4 bounds the remaining error.
        assert abs(float(got) - float(fd)) <= 1e-4 * scale, (kind, seed, log_alpha)
