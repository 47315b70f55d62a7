"""Selection criteria for regularization: held-out loss, K-fold cross-validation with the
folds vectorized by `vmap`, and for the lasso SURE in its finite-difference Monte-Carlo
form. Each is a differentiable function of the hyperparameters (its gradient is a
hypergradient by the problem's method).

K folds as one problem: `kfold(builder, X, y, folds)` builds the problem of each fold on
its own rows (its training rows in the inner objective, its held-out rows in the outer
one), each padded with zero-weight rows to the largest fold's count so that every fold
has the same shapes, and stacks them on a leading axis: `jax.vmap` (or `lax.map`) over
that axis solves the K inner problems as one batched program. The criterion is the mean
over folds of each fold's validation loss (scikit-learn's `LassoCV` convention,
`mse_path_.mean(axis=1)`).
"""

import dataclasses
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from .._bilevel import BilevelProblem
from .._compile import EagerProgram, runs_compiled
from .._types import Array, HParams
from ..methods._solve import hypergradient, outer_loss, solve
from ._data import LEAST_ROWS, bucket
from ._sparse import Rows


def held_out(problem: BilevelProblem, hparams: HParams, **kwargs) -> Array:
    """The validation loss `outer(params*(h), h, val)`: `hypergrad.outer_loss`."""
    return outer_loss(problem, hparams, **kwargs)


def fold_indices(n: int, folds: int | Iterable, seed: int | None = None):
    """`[(train_idx, val_idx), ...]`: `folds` as given, or K contiguous folds as
    scikit-learn's `KFold(K)` (shuffled with `seed` when a seed is given)."""
    if isinstance(folds, (int, np.integer)) and not isinstance(folds, bool):
        k = int(folds)
        if not 2 <= k <= n:
            raise ValueError(f"folds must be between 2 and the number of rows {n}, got {k}")
        order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
        parts = np.array_split(order, k)
        rest = lambda i: np.sort(np.concatenate(parts[:i] + parts[i + 1 :]))  # noqa: E731
        return [(rest(i), part) for i, part in enumerate(parts)]
    out = [(np.asarray(t), np.asarray(v)) for t, v in folds]
    if len(out) < 1:
        raise ValueError("folds must hold at least one (train, val) pair")
    return out


def kfold(
    builder: Callable[..., BilevelProblem],
    X,
    y,
    folds: int | Iterable = 5,
    *,
    seed: int | None = None,
    center: bool = False,
    bucket_rows: bool = False,
    **kwargs,
) -> BilevelProblem:
    """The K fold problems of `builder` (`lasso`, `elastic_net`, `sparse_logistic`,
    `ridge_rows`, ...) stacked on a leading axis.

    Args:
      builder: a problem builder taking `(X_train, y_train, X_val, y_val, weights=...)`.
      X, y: all the rows.
      folds: the number of folds (contiguous, as `KFold`), or `(train_idx, val_idx)`
        pairs (scikit-learn's `cv.split(X, y)`).
      seed: shuffle the rows before a number of folds is cut.
      center: center `X` and `y` by each fold's training means (an unpenalized intercept
        fitted per fold, as scikit-learn's `LassoCV`); for problems without intercept.
      bucket_rows: pad the folds' training and held-out rows to `bucket` sizes, at
        least `LEAST_ROWS` (64), rather than to the largest fold's counts, so that data
        of nearby sizes share compiled programs (what the scikit-learn estimators do).
      kwargs: passed to `builder` (`alpha=`, `tol=`, ...).

    Returns:
      A `BilevelProblem` whose data leaves have a leading axis of length K; pass it to
      `kfold_loss`, `kfold_hypergradient` or `hypergrad.tune.hoag`.
    """
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X must be 2-d and y 1-d with as many entries as X has rows, got X.shape={X.shape},"
            f" y.shape={y.shape}"
        )
    pairs = fold_indices(X.shape[0], folds, seed)
    k, p = len(pairs), X.shape[1]
    size = (lambda m: bucket(m, least=LEAST_ROWS)) if bucket_rows else (lambda m: m)
    counts = [size(max(len(idx[side]) for idx in pairs)) for side in (0, 1)]
    dt = np.result_type(X, float)
    X, y = X.astype(dt, copy=False), y.astype(dt, copy=False)
    # Per side (training, held-out): the fold's rows, then zero rows of weight zero. On a
    # 64-byte boundary: on CPU `device_put` shares their memory instead of copying them.
    data = [(_aligned((k, m, p), dt), np.zeros((k, m), dt), np.zeros((k, m), dt)) for m in counts]
    (Xt, yt, wt), (Xv, yv, wv) = data
    for i, (tr, va) in enumerate(pairs):
        for (Xs, ys, ws), idx in zip(data, (tr, va), strict=True):
            np.take(X, idx, axis=0, out=Xs[i, : len(idx)])
            Xs[i, len(idx) :] = 0.0
            ys[i, : len(idx)], ws[i, : len(idx)] = y[idx], 1.0
        if center:
            # A per-fold intercept: center by the fold's training means (NumPy's pairwise
            # sums: HOAG's elastic-net path on the low-rank benchmark design is sensitive
            # to their last bits).
            m, mv = len(tr), len(va)
            xm, ym = Xt[i, :m].mean(0), yt[i, :m].mean()
            Xt[i, :m] -= xm
            Xv[i, :mv] -= xm
            yt[i, :m] -= ym
            yv[i, :mv] -= ym

    def fold(i):
        return builder(Xt[i], yt[i], Xv[i], yv[i], weights=(wt[i], wv[i]), **kwargs)

    # The first fold's problem is built (and its input checked) by the builder; the others
    # differ from it only in their rows' data, stacked once on the fold axis. Their
    # defaults (the starting hparams) are the first fold's.
    first = fold(0)
    if not isinstance(first.train, Rows) or first.test is not None:
        probs = [first] + [fold(i) for i in range(1, k)]
        probs = [dataclasses.replace(p, hparams=probs[0].hparams) for p in probs]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *probs)
    dtype = first.train.X.dtype
    put = lambda a: jax.device_put(a) if a.dtype == dtype else jnp.asarray(a, dtype)  # noqa: E731
    lip = first.train.lipschitz
    if lip is not None:  # the logistic problems' FISTA step, per fold
        lip = jnp.stack([lip] + [fold(i).train.lipschitz for i in range(1, k)])
    stack = lambda t: jnp.broadcast_to(t, (k, *jnp.shape(t)))  # noqa: E731
    return dataclasses.replace(
        first,
        train=Rows(put(Xt), put(yt), put(wt), lip),
        val=Rows(put(Xv), put(yv), put(wv)),
        init_params=jax.tree.map(stack, first.init_params),
        hparams=jax.tree.map(stack, first.hparams),
    )


def _aligned(shape, dtype):
    """An uninitialized NumPy array starting on a 64-byte boundary (what JAX's CPU client
    needs to use a host array's memory without a copy)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size].view(dtype).reshape(shape)


def num_folds(problem: BilevelProblem) -> int:
    return jax.tree.leaves(problem.train)[0].shape[0]


# The settings of `outer_loss` and `hypergradient` that configure the program (static
# under `jit`); the other keywords (warm starts, `tol`) are data.
_STATIC_KWARGS = ("solver", "method", "split", "throw")


def _compiled(fn):
    """`fn(stacked, hparams, data, **settings)` as one compiled program, keyed by the
    settings and the shapes, when called eagerly (`hypergrad._compile.runs_compiled`);
    traced into the caller's program under a transformation."""
    program = EagerProgram(fn, _STATIC_KWARGS)

    def call(stacked, hparams, kwargs):
        settings = {k: v for k, v in kwargs.items() if k in _STATIC_KWARGS}
        data = {k: v for k, v in kwargs.items() if k not in _STATIC_KWARGS}
        if not runs_compiled(stacked, (hparams, data)):
            return fn(stacked, hparams, data, **settings)
        return program.for_data(stacked.train, stacked.val)(stacked, hparams, data, **settings)

    return call


def _kfold_loss(stacked, hparams, data, **settings):
    return jnp.mean(jax.vmap(lambda pr: outer_loss(pr, hparams, **settings, **data))(stacked))


def _kfold_hypergradient(stacked, hparams, data, **settings):
    warm = ("init_params", "init_adjoint")
    rest = {k: v for k, v in data.items() if k not in warm}
    per = jax.vmap(
        lambda pr, p0, v0: hypergradient(
            pr, hparams, init_params=p0, init_adjoint=v0, **settings, **rest
        )
    )(stacked, *(data.get(k) for k in warm))
    mean = lambda t: jnp.mean(t, axis=0)  # noqa: E731
    return mean(per.value), jax.tree.map(mean, per.grad), per


_kfold_loss_compiled = _compiled(_kfold_loss)
_kfold_hypergradient_compiled = _compiled(_kfold_hypergradient)


def kfold_loss(stacked: BilevelProblem, hparams: HParams, **kwargs) -> Array:
    """The mean over folds of the validation loss (differentiable in `hparams`).

    `kwargs` go to `hypergrad.outer_loss` of each fold. Called with concrete values this
    runs as one compiled program (cached by the shapes and the settings: another `hparams`
    reuses it); eagerly, the folds' `vmap` would dispatch and compile operation by
    operation (2.5 s a call on 5 folds of 185 x 9, against 2 ms compiled)."""
    return _kfold_loss_compiled(stacked, hparams, kwargs)


def kfold_hypergradient(stacked: BilevelProblem, hparams: HParams, **kwargs):
    """`hypergrad.hypergradient` of each fold under `vmap`; returns the mean value, the
    mean gradient and the per-fold `Hypergradient` (for warm starts; `init_params` and
    `init_adjoint` in `kwargs` must carry the fold axis). One compiled program when
    called with concrete values, as `kfold_loss`."""
    return _kfold_hypergradient_compiled(stacked, hparams, kwargs)


def sure(
    problem: BilevelProblem,
    hparams: HParams,
    sigma: float,
    key: Array,
    *,
    epsilon: float | None = None,
    method=None,
) -> Array:
    """Stein's unbiased risk estimate of the prediction risk of a lasso-type fit, with
    the degrees of freedom by finite-difference Monte-Carlo (one probe):

        SURE(h) = (||y - X w(y)||^2 - n sigma^2 + 2 sigma^2 dof) / n,
        dof = delta^T X (w(y + epsilon delta) - w(y)) / epsilon,   delta ~ N(0, I),

    an unbiased estimate of `E ||X w(y) - X w_true||^2 / n` when the noise is Gaussian
    with known standard deviation `sigma`. The exact lasso dof is the support size
    (Zou, Hastie and Tibshirani, 2007), piecewise constant in `alpha` and so useless for
    gradients; the finite difference is smooth on each piece and differentiable through
    the implicit rule of both solves (Deledalle et al., 2014). Fix `key` across outer
    steps so the criterion is one deterministic function of `h`.

    Args:
      problem: a regression problem with training `Rows` (`lasso`, `elastic_net`,
        `weighted_lasso`), all row weights one.
      hparams: the penalties.
      sigma: the noise standard deviation.
      key: the PRNG key of the probe `delta`.
      epsilon: the finite-difference step (default `2 sigma / n^0.3`, the authors' choice).
      method: the differentiation method (default `Implicit()`).

    References:
      Stein, "Estimation of the mean of a multivariate normal distribution", 1981.
      Deledalle, Vaiter, Fadili and Peyre, "Stein Unbiased GrAdient estimator of the Risk
      (SUGAR) for multiple parameter selection", 2014, https://arxiv.org/abs/1405.1164
    """
    if not isinstance(problem.train, Rows):
        raise TypeError("sure needs a regression problem with Rows data (lasso, elastic_net)")
    X, y = problem.train.X, problem.train.y
    n = X.shape[0]
    eps = 2 * sigma / n**0.3 if epsilon is None else epsilon
    delta = jax.random.normal(key, y.shape, y.dtype)
    shifted = problem.train._replace(y=y + eps * delta)

    def fit(train):
        return solve(
            problem.inner,
            problem.init_params,
            hparams,
            train,
            solver=problem.solver,
            method=method,
            optimality=problem.optimality,
        ).params

    w, w_eps = fit(problem.train), fit(shifted)
    dof = delta @ (X @ (w_eps - w)) / eps
    return (jnp.sum((y - X @ w) ** 2) - n * sigma**2 + 2 * sigma**2 * dof) / n
