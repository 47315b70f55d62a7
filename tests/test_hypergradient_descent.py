"""Online hypergradient descent: the recursion of Baydin et al. written out by hand, the
learning rate's response to agreeing and opposing gradients, start from zero, use inside
an inner solver, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hypergrad.solvers import (
    OptaxSolver,
    hd_adam,
    hd_nesterov,
    hd_sgd,
    hypergradient_descent,
    run,
)

H = jnp.diag(jnp.array([1.0, 4.0, 0.5]))
X0 = jnp.array([1.0, -1.0, 2.0])


def _quad_grad(x):
    return H @ x


def _run(tx, steps, x0=X0):
    def body(carry, _):
        x, s = carry
        u, s = tx.update(_quad_grad(x), s, x)
        return (optax.apply_updates(x, u), s), s.learning_rate

    (x, s), lrs = jax.lax.scan(body, (x0, tx.init(x0)), None, length=steps)
    return x, s, lrs


def test_sgd_hd_matches_the_papers_recursion():
    alpha0, beta = 0.05, 0.01
    x, _, lrs = jax.jit(lambda: _run(hd_sgd(alpha0, beta), 6))()
    # Algorithm 1 of Baydin et al. (SGD-HD), written out.
    xr, alpha, g_prev, ref = X0, alpha0, jnp.zeros(3), []
    for _ in range(6):
        g = _quad_grad(xr)
        alpha = alpha + beta * g @ g_prev
        xr = xr - alpha * g
        g_prev = g
        ref.append(alpha)
    np.testing.assert_allclose(lrs, ref, rtol=1e-12)
    np.testing.assert_allclose(x, xr, rtol=1e-12)


@pytest.mark.parametrize(
    "make, base",
    [
        (lambda b: hd_sgd(0.01, b), optax.sgd(0.01)),
        (lambda b: hd_nesterov(0.01, b, 0.9), optax.sgd(0.01, momentum=0.9, nesterov=True)),
        (lambda b: hd_adam(0.01, b), optax.adam(0.01)),
    ],
)
def test_zero_hyper_lr_is_the_base_optimizer(make, base):
    x_hd, _, lrs = _run(make(0.0), 20)
    x = X0
    s = base.init(x)
    for _ in range(20):
        u, s = base.update(_quad_grad(x), s, x)
        x = optax.apply_updates(x, u)
    np.testing.assert_allclose(x_hd, x, rtol=1e-10)
    np.testing.assert_allclose(lrs, 0.01)


@pytest.mark.parametrize("make", [hd_sgd, hd_nesterov, hd_adam])
def test_learning_rate_grows_when_too_small_and_starts_from_zero(make):
    # The additive rule's beta scales with 1 / |g . d|: Nesterov's direction is about
    # 1 / (1 - mu) = 10 times the gradient, Adam's is of unit size.
    beta = {hd_sgd: 1e-2, hd_nesterov: 1e-5, hd_adam: 1e-3}[make]
    _, _, lrs = _run(make(0.0, beta), 30)
    # From zero: the first step records a direction, then agreeing gradients raise it.
    assert float(lrs[0]) == 0.0 and float(lrs[5]) > 0.0
    assert np.all(np.diff(np.asarray(lrs[:10])) >= 0)


def test_learning_rate_shrinks_when_too_large():
    # alpha = 0.45 > 2 / 4 on the stiff direction: iterates oscillate, successive
    # gradients oppose, and the learning rate falls below the stability limit 0.5.
    x, _, lrs = _run(hd_sgd(0.6, 0.01), 200)
    assert float(lrs[-1]) < 0.5
    assert float(jnp.linalg.norm(x)) < 1e-3 * float(jnp.linalg.norm(X0))
    x_plain, _, _ = _run(hd_sgd(0.6, 0.0), 200)
    assert float(jnp.linalg.norm(x_plain)) > 1e3  # plain SGD at that rate diverges


def test_normalized_rule_is_scale_free():
    _, _, lrs = _run(hd_sgd(0.01, 0.05, normalized=True), 30)
    _, _, lrs_scaled = _run(hd_sgd(0.01, 0.05, normalized=True), 30, x0=100.0 * X0)
    np.testing.assert_allclose(lrs, lrs_scaled, rtol=1e-10)
    assert float(lrs[-1]) > 0.01


def test_inside_an_inner_solver_under_jit():
    fun = lambda w, h, args: 0.5 * w @ H @ w  # noqa: E731
    solver = OptaxSolver(hd_sgd(1e-3, 1e-2), max_steps=300, tol=None)
    sol = jax.jit(lambda w: run(solver, fun, w, None))(X0)
    plain = jax.jit(lambda w: run(OptaxSolver(optax.sgd(1e-3), 300, tol=None), fun, w, None))(X0)
    assert float(sol.stats["value"]) < 1e-3 * float(plain.stats["value"])


def test_bad_input_raises():
    with pytest.raises(ValueError, match="learning_rate must be a non-negative"):
        hd_sgd(-0.1, 1e-3)
    with pytest.raises(ValueError, match="hyper_lr must be a non-negative"):
        hd_adam(1e-3, -1.0)
    with pytest.raises(ValueError, match="momentum"):
        hd_nesterov(1e-3, 1e-3, momentum=1.0)
    with pytest.raises(TypeError, match="direction must be an optax.GradientTransformation"):
        hypergradient_descent(lambda g: g, 0.1, 0.1)
