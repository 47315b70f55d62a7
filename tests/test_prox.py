"""Sparse solvers (working-set coordinate descent for the regressions, FISTA for the
logistic ones): their solutions match scikit-learn's on the same data and penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import ElasticNet, Lasso, LogisticRegression

from hypergrad import problems
from hypergrad.problems._sparse import lipschitz_of
from hypergrad.solvers import FISTA, L1, Box, ProximalGradient, Status, run

# Both sides solve to an optimality residual ~1e-12 (coordinate descent: relative duality
# gap 1e-24, the gap being quadratic in the distance to the solution); the solutions of
# these strongly convex-on-the-support problems then agree to about that size times the
# conditioning of X_S^T X_S / n (below 1e2 here), so 1e-8 leaves room.
ATOL = 1e-8
GAP = 1e-24


@pytest.fixture(scope="module")
def regression():
    X, y = problems.synthetic_regression(80, 30, noise=0.5, correlation=0.5, seed=0)
    return X - X.mean(0), y - y.mean()


@pytest.fixture(scope="module")
def classification():
    return problems.synthetic_classification(100, 10, seed=1)


def _solve(problem, hparams=None):
    hparams = problem.hparams if hparams is None else hparams
    fn = jax.jit(lambda pr, h: run(pr.solver, pr.inner, pr.init_params, h, pr.train))
    return fn(problem, hparams)


def test_lasso_matches_sklearn(regression):
    X, y = regression
    pr = problems.lasso(X[:60], y[:60], X[60:], y[60:], tol=GAP)
    sol = _solve(pr)
    sk = Lasso(alpha=float(pr.hparams["alpha"]), fit_intercept=False, tol=1e-14, max_iter=10**5)
    sk.fit(X[:60], y[:60])
    assert int(sol.status) == Status.CONVERGED
    assert 0 < np.sum(sk.coef_ != 0) < 30  # a sparse, non-trivial solution
    np.testing.assert_allclose(sol.params, sk.coef_, atol=ATOL)
    np.testing.assert_array_equal(sol.params != 0, sk.coef_ != 0)


def test_weighted_lasso_matches_rescaled_sklearn(regression):
    # sum_j a_j |w_j| is the plain lasso on columns X_j / a_j (w_j scaled by a_j).
    X, y = regression
    a = np.linspace(0.02, 0.2, X.shape[1])
    pr = problems.weighted_lasso(X[:60], y[:60], X[60:], y[60:], alpha=a, tol=GAP)
    sol = _solve(pr)
    sk = Lasso(alpha=1.0, fit_intercept=False, tol=1e-14, max_iter=10**5)
    sk.fit(X[:60] / a, y[:60])
    np.testing.assert_allclose(sol.params, sk.coef_ / a, atol=ATOL)


def test_elastic_net_matches_sklearn(regression):
    X, y = regression
    pr = problems.elastic_net(X[:60], y[:60], X[60:], y[60:], alpha1=0.05, alpha2=0.1, tol=GAP)
    sol = _solve(pr)
    sk = ElasticNet(alpha=0.15, l1_ratio=1 / 3, fit_intercept=False, tol=1e-14, max_iter=10**5)
    sk.fit(X[:60], y[:60])
    np.testing.assert_allclose(sol.params, sk.coef_, atol=ATOL)


def test_l1_logistic_matches_sklearn(classification):
    X, y = classification
    pr = problems.sparse_logistic(X[:70], y[:70], X[70:], y[70:], tol=1e-12)
    sol = _solve(pr)
    a = float(pr.hparams["alpha"])
    sk = LogisticRegression(l1_ratio=1.0, C=1 / (a * 70), solver="saga", tol=1e-12, max_iter=10**6)
    sk.fit(X[:70], y[:70])
    assert 0 < np.sum(sk.coef_ != 0) < 10
    np.testing.assert_allclose(sol.params["w"], sk.coef_[0], atol=1e-7)
    np.testing.assert_allclose(sol.params["b"], sk.intercept_[0], atol=1e-7)


def test_ista_and_fista_agree_with_coordinate_descent_and_warm_start_helps(regression):
    X, y = regression
    pr = problems.lasso(X[:60], y[:60], X[60:], y[60:], tol=GAP)
    fista = FISTA(L1("alpha"), max_steps=50000, tol=1e-10, lipschitz=lipschitz_of)
    ista = ProximalGradient(L1("alpha"), max_steps=50000, tol=1e-10, lipschitz=lipschitz_of)
    cd = _solve(pr)
    fast = run(fista, pr.inner, pr.init_params, pr.hparams, pr.train)
    slow = run(ista, pr.inner, pr.init_params, pr.hparams, pr.train)
    np.testing.assert_allclose(fast.params, cd.params, atol=1e-8)
    np.testing.assert_allclose(slow.params, cd.params, atol=1e-8)
    assert int(slow.stats["num_steps"]) > int(fast.stats["num_steps"])
    near = {"alpha": pr.hparams["alpha"] * 1.05}
    warm = run(fista, pr.inner, fast.params, near, pr.train)
    fresh = run(fista, pr.inner, pr.init_params, near, pr.train)
    assert int(warm.stats["num_steps"]) < int(fresh.stats["num_steps"])


def test_box_prox_projects_and_power_iteration_step():
    # min 1/2 ||x - b||^2 over 0 <= x <= 1 is clip(b, 0, 1); lipschitz=None estimates L = 1.
    b = jnp.array([-1.0, 0.5, 3.0])
    f = lambda x, h, args: 0.5 * jnp.sum((x - b) ** 2)  # noqa: E731
    sol = run(FISTA(Box(0.0, "upper"), tol=1e-12), f, jnp.zeros(3), {"upper": 1.0})
    np.testing.assert_allclose(sol.params, [0.0, 0.5, 1.0], atol=1e-12)


def test_bad_solver_arguments():
    with pytest.raises(TypeError, match="prox must be"):
        FISTA("l1")
    with pytest.raises(ValueError, match="lipschitz must be positive"):
        FISTA(L1(), lipschitz=-1.0)


def test_elastic_net_logistic_matches_sklearn(classification):
    X, y = classification
    pr = problems.elastic_net_logistic(X[:70], y[:70], X[70:], y[70:], alpha2=0.02, tol=1e-12)
    sol = _solve(pr)
    a1, a2 = float(pr.hparams["alpha1"]), float(pr.hparams["alpha2"])
    # scikit-learn: C sum(log-loss) + l1_ratio ||w||_1 + (1 - l1_ratio) / 2 ||w||^2.
    C, ratio = 1 / ((a1 + a2) * 70), a1 / (a1 + a2)
    sk = LogisticRegression(l1_ratio=ratio, C=C, solver="saga", tol=1e-12, max_iter=10**6)
    sk.fit(X[:70], y[:70])
    assert 0 < np.sum(sk.coef_ != 0) < 10
    np.testing.assert_allclose(sol.params["w"], sk.coef_[0], atol=1e-7)
    np.testing.assert_allclose(sol.params["b"], sk.intercept_[0], atol=1e-7)


def test_prox_newton_takes_few_steps_and_agrees_with_fista(classification):
    from hypergrad.solvers import ProxNewton

    X, y = classification
    pr = problems.sparse_logistic(X[:70], y[:70], X[70:], y[70:], tol=1e-12)
    assert isinstance(pr.solver, ProxNewton)
    newton = _solve(pr)
    fista = FISTA(L1("alpha", leaf="w"), max_steps=100000, tol=1e-12, lipschitz=lipschitz_of)
    slow = run(fista, pr.inner, pr.init_params, pr.hparams, pr.train)
    assert int(newton.status) == Status.CONVERGED == int(slow.status)
    # Quadratic convergence: a handful of steps where FISTA takes hundreds.
    assert int(newton.stats["num_steps"]) <= 15 < int(slow.stats["num_steps"])
    np.testing.assert_allclose(newton.params["w"], slow.params["w"], atol=1e-9)
    np.testing.assert_allclose(newton.params["b"], slow.params["b"], atol=1e-9)


def test_newton_line_search_converges_from_a_far_start(classification):
    from hypergrad.solvers import Newton

    X, y = classification
    pr = problems.logistic_rows(X[:70], y[:70], X[70:], y[70:], alpha=1e-4, tol=1e-10)
    far = {"w": jnp.full(X.shape[1], 30.0), "b": jnp.asarray(-30.0)}
    safe = run(Newton(tol=1e-10, line_search=8), pr.inner, far, pr.hparams, pr.train)
    ref = run(Newton(tol=1e-10, line_search=8), pr.inner, pr.init_params, pr.hparams, pr.train)
    assert int(safe.status) == Status.CONVERGED
    np.testing.assert_allclose(safe.params["w"], ref.params["w"], atol=1e-8)
    # Independent: scikit-learn's fit of the same objective (C = 1 / (alpha n)).
    sk = LogisticRegression(C=1 / (1e-4 * 70), tol=1e-12, max_iter=10**5).fit(X[:70], y[:70])
    np.testing.assert_allclose(safe.params["w"], sk.coef_[0], rtol=1e-5, atol=1e-6)
