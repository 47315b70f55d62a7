"""Ridge regression along its whole regularization path from one factorization.

Interface: `factors = ridge_factors(X, y)` factors a training design once (an
eigendecomposition of the smaller of `X^T X` and `X X^T`); then, for any penalty `alpha`
on the summed loss (scikit-learn's `Ridge(alpha)`: `||y - X w||^2 + alpha ||w||^2`),

    ridge_coef(factors, alpha)            the coefficients,             O(n r + p r)
    loo_mse(factors, alpha)               the leave-one-out error,      O(n r)
    held_out_mse(factors, X_val, y_val, alpha)                           O(m p + p r)

with `r = min(n, p)`; each is an ordinary differentiable JAX function of `alpha`, so its
hypergradient is exact (`jax.grad`) and costs as little as the value.

Invariant: with `X = Q diag(sqrt(lam)) V^T` (thin), the fitted values are
`X w = Q diag(lam / (lam + alpha)) Q^T y` and the hat matrix's diagonal is
`sum_k Q_ik^2 lam_k / (lam_k + alpha)`: `Q` and `lam` are all the path needs. Rows with
zero weight (a padded fold) are zero rows of `X` and `y`: they change nothing.

References: Golub, Heath and Wahba, "Generalized cross-validation as a method for
choosing a good ridge parameter", 1979; scikit-learn's `RidgeCV` computes the same
leave-one-out errors for a grid of penalties.
"""

from typing import NamedTuple

import jax.numpy as jnp

from .._types import Array


class RidgeFactors(NamedTuple):
    """A factored training set: `Q` (n, r) orthonormal, `lam` (r,) the nonzero part of
    the spectrum of `X^T X`, `y` (n,) the targets, `intercept` 1.0 when `X` and `y` were
    centered for an unpenalized intercept (the hat matrix then gains `1 / n_rows`), else
    0.0, `n_rows` the number of real rows; for the coefficients, `V` (p, r) the right
    singular vectors when `n > p`, else `Xt = X^T` (the coefficients are then
    `X^T Q diag(1 / (lam + alpha)) Q^T y`, which needs no `V`)."""

    Q: Array
    lam: Array
    y: Array
    intercept: Array
    n_rows: Array
    V: Array | None = None
    Xt: Array | None = None


def ridge_factors(X, y, intercept: bool = False, n_rows=None) -> RidgeFactors:
    """Factor `X` (n, p) with targets `y` (n,): an eigendecomposition of `X^T X` (p x p)
    when `n > p`, of `X X^T` (n x n) otherwise. `intercept=True` says `X` and `y` are
    centered (the leave-one-out error then accounts for the intercept); `n_rows`: the
    number of real rows when zero rows pad `X`."""
    n, p = X.shape
    tiny = jnp.finfo(X.dtype).eps * n * p
    n_rows = jnp.asarray(n if n_rows is None else n_rows, X.dtype)
    intercept = jnp.asarray(float(intercept), X.dtype)
    if n > p:
        lam, V = jnp.linalg.eigh(X.T @ X)
        lam = jnp.maximum(lam, 0.0)
        keep = lam > tiny * jnp.max(lam)
        Q = (X @ V) * jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, lam, 1.0)), 0.0)
        return RidgeFactors(Q, jnp.where(keep, lam, 0.0), y, intercept, n_rows, V=V)
    lam, Q = jnp.linalg.eigh(X @ X.T)
    lam = jnp.maximum(lam, 0.0)
    lam = jnp.where(lam > tiny * jnp.max(lam), lam, 0.0)
    return RidgeFactors(Q, lam, y, intercept, n_rows, Xt=X.T)


def ridge_coef(f: RidgeFactors, alpha) -> Array:
    """`argmin ||y - X w||^2 + alpha ||w||^2`: `V diag(sqrt(lam) / (lam + alpha)) Q^T y`
    (`n > p`), or `X^T Q diag(1 / (lam + alpha)) Q^T y`."""
    qty = f.y @ f.Q
    if f.V is not None:
        return f.V @ (jnp.sqrt(f.lam) / (f.lam + alpha) * qty)
    return f.Xt @ (f.Q @ (qty / (f.lam + alpha)))


def loo_mse(f: RidgeFactors, alpha) -> Array:
    """The mean squared leave-one-out residual `((y_i - yhat_i) / (1 - h_ii))^2` over the
    real rows (scikit-learn's `RidgeCV(cv=None)` criterion)."""
    return loo_criterion(f)(alpha)


def loo_criterion(f: RidgeFactors):
    """`loo_mse(f, .)` as a function of `alpha` alone, with its `alpha`-free parts (`Q^T y`,
    the squares of `Q`) computed once: two `O(n r)` products per penalty after it, for a
    search that evaluates many penalties."""
    qty, q2 = f.y @ f.Q, f.Q**2
    real = jnp.arange(f.y.shape[0]) < f.n_rows

    def criterion(alpha):
        shrink = f.lam / (f.lam + alpha)
        fitted = f.Q @ (shrink * qty)
        hat = q2 @ shrink + f.intercept / f.n_rows
        loo = jnp.where(real, (f.y - fitted) / jnp.where(real, 1.0 - hat, 1.0), 0.0)
        return jnp.sum(loo**2) / f.n_rows

    return criterion


def held_out_mse(f: RidgeFactors, X_val, y_val, alpha, weight=None) -> Array:
    """The (weighted) mean squared error of the ridge fit on `(X_val, y_val)`."""
    r = X_val @ ridge_coef(f, alpha) - y_val
    weight = jnp.ones_like(y_val) if weight is None else weight
    return jnp.sum(weight * r**2) / jnp.sum(weight)
