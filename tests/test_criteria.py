"""Selection criteria: K-fold cross-validation (vmapped folds) agrees with scikit-learn's
LassoCV path and with finite differences; SURE's Monte-Carlo dof and its hypergradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LassoCV

from hypergrad import problems
from hypergrad.problems import kfold, kfold_hypergradient, kfold_loss, num_folds, sure
from hypergrad.solvers import run

from ._problems import central_difference
from ._problems import count_compilations as count_compiles


@pytest.fixture(scope="module")
def data():
    X, y = problems.synthetic_regression(60, 12, noise=0.5, correlation=0.4, seed=5)
    return X - X.mean(0), y - y.mean()


@pytest.fixture(scope="module")
def folds(data):
    X, y = data
    return kfold(problems.lasso, X, y, 3, tol=1e-13, max_steps=100000)


def test_kfold_matches_lasso_cv_path(data, folds):
    X, y = data
    alphas = np.array([0.3, 0.1, 0.03])
    cv = LassoCV(alphas=alphas, cv=3, fit_intercept=False, tol=1e-14, max_iter=10**5).fit(X, y)
    loss = jax.jit(lambda a: kfold_loss(folds, {"alpha": a}))
    ours = [float(loss(jnp.asarray(a))) for a in cv.alphas_]
    # LassoCV's per-fold MSE (it averages over folds without weighting by fold size; our
    # 3 folds of 20 rows have equal sizes). Both solves are tight: 1e-9 relative.
    np.testing.assert_allclose(ours, cv.mse_path_.mean(axis=1), rtol=1e-9)


def test_kfold_hypergradient_matches_finite_differences(folds):
    h = {"alpha": jnp.asarray(0.05)}
    k = 3
    zeros = jax.tree.map(lambda x: jnp.zeros((k,) + x.shape[1:]), folds.init_params)
    value, grad, per = jax.jit(
        lambda h: kfold_hypergradient(folds, h, init_params=zeros, init_adjoint=zeros)
    )(h)
    fd = central_difference(jax.jit(lambda h: kfold_loss(folds, h)), h)
    by_grad = jax.jit(jax.grad(lambda h: kfold_loss(folds, h)))(h)
    # Central differences on a smooth piece: ~1e-10 relative; the solves are at 1e-13.
    np.testing.assert_allclose(grad["alpha"], fd, rtol=1e-6)
    np.testing.assert_allclose(by_grad["alpha"], fd, rtol=1e-6)
    assert per.value.shape == (k,)
    np.testing.assert_allclose(value, jnp.mean(per.value))


def test_kfold_criteria_called_eagerly_are_one_program_each(folds):
    """Called with concrete values, `kfold_loss` and `kfold_hypergradient` run as one
    compiled program each (not the folds' `vmap` operation by operation), which other
    hyperparameters reuse; their values are each fold's `outer_loss` / `hypergradient`
    averaged, and equal the same functions traced under the caller's `jit`."""
    from hypergrad import hypergradient

    h1, h2 = {"alpha": np.float64(0.05)}, {"alpha": np.float64(0.02)}
    kfold_loss(folds, h1)
    kfold_hypergradient(folds, h1)
    with count_compiles() as compiled:
        loss = kfold_loss(folds, h2)
        value, grad, per = kfold_hypergradient(folds, h2)
    assert compiled == []
    k = num_folds(folds)
    fold = lambda i: jax.tree.map(lambda x: x[i], folds)  # noqa: E731
    each = [hypergradient(fold(i), h2) for i in range(k)]
    # Each fold's `hypergradient` value is its outer loss at the inner solution.
    np.testing.assert_allclose(loss, np.mean([e.value for e in each]), rtol=1e-12)
    np.testing.assert_allclose(value, loss, rtol=1e-12)
    np.testing.assert_allclose(grad["alpha"], np.mean([e.grad["alpha"] for e in each]), rtol=1e-9)
    np.testing.assert_allclose(per.value, [e.value for e in each], rtol=1e-12)
    traced = jax.jit(lambda h: kfold_hypergradient(folds, h)[:2])(h2)
    np.testing.assert_allclose(traced[1]["alpha"], grad["alpha"], rtol=1e-12)


def test_sure_dof_and_hypergradient(data):
    X, y = data
    pr = problems.lasso(X, y, X, y, alpha=0.05, tol=1e-24)
    key = jax.random.key(0)
    h = pr.hparams
    crit = jax.jit(lambda h: sure(pr, h, 0.5, key))
    # With a stable support S the finite-difference dof is exactly delta^T P_S delta
    # (P_S the projection on the columns of S), whose mean is |S|.
    w = np.asarray(run(pr.solver, pr.inner, pr.init_params, h, pr.train).params)
    S = w != 0
    Xs = X[:, S]
    n = len(y)
    delta = np.asarray(jax.random.normal(key, (n,), jnp.float64))
    dof = delta @ Xs @ np.linalg.solve(Xs.T @ Xs, Xs.T @ delta)
    r = y - X @ w
    expected = (r @ r - n * 0.25 + 2 * 0.25 * dof) / n
    assert 0 < dof < S.sum() + 4 * np.sqrt(2 * S.sum())  # a plausible chi-square draw
    np.testing.assert_allclose(float(crit(h)), expected, rtol=1e-8)
    grad = jax.jit(jax.grad(lambda h: sure(pr, h, 0.5, key)))(h)
    np.testing.assert_allclose(grad["alpha"], central_difference(crit, h), rtol=1e-6)


def test_fold_arguments_are_checked(data):
    X, y = data
    with pytest.raises(ValueError, match="folds must be between"):
        kfold(problems.lasso, X, y, 1)
    with pytest.raises(ValueError, match="as many entries"):
        kfold(problems.lasso, X, y[:-1], 3)


def test_kfold_centers_each_fold_by_its_training_rows():
    """`center=True`: each fold holds its training rows and its held-out rows, both minus
    the means of that fold's training rows (NumPy reference), for shuffled folds given as
    index pairs; the folds are padded to one shape with zero rows of weight zero."""
    X, y = problems.synthetic_regression(47, 9, noise=0.5, seed=2)
    X, y = 3.0 + X, 5.0 + y
    pairs = list(problems.fold_indices(47, 4, seed=1))
    st = kfold(problems.lasso, X, y, pairs, center=True)
    # 47 rows in 4 folds: held-out parts of 12, 12, 12 and 11 rows.
    assert st.train.X.shape == (4, 36, 9) and st.val.X.shape == (4, 12, 9)
    for i, (tr, va) in enumerate(pairs):
        xm, ym = X[tr].mean(0), y[tr].mean()
        for rows, idx in ((st.train, tr), (st.val, va)):
            m = len(idx)
            np.testing.assert_allclose(rows.X[i][:m], X[idx] - xm, rtol=0, atol=1e-13)
            np.testing.assert_allclose(rows.y[i][:m], y[idx] - ym, rtol=0, atol=1e-13)
            np.testing.assert_array_equal(rows.weight[i], np.arange(rows.X.shape[1]) < m)
            np.testing.assert_array_equal(rows.X[i][m:], 0.0)


def test_kfold_bucket_rows_pads_to_bucket_sizes_without_changing_the_criterion():
    """`bucket_rows=True` pads each side to `bucket` rows, at least 64; zero-weight rows
    leave the cross-validation loss unchanged (against the unpadded folds). At n = 231
    the folds are of unequal size (47 and 46 held-out rows), the training side is rounded
    up to a bucket (185 -> 192) and the held-out side to the least size (47 -> 64)."""
    X, y = problems.synthetic_regression(231, 9, noise=0.5, seed=3)
    exact = kfold(problems.lasso, X, y, 5, tol=1e-12)
    padded = kfold(problems.lasso, X, y, 5, tol=1e-12, bucket_rows=True)
    # Held-out parts of n / 5 rows, the first one more when 5 does not divide n; stacked,
    # every fold has the largest training and held-out sizes.
    assert exact.train.X.shape[1] == 185 and exact.val.X.shape[1] == 47
    least = problems.LEAST_ROWS  # 64
    assert padded.train.X.shape[1] == 192 == problems.bucket(185, least=least)
    assert padded.val.X.shape[1] == 64 == problems.bucket(47, least=least)
    h = {"alpha": np.float64(0.05)}
    np.testing.assert_allclose(kfold_loss(padded, h), kfold_loss(exact, h), rtol=1e-10)
