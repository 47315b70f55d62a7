"""Lasso, elastic net, weighted lasso and L1 logistic regression as bilevel problems.

Objectives match scikit-learn's (so `alpha` means the same number in both):

    lasso        1/(2 n) ||y - X w||^2 + alpha ||w||_1                  (`Lasso(alpha)`)
    elastic net  1/(2 n) ||y - X w||^2 + alpha1 ||w||_1 + alpha2/2 ||w||^2
                 (`ElasticNet(alpha=alpha1 + alpha2, l1_ratio=alpha1 / (alpha1 + alpha2))`)
    weighted     1/(2 n) ||y - X w||^2 + sum_j alpha_j |w_j|            (one penalty per feature)
    L1 logistic  mean log(1 + exp(-s_i (x_i^T w + b))) + alpha ||w||_1
                 (`LogisticRegression(l1_ratio=1, C=1 / (alpha n))`, intercept unpenalized)

How the non-smooth part is carried: the problem's `inner` is the *smooth* data term; the
penalty lives in the problem's `solver` (working-set `CoordinateDescent` for the
regressions, `FISTA` for the logistic ones, holding an `L1` or `ElasticNet` prox that
reads the strengths from `hparams`) and in its `optimality` (`prox_fixed_point(inner,
prox)`, restricted to the support). So `hypergrad.hypergradient(problem, h)` and
`hypergrad.outer_loss(problem, h, method=Implicit())` work as for smooth problems. To
swap the solver, pass one that carries the same prox, e.g.
`hypergradient(problem, h, solver=FISTA(problem.solver.prox, tol=1e-12))`; a solver
without it (`LBFGS()`, or one penalty of an elastic net's two) is refused with a
`ValueError`, since it would minimize the smooth part alone.

Data are `Rows(X, y, weight)`: a weight per row (1 for a row in the split, 0 for a row
out of it, so that the K folds of a cross-validation have the same shapes and stack
under `vmap`), and for the logistic problems the Lipschitz constant of the smooth term's
gradient (FISTA's step size, computed once with the data). No intercept for the
regressions: center `y` and `X` first (the estimators in `hypergrad.sklearn` do). Outer
objectives: the mean squared error (regression), the mean log-loss (classification), on
the validation rows.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._bilevel import BilevelProblem
from .._types import Array
from ..methods import Dense, Implicit
from ..methods._prox_fixed_point import prox_fixed_point
from ..solvers import LBFGS, CoordinateDescent, Newton, ProxNewton, least_squares, logistic_loss
from ..solvers._prox import FISTA, L1, ElasticNet


class Rows(NamedTuple):
    """A split of the data: design, targets, row weights, and optionally the Lipschitz
    constant of the smooth term's gradient (read by `FISTA` through `lipschitz_of`; None:
    computed when needed)."""

    X: Array
    y: Array
    weight: Array
    lipschitz: Array | None = None


def _spectral_norm_sq(X, weight, iters=100):
    """`||diag(sqrt(weight)) X||_2^2` by power iteration (cheaper than an SVD for large
    `X`), inflated by 1% because power iteration approaches it from below."""
    Xw = X * jnp.sqrt(weight)[:, None]
    v = jnp.ones(X.shape[1], X.dtype) / np.sqrt(X.shape[1])

    def body(_, v):
        u = (Xw @ v) @ Xw
        return u / jnp.linalg.norm(u)

    v = jax.lax.fori_loop(0, iters, body, v)
    return 1.01 * jnp.sum((Xw @ v) ** 2)


def _power_norm_sq(X, weight, iters=100):
    """`_spectral_norm_sq` in NumPy (data being built: no program to compile)."""
    Xw = X * np.sqrt(weight)[:, None]
    v = np.ones(X.shape[1], X.dtype) / np.sqrt(X.shape[1])
    for _ in range(iters):
        u = (Xw @ v) @ Xw
        v = u / np.linalg.norm(u)
    return 1.01 * np.sum((Xw @ v) ** 2)


def _const(x, dtype):
    """`jnp.asarray(x, dtype)`, by a transfer for host values (an eager conversion
    compiles a program of its own, about 10 ms in a fresh process)."""
    if isinstance(x, jax.Array):
        return jnp.asarray(x, dtype)
    return jax.device_put(np.asarray(x, dtype))


def _zeros(shape, dtype):
    return jax.device_put(np.zeros(shape, dtype))


def _as_rows(X, y, name, weight=None, logistic=False, lipschitz=False):
    # Checks in NumPy (no device round trips), then one conversion to JAX arrays.
    Xn, yn = np.asarray(X), np.asarray(y)
    if Xn.ndim != 2 or yn.ndim != 1:
        raise ValueError(
            f"X_{name} must be 2-d and y_{name} 1-d, got shapes {Xn.shape} and {yn.shape}"
        )
    if Xn.shape[0] != yn.shape[0]:
        raise ValueError(
            f"X_{name} and y_{name} must have the same number of rows, got "
            f"X_{name}.shape={Xn.shape} and y_{name}.shape={yn.shape}"
        )
    if not (np.isfinite(Xn).all() and np.isfinite(yn).all()):
        raise ValueError(f"X_{name} and y_{name} must be finite (no NaN or inf)")
    if logistic and not np.all((yn == 0) | (yn == 1)):
        raise ValueError(f"y_{name} must hold labels in {{0, 1}}")
    # In NumPy up to the transfer: an eager JAX operation compiles a program of its own,
    # about 10 ms each in a fresh process.
    floating = np.issubdtype(Xn.dtype, np.floating)
    dtype = jax.dtypes.canonicalize_dtype(Xn.dtype if floating else jnp.result_type(float))
    Xn, yn = Xn.astype(dtype, copy=False), yn.astype(dtype, copy=False)
    wn = np.ones(len(yn), dtype) if weight is None else np.asarray(weight, dtype)
    rows = Rows(*jax.device_put((Xn, yn, wn)))
    if not lipschitz:
        return rows
    # FISTA's step for the logistic loss: sigmoid' <= 1/4, the intercept one more column.
    Xb = np.hstack([Xn, np.ones((len(yn), 1), dtype)])
    lipschitz = np.asarray(_power_norm_sq(Xb, wn) / (4 * wn.sum()), dtype)
    return rows._replace(lipschitz=jax.device_put(lipschitz))


# `1/(2 sum(weight)) sum_i weight_i (x_i^T w - y_i)^2`: the lasso's smooth part, the data
# term `CoordinateDescent` minimizes (defined with the solver that relies on it).
squared_loss = least_squares


def mean_squared_error(w, hparams, data: Rows):
    """The (weighted) mean squared error of `X w` against `y`."""
    return 2 * squared_loss(w, hparams, data)


# The (weighted) mean log-loss of `X w + b` against labels in {0, 1}: the logistic
# problems' data term, the one `ProxNewton` minimizes (defined with that solver).
log_loss = logistic_loss


def ridge_loss(w, hparams, data: Rows):
    """Squared loss plus `alpha/2 ||w||^2` (smooth: the ridge problem has no prox)."""
    return squared_loss(w, hparams, data) + 0.5 * jnp.sum(hparams["alpha"] * w**2)


def lipschitz_of(hparams, data: Rows):
    """The step-size rule of `FISTA` on the ready problems: the constant stored with the
    data, else `||diag(sqrt(weight)) X||_2^2 / sum(weight)` by power iteration (a quarter
    of it for the logistic loss is not assumed: store it with the data for that)."""
    del hparams
    if data.lipschitz is not None:
        return data.lipschitz
    return _spectral_norm_sq(data.X, data.weight) / jnp.sum(data.weight)


def alpha_max(X, y, weight=None) -> float:
    """The smallest `alpha` for which the lasso solution is zero: `||X^T y||_inf / n`
    (weighted rows: `||X^T (weight * y)||_inf / sum(weight)`)."""
    X, y = np.asarray(X), np.asarray(y)
    weight = np.ones(len(y)) if weight is None else np.asarray(weight)
    return float(np.max(np.abs(X.T @ (weight * y))) / np.sum(weight))


def _check_positive(name, value, shape_ok):
    a = np.asarray(value, dtype=np.float64)
    if not shape_ok(a.shape):
        raise ValueError(f"{name} has the wrong shape: {name}.shape={a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be finite and non-negative, got {name}={value!r}")


def _splits(X_train, y_train, X_val, y_val, X_test, y_test, logistic=False, weights=None):
    w_train, w_val = (None, None) if weights is None else weights
    train = _as_rows(X_train, y_train, "train", w_train, logistic, lipschitz=logistic)
    if X_val is X_train and y_val is y_train:  # K folds: the same rows, other weights
        weight = train.weight if w_val is None else jnp.asarray(w_val, train.X.dtype)
        val = Rows(train.X, train.y, weight)
    else:
        val = _as_rows(X_val, y_val, "val", w_val, logistic, lipschitz=False)
    if val.X.shape[1] != train.X.shape[1]:
        raise ValueError(
            f"X_val must have as many columns as X_train, got {val.X.shape[1]} and "
            f"{train.X.shape[1]}"
        )
    test = None
    if X_test is not None or y_test is not None:
        test = _as_rows(X_test, y_test, "test", None, logistic, lipschitz=False)
    return train, val, test


def default_working_set(n: int, p: int) -> int:
    """`CoordinateDescent`'s working-set size for the ready regressions: `n` rounded up to
    a power of two (a lasso solution has at most `n` nonzeros), at least 64, at most `p`."""
    return int(min(p, max(64, 1 << max(int(n) - 1, 1).bit_length())))


def _cd(prox, train, tol, max_steps, working_set):
    n, p = train.X.shape
    size = default_working_set(n, p) if working_set is None else working_set
    return CoordinateDescent(prox, tol=tol, max_steps=max_steps, working_set=size)


def _prox_problem(inner, outer, init, splits, hparams, prox, max_steps, tol, name, solver=None):
    """A problem whose penalty is `prox`: the solver holds it (FISTA unless given), the
    optimality condition is the support-restricted proximal fixed point. With the
    working-set solver, the default method solves the implicit system exactly on the
    working set (a Cholesky factorization of its Hessian on the support)."""
    train, val, test = splits
    method = None
    if solver is None:
        solver = FISTA(prox, max_steps=max_steps, tol=tol, lipschitz=lipschitz_of)
    else:
        method = Implicit(Dense(symmetric=True))
    return BilevelProblem(
        inner=inner,
        outer=outer,
        init_params=init,
        train=train,
        val=val,
        test=test,
        hparams=hparams,
        optimality=prox_fixed_point(inner, prox),
        solver=solver,
        name=name,
        method=method,
    )


def lasso(
    X_train,
    y_train,
    X_val,
    y_val,
    X_test=None,
    y_test=None,
    *,
    alpha=None,
    per_feature: bool = False,
    tol: float = 1e-10,
    max_steps: int = 100,
    working_set: int | None = None,
    weights=None,
) -> BilevelProblem:
    """The lasso `1/(2n) ||y - X w||^2 + alpha ||w||_1` (scikit-learn's `Lasso`).

    Args:
      X_train, y_train, X_val, y_val, X_test, y_test: the splits (test optional).
      alpha: the starting penalty (default `alpha_max / 10`): a scalar, or with
        `per_feature=True` one penalty per feature (the weighted lasso).
      tol, max_steps, working_set: the `CoordinateDescent` solver's relative duality-gap
        tolerance (scikit-learn's `tol`), round limit and working-set size (default
        `default_working_set(n, p)`).
      weights: optional `(train_weights, val_weights)` per row (used for K folds).

    Returns:
      A `BilevelProblem` with hparams `{"alpha": ...}`, params `w` of shape `(p,)`,
      solver `CoordinateDescent(L1("alpha"))` and the support-restricted optimality
      condition.
    """
    train, val, test = _splits(X_train, y_train, X_val, y_val, X_test, y_test, weights=weights)
    p, dtype = train.X.shape[1], train.X.dtype
    if alpha is None:
        alpha = alpha_max(train.X, train.y, train.weight) / 10
    _check_positive("alpha", alpha, lambda s: s in ((), (p,)))
    alpha = _const(alpha, dtype)
    if per_feature:
        alpha = jnp.broadcast_to(alpha, (p,))
    name = "weighted_lasso" if per_feature else "lasso"
    prox = L1("alpha")
    return _prox_problem(
        squared_loss,
        mean_squared_error,
        _zeros(p, dtype),
        (train, val, test),
        {"alpha": alpha},
        prox,
        max_steps,
        tol,
        name,
        _cd(prox, train, tol, max_steps, working_set),
    )


def weighted_lasso(X_train, y_train, X_val, y_val, X_test=None, y_test=None, **kwargs):
    """The lasso with one penalty per feature, `sum_j alpha_j |w_j|`: `p` hyperparameters,
    out of reach of any grid. Same arguments as `lasso`."""
    return lasso(X_train, y_train, X_val, y_val, X_test, y_test, per_feature=True, **kwargs)


def elastic_net(
    X_train,
    y_train,
    X_val,
    y_val,
    X_test=None,
    y_test=None,
    *,
    alpha1=None,
    alpha2=None,
    tol: float = 1e-10,
    max_steps: int = 100,
    working_set: int | None = None,
    weights=None,
) -> BilevelProblem:
    """The elastic net `1/(2n) ||y - X w||^2 + alpha1 ||w||_1 + alpha2/2 ||w||^2`.

    Two hyperparameters `{"alpha1", "alpha2"}` (defaults `alpha_max / 10` and
    `alpha_max / 10`); scikit-learn's `ElasticNet(alpha, l1_ratio)` is
    `alpha1 = alpha * l1_ratio`, `alpha2 = alpha * (1 - l1_ratio)`. Solver arguments as
    `lasso`.
    """
    train, val, test = _splits(X_train, y_train, X_val, y_val, X_test, y_test, weights=weights)
    p, dtype = train.X.shape[1], train.X.dtype
    amax = alpha_max(train.X, train.y, train.weight)
    alpha1 = amax / 10 if alpha1 is None else alpha1
    alpha2 = amax / 10 if alpha2 is None else alpha2
    _check_positive("alpha1", alpha1, lambda s: s == ())
    _check_positive("alpha2", alpha2, lambda s: s == ())
    hparams = {"alpha1": _const(alpha1, dtype), "alpha2": _const(alpha2, dtype)}
    prox = ElasticNet("alpha1", "alpha2")
    return _prox_problem(
        squared_loss,
        mean_squared_error,
        _zeros(p, dtype),
        (train, val, test),
        hparams,
        prox,
        max_steps,
        tol,
        "elastic_net",
        _cd(prox, train, tol, max_steps, working_set),
    )


def _logistic_solver(prox, p, tol, max_steps):
    """Proximal Newton up to 500 features (a `(p + 1)`-square Hessian per step), FISTA
    above."""
    if p <= 500:
        return ProxNewton(prox, tol=tol, max_steps=100 if max_steps is None else max_steps)
    steps = 20000 if max_steps is None else max_steps
    return FISTA(prox, max_steps=steps, tol=tol, lipschitz=lipschitz_of)


def _logistic_l1_default(train: Rows):
    """A tenth of the smallest L1 penalty that zeroes `w` (the intercept is free)."""
    wt = train.weight
    ybar = jnp.sum(wt * train.y) / jnp.sum(wt)
    return alpha_max(train.X, train.y - ybar, wt) / 10


def sparse_logistic(
    X_train,
    y_train,
    X_val,
    y_val,
    X_test=None,
    y_test=None,
    *,
    alpha=None,
    per_feature: bool = False,
    tol: float = 1e-8,
    max_steps: int | None = None,
    weights=None,
) -> BilevelProblem:
    """L1 logistic regression `mean log-loss(X w + b, y) + alpha ||w||_1`, labels in
    {0, 1}, intercept `b` unpenalized; scikit-learn's `LogisticRegression(l1_ratio=1,
    C=1 / (alpha n))`. Params `{"w": (p,), "b": ()}`; outer: validation log-loss.
    Default `alpha`: a tenth of the smallest penalty that zeroes `w`. Solver: proximal
    Newton up to 500 features (`tol` on its optimality residual, `max_steps` Newton steps,
    default 100), FISTA above (default 20000 steps)."""
    train, val, test = _splits(
        X_train, y_train, X_val, y_val, X_test, y_test, logistic=True, weights=weights
    )
    p, dtype = train.X.shape[1], train.X.dtype
    alpha = _logistic_l1_default(train) if alpha is None else alpha
    _check_positive("alpha", alpha, lambda s: s in ((), (p,)))
    alpha = _const(alpha, dtype)
    if per_feature:
        alpha = jnp.broadcast_to(alpha, (p,))
    init = {"w": _zeros(p, dtype), "b": _zeros((), dtype)}
    prox = L1("alpha", leaf="w")
    return _prox_problem(
        log_loss,
        log_loss,
        init,
        (train, val, test),
        {"alpha": alpha},
        prox,
        max_steps,
        tol,
        "sparse_logistic",
        _logistic_solver(prox, p, tol, max_steps),
    )


def elastic_net_logistic(
    X_train,
    y_train,
    X_val,
    y_val,
    X_test=None,
    y_test=None,
    *,
    alpha1=None,
    alpha2=None,
    tol: float = 1e-8,
    max_steps: int | None = None,
    weights=None,
) -> BilevelProblem:
    """Elastic-net logistic regression
    `mean log-loss(X w + b, y) + alpha1 ||w||_1 + alpha2/2 ||w||^2`, labels in {0, 1},
    intercept `b` unpenalized. Two hyperparameters `{"alpha1", "alpha2"}` (defaults a
    tenth of the smallest L1 penalty that zeroes `w`, and 1e-2); scikit-learn's
    `LogisticRegression(penalty="elasticnet", C, l1_ratio)` has `alpha1 = l1_ratio / (C n)`
    and `alpha2 = (1 - l1_ratio) / (C n)`. Params `{"w": (p,), "b": ()}`; outer:
    validation log-loss.
    """
    train, val, test = _splits(
        X_train, y_train, X_val, y_val, X_test, y_test, logistic=True, weights=weights
    )
    p, dtype = train.X.shape[1], train.X.dtype
    alpha1 = _logistic_l1_default(train) if alpha1 is None else alpha1
    alpha2 = 1e-2 if alpha2 is None else alpha2
    _check_positive("alpha1", alpha1, lambda s: s == ())
    _check_positive("alpha2", alpha2, lambda s: s == ())
    init = {"w": _zeros(p, dtype), "b": _zeros((), dtype)}
    prox = ElasticNet("alpha1", "alpha2", leaf="w")
    return _prox_problem(
        log_loss,
        log_loss,
        init,
        (train, val, test),
        {"alpha1": _const(alpha1, dtype), "alpha2": _const(alpha2, dtype)},
        prox,
        max_steps,
        tol,
        "elastic_net_logistic",
        _logistic_solver(prox, p, tol, max_steps),
    )


def ridge_rows(
    X_train, y_train, X_val, y_val, X_test=None, y_test=None, *, alpha=1.0, weights=None, tol=1e-10
) -> BilevelProblem:
    """Ridge `1/(2n) ||y - X w||^2 + alpha/2 ||w||^2` on `Rows` data (weighted rows, so K
    folds stack under `vmap`); solved in one Newton step, smooth optimality."""
    train, val, test = _splits(X_train, y_train, X_val, y_val, X_test, y_test, weights=weights)
    p, dtype = train.X.shape[1], train.X.dtype
    _check_positive("alpha", alpha, lambda s: s in ((), (p,)))
    return BilevelProblem(
        inner=ridge_loss,
        outer=mean_squared_error,
        init_params=_zeros(p, dtype),
        train=train,
        val=val,
        test=test,
        hparams={"alpha": _const(alpha, dtype)},
        solver=Newton(max_steps=2, tol=tol),
        name="ridge_rows",
    )


def l2_log_loss(params, hparams, data: Rows):
    """Log-loss plus `alpha/2 ||w||^2` (the intercept unpenalized)."""
    return log_loss(params, hparams, data) + 0.5 * jnp.sum(hparams["alpha"] * params["w"] ** 2)


def logistic_rows(
    X_train, y_train, X_val, y_val, X_test=None, y_test=None, *, alpha=1e-2, weights=None, tol=1e-9
) -> BilevelProblem:
    """L2 logistic regression on `Rows` data (weighted rows, so K folds stack):
    `mean log-loss + alpha/2 ||w||^2`, scikit-learn's `LogisticRegression(C=1/(alpha n))`;
    smooth, solved by Newton's method with a line search (quadratic convergence, a
    `(p + 1)`-square Hessian) up to 1000 features, L-BFGS above."""
    train, val, test = _splits(
        X_train, y_train, X_val, y_val, X_test, y_test, logistic=True, weights=weights
    )
    p, dtype = train.X.shape[1], train.X.dtype
    _check_positive("alpha", alpha, lambda s: s in ((), (p,)))
    return BilevelProblem(
        inner=l2_log_loss,
        outer=log_loss,
        init_params={"w": _zeros(p, dtype), "b": _zeros((), dtype)},
        train=train,
        val=val,
        test=test,
        hparams={"alpha": _const(alpha, dtype)},
        solver=LBFGS(max_steps=1000, tol=tol) if p > 1000 else Newton(tol=tol, line_search=8),
        name="logistic_rows",
    )
