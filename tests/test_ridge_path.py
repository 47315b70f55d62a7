"""Ridge along its path from one factorization: coefficients against a direct solve,
leave-one-out errors against refits without each row and against scikit-learn's
`RidgeCV`, held-out errors on zero-padded rows, and the exact hypergradient against
finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import RidgeCV

from hypergrad.problems import held_out_mse, loo_mse, ridge_coef, ridge_factors

from ._problems import central_difference


@pytest.fixture(scope="module", params=[(40, 12), (15, 40)], ids=["n>p", "n<=p"])
def data(request):
    n, p = request.param
    rng = np.random.default_rng(3)
    X = rng.standard_normal((n, p))
    y = X @ rng.standard_normal(p) + 0.5 * rng.standard_normal(n)
    return X, y


def test_coefficients_match_a_direct_solve(data):
    X, y = data
    f = ridge_factors(jnp.asarray(X), jnp.asarray(y))
    for alpha in (1e-3, 0.7, 50.0):
        direct = np.linalg.solve(X.T @ X + alpha * np.eye(X.shape[1]), X.T @ y)
        # Both exact: agreement to round-off times the conditioning (below 1e6 here).
        np.testing.assert_allclose(ridge_coef(f, alpha), direct, rtol=1e-8, atol=1e-10)


def test_leave_one_out_matches_refits_and_ridge_cv(data):
    X, y = data
    n = len(y)
    Xc, yc = X - X.mean(0), y - y.mean()
    f = ridge_factors(jnp.asarray(Xc), jnp.asarray(yc), intercept=True)
    alphas = np.array([0.05, 1.0, 20.0])
    ours = np.array([float(loo_mse(f, a)) for a in alphas])
    # Independent: refit with an intercept on n - 1 rows, predict the row left out.
    refits = []
    for a in alphas:
        errors = []
        for i in range(n):
            keep = np.arange(n) != i
            xm, ym = X[keep].mean(0), y[keep].mean()
            A = X[keep] - xm
            w = np.linalg.solve(A.T @ A + a * np.eye(X.shape[1]), A.T @ (y[keep] - ym))
            errors.append((y[i] - ym - (X[i] - xm) @ w) ** 2)
        refits.append(np.mean(errors))
    np.testing.assert_allclose(ours, refits, rtol=1e-8)
    sk = RidgeCV(alphas=alphas, store_cv_results=True).fit(X, y)
    np.testing.assert_allclose(ours, sk.cv_results_.mean(axis=0), rtol=1e-8)


def test_padding_rows_and_held_out_error(data):
    X, y = data
    n, p = X.shape
    Xv, yv = X[: n // 3] + 0.1, y[: n // 3]
    padded = np.vstack([X, np.zeros((7, p))]), np.concatenate([y, np.zeros(7)])
    f = ridge_factors(jnp.asarray(X), jnp.asarray(y))
    g = ridge_factors(*map(jnp.asarray, padded), n_rows=n)
    for a in (0.1, 3.0):
        np.testing.assert_allclose(ridge_coef(g, a), ridge_coef(f, a), rtol=1e-9, atol=1e-12)
        w = np.linalg.solve(X.T @ X + a * np.eye(p), X.T @ y)
        np.testing.assert_allclose(
            held_out_mse(f, Xv, yv, a), np.mean((Xv @ w - yv) ** 2), rtol=1e-9
        )
        np.testing.assert_allclose(loo_mse(g, a), loo_mse(f, a), rtol=1e-9)


def test_hypergradients_are_exact(data):
    X, y = data
    f = ridge_factors(jnp.asarray(X - X.mean(0)), jnp.asarray(y - y.mean()), intercept=True)
    Xv, yv = jnp.asarray(X[:5]), jnp.asarray(y[:5])
    for crit in (lambda h: loo_mse(f, h["alpha"]), lambda h: held_out_mse(f, Xv, yv, h["alpha"])):
        h = {"alpha": jnp.asarray(0.8)}
        g = jax.jit(jax.grad(crit))(h)["alpha"]
        # Central differences in float64 (step eps^(1/3)) are accurate to about
        # eps^(2/3) |f| / |f'| relative, which reaches 2e-7 here (f ~ 1e3 |f'|).
        np.testing.assert_allclose(g, central_difference(crit, h), rtol=1e-6)
