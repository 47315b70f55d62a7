"""Ridge regression and L2-regularized logistic regression as bilevel problems.

Hyperparameters are in their natural scale (`{"alpha": ...}`, positive); tuners work in
log coordinates. Inner objectives are averages over the training rows plus the penalty,
so `alpha` does not scale with the number of rows.
"""

import jax
import jax.numpy as jnp
import numpy as np

from .._bilevel import BilevelProblem
from ..methods._linear import dtype_tol
from ..solvers import LBFGS, Newton


def _as_array(name, x, ndim):
    x = jnp.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-d, got {name}.shape={x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _check_pair(Xname, X, yname, y):
    X, y = _as_array(Xname, X, 2), _as_array(yname, y, 1)
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"{Xname} and {yname} must have the same number of rows, got {Xname}.shape={X.shape}"
            f" and {yname}.shape={y.shape}"
        )
    if not (np.all(np.isfinite(np.asarray(X))) and np.all(np.isfinite(np.asarray(y)))):
        raise ValueError(f"{Xname} and {yname} must be finite (no NaN or inf)")
    return X, y


def _data(X_train, y_train, X_val, y_val, X_test, y_test):
    train = _check_pair("X_train", X_train, "y_train", y_train)
    val = _check_pair("X_val", X_val, "y_val", y_val)
    if val[0].shape[1] != train[0].shape[1]:
        raise ValueError(
            f"X_val must have as many columns as X_train, got {val[0].shape[1]} and "
            f"{train[0].shape[1]}"
        )
    test = None
    if X_test is not None or y_test is not None:
        test = _check_pair("X_test", X_test, "y_test", y_test)
    return train, val, test


def _penalty_weights(alpha, p):
    """`alpha` as a scalar or a per-feature vector, with its shape checked against `p`."""
    alpha = jnp.asarray(alpha)
    if alpha.shape not in ((), (p,)):
        raise ValueError(
            f"hparams['alpha'] must be a scalar or have shape ({p},) (one penalty per "
            f"feature), got shape {alpha.shape}"
        )
    return alpha


def ridge_inner(w, hparams, data):
    X, y = data
    alpha = _penalty_weights(hparams["alpha"], X.shape[1])
    r = X @ w - y
    return 0.5 * jnp.mean(r**2) + 0.5 * jnp.sum(alpha * w**2)


def squared_error(w, hparams, data):
    del hparams
    X, y = data
    return 0.5 * jnp.mean((X @ w - y) ** 2)


def ridge(X_train, y_train, X_val, y_val, X_test=None, y_test=None, *, alpha=1.0) -> BilevelProblem:
    """Ridge regression: `min_w 1/(2n) ||X w - y||^2 + alpha/2 ||w||^2` on the training
    rows; outer objective the half mean squared error on the validation rows.

    `alpha` is a scalar, or a vector with one penalty per feature. Center `y` and the
    columns of `X` first: there is no intercept. The closed forms are
    `ridge_solution` and `ridge_hypergradient`.
    """
    train, val, test = _data(X_train, y_train, X_val, y_val, X_test, y_test)
    p = train[0].shape[1]
    hparams = {"alpha": _penalty_weights(jnp.asarray(alpha, train[0].dtype), p)}
    return BilevelProblem(
        inner=ridge_inner,
        outer=squared_error,
        init_params=jnp.zeros(p, train[0].dtype),
        train=train,
        val=val,
        test=test,
        hparams=hparams,
        # One Newton step is exact; its gradient is zero up to rounding, so the
        # tolerance follows the dtype (1e-10 in float64, 1000 ulps in float32).
        solver=Newton(max_steps=1, tol=dtype_tol(1e-10, train[0].dtype)),
        name="ridge",
    )


def ridge_solution(problem: BilevelProblem, hparams):
    """The exact ridge solution `(X^T X / n + diag(alpha))^{-1} X^T y / n`."""
    X, y = problem.train
    n, p = X.shape
    h = X.T @ X / n + jnp.diag(jnp.broadcast_to(hparams["alpha"], (p,)))
    return jnp.linalg.solve(h, y @ X / n)


def ridge_hypergradient(problem: BilevelProblem, hparams):
    """The exact hypergradient of the validation loss of `ridge`, by dense algebra.

    With `H = X^T X / n + diag(alpha)`, `w = H^{-1} X^T y / n` and `g = dL_val/dw`,
    `dw/dalpha_j = -H^{-1} e_j w_j`, so `dL/dalpha = -w * (H^{-1} g)` (summed for a
    scalar alpha).
    """
    X, y = problem.train
    Xv, yv = problem.val
    n, p = X.shape
    alpha = jnp.asarray(hparams["alpha"])
    h = X.T @ X / n + jnp.diag(jnp.broadcast_to(alpha, (p,)))
    w = jnp.linalg.solve(h, y @ X / n)
    g = (Xv @ w - yv) @ Xv / Xv.shape[0]
    per_feature = -w * jnp.linalg.solve(h, g)
    return {"alpha": per_feature if alpha.ndim else jnp.sum(per_feature)}


def _softplus_and_sigmoid(z):
    """`(log(1 + exp(z)), sigmoid(z))` from one `exp` and one `log`: `jax.nn.softplus`
    and its derivative take three transcendental functions, `log1p` the slowest of them on
    CPU. `log(1 + e)` in place of `log1p(e)` (`e = exp(-|z|) <= 1`) is off by at most one
    ulp of 1, an absolute error that the mean loss carries anyway."""
    e = jnp.exp(-jnp.abs(z))
    return jnp.maximum(z, 0) + jnp.log(1 + e), jnp.where(z >= 0, 1.0, e) / (1 + e)


@jax.custom_jvp
def _softplus(z):
    """`log(1 + exp(z))`, whose derivative (the sigmoid) reuses the value's `exp`."""
    return _softplus_and_sigmoid(z)[0]


@_softplus.defjvp
def _softplus_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    value, sigmoid = _softplus_and_sigmoid(z)
    return value, sigmoid * dz


def _cross_entropy(logits, y):
    """Binary cross-entropy `-y log s(z) - (1 - y) log(1 - s(z))` written as
    `softplus(z) - y z` (the same function for every `y` in [0, 1]). Once the products
    with X are batched the transcendental functions are most of an evaluation's time: a
    population of 64 members on 2000 x 100 data took 2.1 ms per value and gradient with
    optax's two log-sigmoids, 1.5 ms with `jax.nn.softplus`, and a Hessian-vector
    product of the elementwise part 0.95 ms with `jax.nn.softplus`, 0.17 ms with
    `_softplus`."""
    return _softplus(logits) - y * logits


def logistic_inner(params, hparams, data):
    X, y = data
    alpha = _penalty_weights(hparams["alpha"], X.shape[1])
    logits = X @ params["w"] + params["b"]
    loss = jnp.mean(_cross_entropy(logits, y))
    return loss + 0.5 * jnp.sum(alpha * params["w"] ** 2)


def logistic_loss(params, hparams, data):
    del hparams
    X, y = data
    return jnp.mean(_cross_entropy(X @ params["w"] + params["b"], y))


def accuracy(params, data):
    """Fraction of rows whose predicted label (logit > 0) matches `y` in {0, 1}."""
    X, y = data
    return jnp.mean((X @ params["w"] + params["b"] > 0) == (y > 0.5))


def logistic(
    X_train,
    y_train,
    X_val,
    y_val,
    X_test=None,
    y_test=None,
    *,
    alpha=1e-2,
    per_feature: bool = False,
) -> BilevelProblem:
    """L2-regularized logistic regression with an unpenalized intercept.

    Inner: `mean(log(1 + exp(-s_i (x_i^T w + b)))) + 1/2 sum_j alpha_j w_j^2` with labels
    `y` in {0, 1} (`s_i = 2 y_i - 1`); outer: the mean log-loss on the validation rows.
    `per_feature=True` starts from one penalty per feature (a vector `alpha`), the case
    grid search cannot reach. The entry points refuse `alpha <= 0`: without a penalty
    the loss has no minimizer on linearly separable data.
    """
    train, val, test = _data(X_train, y_train, X_val, y_val, X_test, y_test)
    for name, (_, labels) in (("y_train", train), ("y_val", val)):
        if not bool(jnp.all((labels == 0) | (labels == 1))):
            raise ValueError(f"{name} must hold labels in {{0, 1}}")
    p = train[0].shape[1]
    dtype = train[0].dtype
    alpha = jnp.asarray(alpha, dtype)
    if per_feature:
        alpha = jnp.broadcast_to(alpha, (p,))
    hparams = {"alpha": _penalty_weights(alpha, p)}
    return BilevelProblem(
        inner=logistic_inner,
        outer=logistic_loss,
        init_params={"w": jnp.zeros(p, dtype), "b": jnp.zeros((), dtype)},
        train=train,
        val=val,
        test=test,
        hparams=hparams,
        # 1e-9 in float64; float32 cannot reach it (1000 ulps, see dtype_tol).
        solver=LBFGS(max_steps=500, tol=dtype_tol(1e-9, dtype)),
        name="logistic_per_feature" if per_feature else "logistic",
    )
