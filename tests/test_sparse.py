"""Hypergradients of lasso-type problems: against central finite differences where the
support is stable, against the closed form on the support, and a demonstration that the
support restriction is what makes the implicit system well posed."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hypergrad import CG, Implicit, hypergradient, outer_loss, problems
from hypergrad.methods import prox_fixed_point
from hypergrad.solvers import L1, run

from ._problems import central_difference, count_compilations


@pytest.fixture(scope="module")
def data():
    # More features than training rows (p = 40 > n = 25): the lasso's interesting regime,
    # and the one where an unrestricted implicit system is singular.
    X, y = problems.synthetic_regression(50, 40, noise=0.3, correlation=0.5, seed=3)
    return X - X.mean(0), y - y.mean()


@pytest.fixture(scope="module")
def lasso(data):
    X, y = data
    # Coordinate descent to a relative duality gap of 1e-24: the gap is quadratic in the
    # distance to the solution, so the solution is accurate to ~1e-12.
    return problems.lasso(X[:25], y[:25], X[25:], y[25:], tol=1e-24)


def _tight(problem, hparams):
    return run(problem.solver, problem.inner, problem.init_params, hparams, problem.train)


def _val(problem):
    # A tight solve (error ~1e-12) per evaluation: the finite differences below need the
    # solution's error far below their step's effect (step 6e-6 relative).
    return jax.jit(lambda h: problem.outer(_tight(problem, h).params, h, problem.val))


def _support_stable(problem, hparams, leaf, rel=1e-4):
    up = {**hparams, leaf: hparams[leaf] * (1 + rel)}
    down = {**hparams, leaf: hparams[leaf] * (1 - rel)}
    s = [np.asarray(problems_w(problem, h)) != 0 for h in (up, hparams, down)]
    return all(np.array_equal(s[0], t) for t in s[1:])


def problems_w(problem, h):
    w = _tight(problem, h).params
    return w["w"] if isinstance(w, dict) else w


def test_lasso_hypergradient_matches_finite_differences_and_closed_form(lasso):
    h = lasso.hparams
    assert _support_stable(lasso, h, "alpha")
    hg = hypergradient(lasso, h, method=Implicit(CG(tol=1e-12)))
    by_grad = jax.jit(jax.grad(lambda h: outer_loss(lasso, h)))(h)
    fd = central_difference(_val(lasso), h)
    # Central differences in float64 with relative step eps^(1/3): error ~1e-10 relative
    # on a smooth piece; the inner tolerance 1e-13 adds less. 1e-6 is generous.
    np.testing.assert_allclose(hg.grad["alpha"], fd, rtol=1e-6)
    np.testing.assert_allclose(by_grad["alpha"], fd, rtol=1e-6)

    # Closed form on the support S: w_S = (X_S^T X_S / n)^-1 (X_S^T y / n - alpha s_S).
    X, y = np.asarray(lasso.train.X), np.asarray(lasso.train.y)
    Xv, yv = np.asarray(lasso.val.X), np.asarray(lasso.val.y)
    w = np.asarray(hg.solution.params)
    S = w != 0
    G = X[:, S].T @ X[:, S] / len(y)
    dw = -np.linalg.solve(G, np.sign(w[S]))
    g_val = 2 * Xv[:, S].T @ (Xv @ w - yv) / len(yv)
    np.testing.assert_allclose(hg.grad["alpha"], g_val @ dw, rtol=1e-9)


def test_support_restriction_matters(lasso):
    """Unrestricted CG on this p > n lasso solves a singular system: its answer is far
    from the finite difference (or not finite); the restricted one agrees."""
    h = lasso.hparams
    fd = central_difference(_val(lasso), h)
    naive = prox_fixed_point(lasso.inner, L1("alpha"), restricted=False)
    unrestricted = dataclasses.replace(lasso, optimality=naive)
    wrong = hypergradient(unrestricted, h, method=Implicit(CG(tol=1e-12, maxiter=500)))
    right = hypergradient(lasso, h, method=Implicit(CG(tol=1e-12, maxiter=500)))
    np.testing.assert_allclose(right.grad["alpha"], fd, rtol=1e-6)
    err = abs(float(wrong.grad["alpha"]) - float(fd)) / abs(float(fd))
    assert not np.isfinite(err) or err > 1e-2, err


def test_elastic_net_hypergradient_matches_finite_differences(data):
    X, y = data
    pr = problems.elastic_net(X[:25], y[:25], X[25:], y[25:], tol=1e-24)
    h = pr.hparams
    hg = hypergradient(pr, h)
    f = _val(pr)
    for leaf in ("alpha1", "alpha2"):
        assert _support_stable(pr, h, leaf)
        np.testing.assert_allclose(hg.grad[leaf], central_difference(f, h, leaf), rtol=1e-6)


def test_weighted_lasso_and_l1_logistic_hypergradients(data):
    X, y = data
    pr = problems.weighted_lasso(X[:25, :8], y[:25], X[25:, :8], y[25:], alpha=0.05, tol=1e-24)
    hg = hypergradient(pr, pr.hparams)
    fd = central_difference(_val(pr), pr.hparams)
    # Off-support penalties have a zero hypergradient (the coordinate stays at 0).
    w = np.asarray(hg.solution.params)
    assert np.all(np.asarray(hg.grad["alpha"])[w == 0] == 0) and np.any(w == 0)
    # atol: the finite difference of a flat direction is rounding noise, about
    # eps * |f| / step ~ 1e-16 / 6e-6 ~ 1e-10 (observed 2e-10).
    np.testing.assert_allclose(hg.grad["alpha"], fd, rtol=1e-6, atol=1e-8)

    Xc, yc = problems.synthetic_classification(90, 6, seed=2)
    lr = problems.sparse_logistic(Xc[:60], yc[:60], Xc[60:], yc[60:], tol=1e-12)
    hg = hypergradient(lr, lr.hparams)
    fd = central_difference(_val(lr), lr.hparams)
    np.testing.assert_allclose(hg.grad["alpha"], fd, rtol=1e-5)


def test_jit_vmap_and_no_retrace(lasso):
    # hypergradient called eagerly runs one compiled program of the library's own: a
    # penalty with another support (the mask is a value, not a shape) compiles nothing
    # new. (Traces are not counted: the eager entry point checks the objective's output
    # shape with jax.eval_shape, a trace of the objective, before every call.)
    a = lasso.hparams["alpha"]
    first, half = hypergradient(lasso, {"alpha": a}), a * 0.5
    with count_compilations() as compiled:
        other = hypergradient(lasso, {"alpha": half})
    assert compiled == []
    support = lambda out: np.asarray(out.solution.params) != 0  # noqa: E731
    assert support(first).sum() != support(other).sum()  # the supports do differ
    # Under the caller's jit and vmap: the same values as the eager program.
    g = jax.jit(jax.value_and_grad(lambda h: outer_loss(lasso, h)))
    alphas = a * jnp.array([0.3, 1.0, 2.0])
    vals, grads = jax.vmap(lambda al: g({"alpha": al}))(alphas)
    for al, v, gr in zip(alphas, vals, grads["alpha"], strict=True):
        eager = hypergradient(lasso, {"alpha": al})
        np.testing.assert_allclose(v, eager.value, rtol=1e-9)
        np.testing.assert_allclose(gr, eager.grad["alpha"], rtol=1e-6)


def test_elastic_net_logistic_hypergradient_matches_finite_differences():
    Xc, yc = problems.synthetic_classification(90, 6, seed=2)
    pr = problems.elastic_net_logistic(Xc[:60], yc[:60], Xc[60:], yc[60:], alpha2=0.05, tol=1e-12)
    h = pr.hparams
    hg = hypergradient(pr, h)
    f = _val(pr)
    for leaf in ("alpha1", "alpha2"):
        assert _support_stable(pr, h, leaf)
        np.testing.assert_allclose(hg.grad[leaf], central_difference(f, h, leaf), rtol=1e-5)
