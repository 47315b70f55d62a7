"""scikit-learn estimators that tune their own penalty by hypergradient.

`HyperLasso`, `HyperElasticNet`, `HyperRidge` and `HyperLogisticRegression` are drop-in
alternatives to `LassoCV`, `ElasticNetCV`, `RidgeCV` and `LogisticRegressionCV`: `fit`
minimizes the cross-validation loss (mean squared error, or log-loss) over the penalty,
then refits on all rows. The sparse models and logistic regression run HOAG
(`hypergrad.tune.hoag`) over the K folds as one program (`vmap`), with warm-started
working-set solvers, and stop when converged (`max_iter` is a cap); ridge needs no
iterative solver at all: one factorization gives the criterion and its exact
hypergradient and curvature for every penalty in closed form (NumPy on the host; in JAX:
`hypergrad.problems.ridge_factors`), leave-one-out by default as `RidgeCV`. After `fit`:
`alpha_` (or `C_`), `coef_`, `intercept_`, `history_` (one entry per criterion
evaluation: penalty, criterion, inner iterations, wall time
where measured), `n_iter_` (outer steps), `n_inner_solves_`, `stop_reason_`, `cv_value_`
(the cross-validation criterion at the chosen penalty). `validation_gap(X_test, y_test)`
re-checks that choice on held-out rows (`hypergrad.analysis.validation_gap`: a warning
when the test loss exceeds the CV criterion by more than `GAP_THRESHOLD`); for nested
cross-validation, pass the estimator to scikit-learn's `cross_validate`: it tunes inside
each outer fold.

Penalties are in scikit-learn's scale: `HyperLasso.alpha_` is `Lasso(alpha=...)`'s
alpha, `HyperElasticNet` has `alpha_` and `l1_ratio_`, `HyperRidge.alpha_` is `Ridge`'s
(on the un-averaged squared error), `HyperLogisticRegression.C_` is `LogisticRegression`'s
`C` (an array with `per_feature=True`: then `C_[j]` is feature j's, a model no single-C
estimator can express).

With the compilation cache on (the default, `hypergrad.cache_dir()`), the fits' programs
are also kept exported (`hypergrad._exported`, with the `flatbuffers` package of the
`sklearn` extra): a fresh process skips their tracing and lowering.

Shapes are padded to buckets (`hypergrad.problems.bucket`: at most a quarter more rows
and columns, and at least 64 rows; zero-weight rows and zero columns, which leave the fit
unchanged) so that fitting data of nearby shapes reuses compiled programs. The
computation runs in float64 whatever JAX's default.
"""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import check_cv
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import _exported, problems
from .._threads import serial_lapack
from ..problems._criteria import _aligned
from ..solvers import run
from ..tune import hoag


def _padded_shape(shape):
    """The bucketed `(rows, columns)` of data of `shape`: at least `LEAST_ROWS` rows."""
    n, p = shape
    return problems.bucket(n, least=problems.LEAST_ROWS), problems.bucket(p)


def _pad(X, y):
    """`X` padded with zeros to `_padded_shape` (a copy on a 64-byte boundary, which
    `jax.device_put` shares rather than copies on CPU), and `y` to its rows."""
    n, p = X.shape
    Xp = _aligned(_padded_shape(X.shape), np.float64)
    Xp[...] = 0.0
    Xp[:n, :p] = X
    yp = np.zeros(Xp.shape[0])
    yp[: len(y)] = y
    return Xp, yp


@jax.jit
def _solve(pr, h, w0):
    """The refit's coefficients (only they: an output `jax.export` can carry)."""
    return run(pr.solver, pr.inner, w0, h, pr.train).params


def _check_bounds(bounds, name):
    if bounds is None:
        return None
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a pair (lower, upper), got {name}={bounds!r}") from e
    if not (np.isfinite(lo) and np.isfinite(hi) and lo > 0 and hi > 0):
        raise ValueError(f"{name} must be positive and finite, got {name}={bounds!r}")
    if lo >= hi:
        raise ValueError(f"{name} must be (lower, upper) with lower < upper, got {name}={bounds!r}")
    return lo, hi


_CRITERIA = ("cv",)


class _HyperLinear(BaseEstimator):
    """Shared fitting logic: validate, center, pad, cross-validate by HOAG, refit."""

    _builder = None
    _classifier = False

    def _check_common(self):
        if self.criterion not in _CRITERIA:
            raise ValueError(
                f"criterion must be one of {_CRITERIA}, got criterion={self.criterion!r}"
            )
        for name in ("max_iter",):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {name}={v!r}")
        if not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise ValueError(f"tol must be a positive number, got tol={self.tol!r}")

    def _folds(self, X, y):
        cv = check_cv(self.cv, y, classifier=self._classifier)
        n_splits = cv.get_n_splits(X, y)
        if n_splits > X.shape[0]:
            raise ValueError(
                f"Cannot have number of folds={n_splits} greater than the number of samples: "
                f"n_samples = {X.shape[0]}"
            )
        return list(cv.split(X, y))

    def _tune(self, X, y, bounds, start, kwargs):
        """HOAG over the folds on padded data: the `HoagResult`."""
        folds = self._folds(X, y)
        self._n_fold_train = float(np.mean([len(t) for t, _ in folds]))
        Xp, yp = _pad(X, y)
        center = getattr(self, "fit_intercept", False)
        stacked = problems.kfold(
            self._builder, Xp, yp, folds, center=center, bucket_rows=True, **kwargs
        )
        lo, hi = bounds
        # The problem is the library's own: its program may come exported from the cache.
        with _exported.enabled():
            return hoag(
                stacked,
                start,
                lower=lo,
                upper=hi,
                max_iter=int(self.max_iter),
                tol=max(self._first_tol, self.tol),
                decrease=0.5,
                min_tol=self.tol,
                value_tol=self._value_tol,
                patience=self._patience,
            )

    # The search stops when two steps in a row improve the CV criterion by less than
    # this (relative). A CV estimate is far less precise than that (its spread over
    # folds), and scikit-learn's CV estimators choose on a grid of alphas 7% apart.
    _value_tol = 1e-4
    _patience = 2

    # The inner tolerance HOAG starts from, halved each step down to `tol` (the solver's
    # own measure: the relative duality gap for coordinate descent). Where `tol` is
    # looser (HyperLasso's scikit-learn default, 1e-4), every step runs at `tol`.
    _first_tol = 1e-5

    def _refit(self, X, y, hparams, kwargs, start=None):
        """The model on all rows at `hparams`, warm-started from `start` (the folds' mean
        solution) when given."""
        Xp, yp = _pad(X, y)
        w = np.zeros(len(yp))
        w[: len(y)] = 1.0
        Xp = jax.device_put(Xp)  # the padded copy is ours: shared, not copied twice
        pr = self._builder(Xp, yp, Xp, yp, weights=(w, w), **kwargs)
        h = {k: jnp.asarray(v) for k, v in hparams.items()}
        w0 = pr.init_params if start is None else jax.tree.map(jnp.asarray, start)
        with _exported.enabled():
            return jax.tree.map(np.asarray, _exported.call("refit", _solve, pr, h, w0))

    def _history(self, res, to_sklearn):
        return [
            {
                **to_sklearn(e["hparams"]),
                "criterion": e["value"],
                "inner_steps": e["inner_steps"],
                "time_s": e["time_s"],
            }
            for e in res.history
        ]

    def _record(self, res, to_sklearn):
        self.history_ = self._history(res, to_sklearn)
        self.n_iter_, self.n_inner_solves_ = len(res.history), res.num_solves
        self.stop_reason_ = res.stop_reason
        self.cv_value_ = float(res.value)

    def validation_gap(self, X, y, *, threshold=None, warn=True):
        """The chosen penalty's cross-validation criterion (`cv_value_`) against the
        fitted model's loss on held-out rows `X, y`, by the same measure (squared error
        for the regressors, log-loss for the classifier): a
        `hypergrad.analysis.ValidationGap`, which warns (`ValidationOverfitWarning`) when
        the relative gap exceeds `threshold` (default `hypergrad.analysis.GAP_THRESHOLD`)
        and `warn` is true."""
        from ..analysis import GAP_THRESHOLD, validation_gap

        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise ValueError(
                f"y must have one value per row of X ({X.shape[0]}), got shape {y.shape}"
            )
        test = float(np.mean(self._losses(X, y)))
        limit = GAP_THRESHOLD if threshold is None else threshold
        return validation_gap(self.cv_value_, test, threshold=limit, warn=warn)

    def _validate(self, X, y):
        self._check_common()
        X, y = validate_data(self, X, y, y_numeric=not self._classifier, dtype=np.float64)
        if not self._classifier and not np.issubdtype(y.dtype, np.number):
            # scikit-learn's y_numeric converts only object arrays; strings pass.
            try:
                y = y.astype(np.float64)
            except ValueError:
                raise ValueError(
                    f"y must hold numbers for the regressor {type(self).__name__}, got y of "
                    f"dtype {y.dtype} (e.g. {y.flat[0]!r}); class labels need "
                    "HyperLogisticRegression"
                ) from None
        return X, y

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


class _HyperRegressor(RegressorMixin, _HyperLinear):
    def _center(self, X, y):
        if self.fit_intercept:
            self._x_mean, self._y_mean = X.mean(0), y.mean()
        else:
            self._x_mean, self._y_mean = np.zeros(X.shape[1]), 0.0
        return X - self._x_mean, y - self._y_mean

    def _finish(self, w, p):
        self.coef_ = np.asarray(w)[:p]
        self.intercept_ = float(self._y_mean - self._x_mean @ self.coef_)

    def predict(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X @ self.coef_ + self.intercept_

    def _losses(self, X, y):
        return (np.asarray(y, dtype=np.float64) - self.predict(X)) ** 2

    @staticmethod
    def _working_set(X):
        """The folds' working-set size: the refit's (all rows, padded), not what a
        fold's fewer rows would give. An elastic net's support can exceed the rows, and
        a working set smaller than the support makes every round a block of it (low-rank
        400 x 2000 design: 73 s a fit at the folds' 256 slots, 3 s at 512)."""
        return problems.default_working_set(*_padded_shape(X.shape))


class HyperLasso(_HyperRegressor):
    """The lasso with its `alpha` tuned by K-fold cross-validation and HOAG; an
    alternative to `LassoCV`.

    Args:
      cv: folds as in scikit-learn (an int K, a splitter, or `(train, test)` pairs).
      alpha_bounds: `(lower, upper)` for `alpha` (default
        `(alpha_max * 1e-4, alpha_max)`, `alpha_max` the smallest alpha zeroing the fit).
      max_iter: the largest number of outer (HOAG) steps; the search stops earlier when
        it has converged (`stop_reason_` says why it stopped: "gradient", "step" or
        "stall", see `hypergrad.tune.hoag`, or "max_iter").
      tol: the inner tolerance (relative duality gap) of the folds' solves and of the
        refit on all rows, and the adjoint tolerance: scikit-learn's `tol`, with its
        default (`LassoCV` refits at it too; the CV criterion moves by far less than its
        spread over folds at that precision; smaller values cost inner epochs, not
        accuracy).
      fit_intercept: center `X` and `y` and fit an intercept.
      criterion: "cv" (K-fold mean squared error).

    Example:
      >>> from sklearn.datasets import load_diabetes
      >>> from hypergrad.sklearn import HyperLasso
      >>> X, y = load_diabetes(return_X_y=True)
      >>> est = HyperLasso().fit(X, y)
      >>> est.alpha_ > 0, est.stop_reason_ in ("gradient", "step", "stall")
      (True, True)
    """

    _builder = staticmethod(problems.lasso)

    def __init__(
        self, *, cv=5, alpha_bounds=None, max_iter=30, tol=1e-4, fit_intercept=True, criterion="cv"
    ):
        self.cv, self.alpha_bounds, self.max_iter = cv, alpha_bounds, max_iter
        self.tol, self.fit_intercept, self.criterion = tol, fit_intercept, criterion

    def fit(self, X, y):
        X, y = self._validate(X, y)
        bounds = _check_bounds(self.alpha_bounds, "alpha_bounds")
        with jax.enable_x64(True), serial_lapack():
            Xc, yc = self._center(X, y)
            amax = max(problems.alpha_max(Xc, yc), 1e-12)
            bounds = bounds or (amax * 1e-4, amax)
            start = float(np.clip(amax / 10, *bounds))
            kw = {"working_set": self._working_set(X)}
            res = self._tune(Xc, yc, bounds, {"alpha": start}, kw)
            self.alpha_ = float(res.hparams["alpha"])
            start = np.mean(res.params, axis=0)
            w = self._refit(Xc, yc, {"alpha": self.alpha_}, {"tol": self.tol}, start)
        self._finish(w, X.shape[1])
        self._record(res, lambda h: {"alpha": float(h["alpha"])})
        return self


class HyperElasticNet(_HyperRegressor):
    """The elastic net with both penalties tuned by cross-validation and HOAG (a
    continuous search over `alpha` and `l1_ratio`); an alternative to `ElasticNetCV`.

    Tunes `alpha1 = alpha * l1_ratio` and `alpha2 = alpha * (1 - l1_ratio)` in log space,
    each within `alpha_bounds`. Same arguments as `HyperLasso`, except `tol` (default
    1e-8): with a small L1 share the solutions are dense, and HOAG on solves at
    scikit-learn's 1e-4 wandered to penalties where they hit their round limit (low-rank
    400 x 2000 design: 42 s and 13 steps, against 7.2 s at 1e-8). After `fit`: `alpha_`,
    `l1_ratio_`, `coef_`, `intercept_`, `history_`, `stop_reason_`.
    """

    _builder = staticmethod(problems.elastic_net)

    def __init__(
        self, *, cv=5, alpha_bounds=None, max_iter=30, tol=1e-8, fit_intercept=True, criterion="cv"
    ):
        self.cv, self.alpha_bounds, self.max_iter = cv, alpha_bounds, max_iter
        self.tol, self.fit_intercept, self.criterion = tol, fit_intercept, criterion

    def fit(self, X, y):
        X, y = self._validate(X, y)
        bounds = _check_bounds(self.alpha_bounds, "alpha_bounds")
        to_sk = lambda h: {  # noqa: E731
            "alpha": float(h["alpha1"] + h["alpha2"]),
            "l1_ratio": float(h["alpha1"] / (h["alpha1"] + h["alpha2"])),
        }
        with jax.enable_x64(True), serial_lapack():
            Xc, yc = self._center(X, y)
            amax = max(problems.alpha_max(Xc, yc), 1e-12)
            bounds = bounds or (amax * 1e-4, amax)
            s = float(np.clip(amax / 20, *bounds))
            kw = {"working_set": self._working_set(X)}
            res = self._tune(Xc, yc, bounds, {"alpha1": s, "alpha2": s}, kw)
            h = {k: float(v) for k, v in res.hparams.items()}
            w = self._refit(Xc, yc, h, {"tol": self.tol}, np.mean(res.params, axis=0))
        self.alpha_, self.l1_ratio_ = to_sk(h)["alpha"], to_sk(h)["l1_ratio"]
        self._finish(w, X.shape[1])
        self._record(res, to_sk)
        return self


class HyperRidge(_HyperRegressor):
    """Ridge with `alpha` tuned by its exact hypergradient; an alternative to `RidgeCV`.

    One factorization (an eigendecomposition of the smaller Gram matrix, the cost of
    `RidgeCV`'s own) gives the criterion, its gradient and its curvature for every
    `alpha` in `O(n min(n, p))`: a coarse scan of `alpha_bounds` in log scale, then
    safeguarded Newton steps on `log alpha` from the best scanned point.

    Args:
      cv: None (default) for the leave-one-out error in closed form (`RidgeCV`'s
        default), or folds as in scikit-learn (one factorization per fold). The
        factorizations use the host's LAPACK, as `RidgeCV`, and the search over `alpha`
        is NumPy on their factors, with the criterion's derivatives in closed form:
        nothing is compiled (`hypergrad.problems.ridge_factors` and `loo_mse` are the
        same computation in JAX, for accelerators and for `tune`).
      alpha_bounds: `(lower, upper)` on scikit-learn's scale (`||y - X w||^2 + alpha
        ||w||^2`); default `(1e-6, 1e6)` times the mean eigenvalue of `X^T X`.
      max_iter: the largest number of Newton steps after the scan.
      tol: stop when a Newton step moves `log alpha` by less than `tol`.
      fit_intercept: center `X` and `y` and fit an intercept.
      criterion: "cv".

    After `fit`: `alpha_`, `coef_`, `intercept_`, `history_` (the scanned and Newton
    points), `n_iter_` (Newton steps), `stop_reason_` ("step" or "max_iter").
    """

    _scan = 16  # log-spaced penalties scanned before the Newton steps

    def __init__(
        self,
        *,
        cv=None,
        alpha_bounds=None,
        max_iter=30,
        tol=1e-8,
        fit_intercept=True,
        criterion="cv",
    ):
        self.cv, self.alpha_bounds, self.max_iter = cv, alpha_bounds, max_iter
        self.tol, self.fit_intercept, self.criterion = tol, fit_intercept, criterion

    def fit(self, X, y):
        X, y = self._validate(X, y)
        bounds = _check_bounds(self.alpha_bounds, "alpha_bounds")
        n, p = X.shape
        if self.fit_intercept:
            self._x_mean, self._y_mean = X.mean(0), y.mean()
        else:
            self._x_mean, self._y_mean = np.zeros(p), 0.0
        yc = y - self._y_mean
        Q, lam, coef_map = _factor(X, self._x_mean)
        if bounds is None:  # around the mean eigenvalue of Xc^T Xc (its trace over its rank)
            mean_eig = max(float(np.sum(lam)) / max(min(n, p), 1), 1e-12)
            bounds = (1e-6 * mean_eig, 1e6 * mean_eig)
        if self.cv is None:
            path = _LooPath(Q, lam, yc, bool(self.fit_intercept))
        else:
            path = _KFoldPath(*self._ridge_folds(X, y))
        found, alphas, values, steps = _minimize_log(
            path, *np.log(bounds), self.tol, self._scan, int(self.max_iter)
        )
        self.alpha_ = float(np.exp(found))
        self._finish(coef_map(self.alpha_, Q, lam, yc), p)
        used = ~np.isnan(values)
        self.history_ = [
            {"alpha": a, "criterion": v, "inner_steps": 0, "time_s": None}
            for a, v in zip(np.exp(alphas[used]).tolist(), values[used].tolist(), strict=True)
        ]
        self.n_iter_ = steps
        self.n_inner_solves_ = 0
        self.stop_reason_ = "step" if self.n_iter_ < int(self.max_iter) else "max_iter"
        self.cv_value_ = float(np.min(values[used]))
        return self

    def _ridge_folds(self, X, y):
        """Per fold, what the held-out error along the path needs, padded to one shape
        and stacked: `C = X_val X_train^T Q diag(Q^T y / lam)` (the validation
        predictions are `C s`, `s = lam / (lam + alpha)`), `lam`, the validation targets
        and row weights. Rows are centered by the fold's training means."""
        folds = self._folds(X, y)
        parts = []
        for tr, va in folds:
            xm, ym = (X[tr].mean(0), y[tr].mean()) if self.fit_intercept else (0.0, 0.0)
            Xt = X[tr] - xm
            Q, lam, _ = _factor(Xt, np.zeros(X.shape[1]))
            scale = np.where(lam > 0, (Q.T @ (y[tr] - ym)) / np.where(lam > 0, lam, 1.0), 0.0)
            parts.append((((X[va] - xm) @ (Xt.T @ Q)) * scale, lam, y[va] - ym))
        m = max(len(va) for _, va in folds)
        r = max(len(lam) for _, lam, _ in parts)
        k = len(parts)
        C, L = np.zeros((k, m, r)), np.zeros((k, r))
        yv, wv = np.zeros((k, m)), np.zeros((k, m))
        for i, (c, lam, v) in enumerate(parts):
            C[i, : c.shape[0], : c.shape[1]], L[i, : len(lam)] = c, lam
            yv[i, : len(v)], wv[i, : len(v)] = v, 1.0
        return C, L, yv, wv


def _factor(X, mean):
    """`(Q, lam, coef)`: `X - mean = Q diag(sqrt(lam)) V^T` with the host's LAPACK (the
    factorization `RidgeCV` computes, at the same cost), the spectrum's round-off part
    zeroed, and `coef(alpha, Q, lam, y)` the ridge coefficients at `alpha`. The centered
    Gram matrix is formed from `X` by rank-one corrections (no centered copy of `X`).
    The path search then runs on `Q` and `lam` only (`hypergrad.problems.ridge_factors`
    is the same factorization in JAX, for accelerators)."""
    import scipy.linalg
    from scipy.linalg.blas import dsyrk

    n, p = X.shape
    X = np.asarray(X, np.float64, order="C")
    # dsyrk (a symmetric rank-k update) forms one triangle of the Gram matrix: half the
    # flops of the matrix product RidgeCV uses; eigh reads that triangle only.
    if n > p:
        C = dsyrk(1.0, X.T, lower=1)  # X^T X (C-ordered X.T is Fortran-ordered X)
        C -= n * np.outer(mean, mean)
        lam, V = scipy.linalg.eigh(
            C, lower=True, driver="evd", overwrite_a=True, check_finite=False
        )
        lam = _clean(lam, n, p)
        scale = np.where(lam > 0, 1 / np.sqrt(np.where(lam > 0, lam, 1.0)), 0.0)
        Q = (X @ V - np.outer(np.ones(n), mean @ V)) * scale
        return Q, lam, lambda a, Q, lam, y: V @ (np.sqrt(lam) / (lam + a) * (Q.T @ y))
    xm = X @ mean  # (n,): the rows' products with the mean
    K = dsyrk(1.0, X.T, trans=1, lower=1)  # X X^T, from the Fortran-ordered X.T: no copy
    K -= xm[:, None]
    K -= xm[None, :]
    K += mean @ mean
    lam, Q = scipy.linalg.eigh(K, lower=True, driver="evd", overwrite_a=True, check_finite=False)
    lam = _clean(lam, n, p)

    def coef(a, Q, lam, y):
        v = Q @ ((Q.T @ y) / (lam + a))
        return X.T @ v - mean * np.sum(v)  # (X - 1 mean^T)^T v

    return Q, lam, coef


def _clean(lam, n, p):
    lam = np.maximum(lam, 0.0)
    return np.where(lam > np.finfo(float).eps * n * p * lam.max(initial=0.0), lam, 0.0)


def _shrinks(lam, t):
    """`s = lam / (lam + e^t)` (`lam` of shape `(..., r)`, one scalar `t`) with its first
    and second derivatives in `t`, `-s (1 - s)` and `s (1 - s) (1 - 2 s)`, stacked on a
    last axis of 3."""
    s = lam / (lam + np.exp(t))
    d1 = -s * (1.0 - s)
    return np.stack([s, d1, -d1 * (1.0 - 2.0 * s)], axis=-1)


class _LooPath:
    """The leave-one-out mean squared error of ridge on the eigenvectors `Q` (rows x r)
    and eigenvalues `lam` of the centered Gram matrix (`RidgeCV`'s criterion, and
    `hypergrad.problems.loo_mse`'s) as a function of `t = log alpha`: `values(t)` at many
    points, `newton(t)` the value with its first and second derivatives at one, in closed
    form. The leave-one-out residuals are `e = r / d`, `r = y - Q diag(s) Q^T y` the
    residuals and `d = 1 - diag(H)` the hat matrix's complement, each linear in
    `s = lam / (lam + alpha)`; then `e' = (r' - e d') / d` and `e'' = (r'' - 2 e' d' - e
    d'') / d`. Two `(n, r)` products per call. Where `d = 0` (interpolation: `n <= p` and
    `alpha -> 0`) the value is nan."""

    def __init__(self, Q, lam, y, intercept):
        self.A, self.q2, self.lam, self.y = Q * (Q.T @ y), Q**2, lam, y
        self.one = 1.0 - float(intercept) / len(y)  # the intercept's leverage, 1 / n

    def values(self, t):
        S = self.lam[:, None] / (self.lam[:, None] + np.exp(t))  # (r, m)
        e = (self.y[:, None] - self.A @ S) / (self.one - self.q2 @ S)
        return np.einsum("im,im->m", e, e) / len(self.y)

    def newton(self, t):
        S = _shrinks(self.lam, t)  # (r, 3)
        R, D = self.A @ S, self.q2 @ S
        r, d = self.y - R[:, 0], self.one - D[:, 0]
        e = r / d
        e1 = (e * D[:, 1] - R[:, 1]) / d
        e2 = (e * D[:, 2] - R[:, 2] + 2.0 * e1 * D[:, 1]) / d
        n = len(self.y)
        return e @ e / n, 2.0 * (e @ e1) / n, 2.0 * (e1 @ e1 + e @ e2) / n


class _KFoldPath:
    """The K-fold mean squared error of ridge as a function of `t = log alpha`, each
    fold's validation predictions `C s` linear in `s = lam / (lam + alpha)` (see
    `HyperRidge._ridge_folds`), with `values` and `newton` as `_LooPath`'s."""

    def __init__(self, C, lam, yv, wv):
        self.C, self.lam, self.yv = C, lam, yv
        self.w = wv / (wv.sum(1, keepdims=True) * len(wv))  # each fold's mean, then theirs

    def values(self, t):
        S = self.lam[..., None] / (self.lam[..., None] + np.exp(t))  # (k, r, m)
        e = self.C @ S - self.yv[..., None]  # (k, rows, m)
        return np.sum(self.w[..., None] * e**2, (0, 1))

    def newton(self, t):
        E = self.C @ _shrinks(self.lam, t)  # (k, rows, 3)
        e, e1, e2 = E[..., 0] - self.yv, E[..., 1], E[..., 2]
        w = self.w
        return np.sum(w * e**2), 2.0 * np.sum(w * e * e1), 2.0 * np.sum(w * (e1**2 + e * e2))


def _minimize_log(path, lo, hi, tol, scan, max_iter):
    """Minimize a criterion of `log alpha` over `[lo, hi]`: the best of `scan` log-spaced
    points (`path.values`), then Newton steps on its closed-form derivatives
    (`path.newton(t)`: value, first and second derivative), kept inside the scanned
    bracket around the best point and halved while they do not decrease the criterion;
    stops when a step moves `log alpha` by at most `tol`. NumPy on the host: a few small
    matrix products per step, less than a compiled program's dispatch.

    Returns `(log alpha, points, values, newton steps)`, points and values in order of
    evaluation (the scan's first)."""
    grid = np.linspace(lo, hi, scan)
    with np.errstate(divide="ignore", invalid="ignore"):  # see the paths: nan, not a warning
        values = path.values(grid)
        i = int(np.argmin(np.where(np.isnan(values), np.inf, values)))
        left, right = grid[max(i - 1, 0)], grid[min(i + 1, scan - 1)]
        t = float(grid[i])
        f, g, c = path.newton(t)
        points, vals = grid.tolist(), values.tolist()
        k, moved = 0, np.inf
        while k < max_iter and moved > tol:
            step = -g / c if c > 0 else -np.sign(g) * (right - left) / 4
            trial = min(max(t + step, left), right)
            while True:
                ft, gt, ct = path.newton(trial)
                if not (ft > f and abs(trial - t) > tol):
                    break
                trial = t + 0.5 * (trial - t)
            points.append(trial)
            vals.append(ft)
            k += 1
            moved = abs(trial - t) if ft <= f else 0.0
            if ft <= f:
                t, f, g, c = trial, ft, gt, ct
    return t, np.array(points), np.array(vals), k


class HyperLogisticRegression(ClassifierMixin, _HyperLinear):
    """Binary logistic regression with its penalty tuned by cross-validated log-loss and
    HOAG; an alternative to `LogisticRegressionCV(scoring="neg_log_loss")`.

    Args:
      penalty: "l1" (sparse; FISTA inner solver) or "l2" (L-BFGS).
      per_feature: one penalty per feature (`C_` is then an array), started from a
        common value and moved by hypergradient; only "l1" and "l2" both allowed.
      C_bounds: `(lower, upper)` for `C` (default `(1e-4, 1e4)`).
      cv, max_iter, tol, criterion: as `HyperLasso`.

    After `fit`: `C_` (scikit-learn's `C`: loss summed, penalty `||w||_1` or
    `||w||^2 / 2`), `coef_` of shape `(1, p)`, `intercept_` of shape `(1,)`, `classes_`.
    """

    _classifier = True

    def __init__(
        self,
        *,
        penalty="l1",
        per_feature=False,
        cv=5,
        C_bounds=None,
        max_iter=30,
        tol=1e-8,
        criterion="cv",
    ):
        self.penalty, self.per_feature, self.cv, self.C_bounds = penalty, per_feature, cv, C_bounds
        self.max_iter, self.tol, self.criterion = max_iter, tol, criterion

    @property
    def _builder(self):
        return problems.sparse_logistic if self.penalty == "l1" else problems.logistic_rows

    def fit(self, X, y):
        if self.penalty not in ("l1", "l2"):
            raise ValueError(f"penalty must be 'l1' or 'l2', got penalty={self.penalty!r}")
        X, y = self._validate(X, y)
        check_classification_targets(y)
        kind = type_of_target(y, input_name="y")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"y must hold 2 classes, got 1 class: {self.classes_!r}")
        if kind != "binary":
            raise ValueError(f"Only binary classification is supported. Got a {kind} target.")
        Cb = _check_bounds(self.C_bounds, "C_bounds") or (1e-4, 1e4)
        n, p = X.shape
        y01 = (y == self.classes_[1]).astype(np.float64)
        with jax.enable_x64(True), serial_lapack():
            # alpha = 1 / (C n): the penalty on the averaged loss.
            bounds = (1 / (Cb[1] * n), 1 / (Cb[0] * n))
            start = float(np.clip(1.0 / n, *bounds))
            if self.per_feature:
                start = np.full(_padded_shape(X.shape)[1], start)
            res = self._tune(X, y01, bounds, {"alpha": start}, {})
            # C multiplies the summed loss: C = 1 / (alpha n_fold) on the folds, and the
            # refit on all n rows uses alpha = 1 / (C n), as LogisticRegression(C) would.
            nf = self._n_fold_train
            a = np.asarray(res.hparams["alpha"])
            start = jax.tree.map(lambda t: np.mean(t, axis=0), res.params)
            params = self._refit(X, y01, {"alpha": a * nf / n}, {}, start)
        self.C_ = self._to_C(a, p, nf)
        self.coef_ = np.asarray(params["w"])[None, :p]
        self.intercept_ = np.asarray(params["b"]).reshape(1)
        self._record(res, lambda h: {"C": self._to_C(h["alpha"], p, nf)})
        return self

    def _to_C(self, alpha, p, n):
        alpha = np.asarray(alpha)
        return 1 / (alpha[:p] * n) if self.per_feature else float(1 / (alpha * n))

    def decision_function(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X):
        z = self.decision_function(X)
        p1 = 1 / (1 + np.exp(-z))
        return np.stack([1 - p1, p1], axis=1)

    def predict(self, X):
        positive = self.decision_function(X) > 0
        return self.classes_[positive.astype(int)]

    def _losses(self, X, y):
        known = np.isin(y, self.classes_)
        if not np.all(known):
            raise ValueError(f"y has labels the model was not fit on: {np.unique(y[~known])!r}")
        p = self.predict_proba(X)[np.arange(len(y)), np.searchsorted(self.classes_, y)]
        return -np.log(np.clip(p, 1e-300, 1.0))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags
