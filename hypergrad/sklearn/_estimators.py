"""scikit-learn estimators that tune their own penalty by hypergradient (HOAG).

`HyperLasso`, `HyperElasticNet`, `HyperRidge` and `HyperLogisticRegression` are drop-in
alternatives to `LassoCV`, `ElasticNetCV`, `RidgeCV` and `LogisticRegressionCV`: `fit`
minimizes the K-fold cross-validation loss (mean squared error, or log-loss) over the
penalty with `hypergrad.tune.hoag`, then refits on all rows. After `fit`: `alpha_` (or
`C_`), `coef_`, `intercept_`, `history_` (one entry per outer step: penalty, criterion,
inner iterations, wall time), `n_iter_` (outer steps), `n_inner_solves_`.

Penalties are in scikit-learn's scale: `HyperLasso.alpha_` is `Lasso(alpha=...)`'s
alpha, `HyperElasticNet` has `alpha_` and `l1_ratio_`, `HyperRidge.alpha_` is `Ridge`'s
(on the un-averaged squared error), `HyperLogisticRegression.C_` is `LogisticRegression`'s
`C` (an array with `per_feature=True`: then `C_[j]` is feature j's, a model no single-C
estimator can express).

Shapes are padded to buckets (rows and columns to the next power of two, with zero-weight
rows and zero columns, which leave the fit unchanged) so that fitting data of nearby
shapes reuses compiled programs. The computation runs in float64 whatever JAX's default.
"""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import check_cv
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import problems
from ..solvers import run
from ..tune import hoag


def _bucket(n, least):
    return max(least, 1 << int(np.ceil(np.log2(max(n, 1)))))


def _pad(X, y):
    n, p = X.shape
    Xp = np.zeros((_bucket(n, 128), _bucket(p, 16)))
    Xp[:n, :p] = X
    yp = np.zeros(Xp.shape[0])
    yp[:n] = y
    return Xp, yp


@jax.jit
def _solve(pr, h):
    return run(pr.solver, pr.inner, pr.init_params, h, pr.train)


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
        """HOAG over the folds on padded data: `(hparams, result)`."""
        folds = self._folds(X, y)
        self._n_fold_train = float(np.mean([len(t) for t, _ in folds]))
        Xp, yp = _pad(X, y)
        center = getattr(self, "fit_intercept", False)
        stacked = problems.kfold(self._builder, Xp, yp, folds, tol=1e-10, center=center, **kwargs)
        lo, hi = bounds
        res = hoag(
            stacked,
            start,
            lower=lo,
            upper=hi,
            max_iter=int(self.max_iter),
            tol=1e-4,
            min_tol=self.tol,
        )
        return res

    def _refit(self, X, y, hparams, kwargs):
        Xp, yp = _pad(X, y)
        w = np.zeros(len(yp))
        w[: len(y)] = 1.0
        pr = self._builder(Xp, yp, Xp, yp, weights=(w, w), tol=1e-10, **kwargs)
        h = {k: jnp.asarray(v) for k, v in hparams.items()}
        return jax.tree.map(np.asarray, _solve(pr, h).params)

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

    def _validate(self, X, y):
        self._check_common()
        X, y = validate_data(self, X, y, y_numeric=not self._classifier, dtype=np.float64)
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


class HyperLasso(_HyperRegressor):
    """The lasso with its `alpha` tuned by K-fold cross-validation and HOAG; an
    alternative to `LassoCV`.

    Args:
      cv: folds as in scikit-learn (an int K, a splitter, or `(train, test)` pairs).
      alpha_bounds: `(lower, upper)` for `alpha` (default
        `(alpha_max * 1e-4, alpha_max)`, `alpha_max` the smallest alpha zeroing the fit).
      max_iter: outer (HOAG) steps.
      tol: the final inner and adjoint tolerance (relative).
      fit_intercept: center `X` and `y` and fit an intercept.
      criterion: "cv" (K-fold mean squared error).

    Example:
      >>> from sklearn.datasets import load_diabetes
      >>> from hypergrad.sklearn import HyperLasso
      >>> X, y = load_diabetes(return_X_y=True)
      >>> est = HyperLasso(max_iter=10).fit(X, y)
      >>> est.alpha_ > 0 and len(est.history_) == 10
      True
    """

    _builder = staticmethod(problems.lasso)

    def __init__(
        self, *, cv=5, alpha_bounds=None, max_iter=30, tol=1e-7, fit_intercept=True, criterion="cv"
    ):
        self.cv, self.alpha_bounds, self.max_iter = cv, alpha_bounds, max_iter
        self.tol, self.fit_intercept, self.criterion = tol, fit_intercept, criterion

    def fit(self, X, y):
        X, y = self._validate(X, y)
        bounds = _check_bounds(self.alpha_bounds, "alpha_bounds")
        with jax.enable_x64(True):
            Xc, yc = self._center(X, y)
            amax = max(problems.alpha_max(Xc, yc), 1e-12)
            bounds = bounds or (amax * 1e-4, amax)
            start = float(np.clip(amax / 10, *bounds))
            res = self._tune(Xc, yc, bounds, {"alpha": start}, {})
            self.alpha_ = float(res.hparams["alpha"])
            w = self._refit(Xc, yc, {"alpha": self.alpha_}, {})
        self._finish(w, X.shape[1])
        self.history_ = self._history(res, lambda h: {"alpha": float(h["alpha"])})
        self.n_iter_, self.n_inner_solves_ = len(res.history), res.num_solves
        return self


class HyperElasticNet(_HyperRegressor):
    """The elastic net with both penalties tuned by cross-validation and HOAG (a
    continuous search over `alpha` and `l1_ratio`); an alternative to `ElasticNetCV`.

    Tunes `alpha1 = alpha * l1_ratio` and `alpha2 = alpha * (1 - l1_ratio)` in log space,
    each within `alpha_bounds`. Same arguments as `HyperLasso`. After `fit`: `alpha_`,
    `l1_ratio_`, `coef_`, `intercept_`, `history_`.
    """

    _builder = staticmethod(problems.elastic_net)

    def __init__(
        self, *, cv=5, alpha_bounds=None, max_iter=30, tol=1e-7, fit_intercept=True, criterion="cv"
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
        with jax.enable_x64(True):
            Xc, yc = self._center(X, y)
            amax = max(problems.alpha_max(Xc, yc), 1e-12)
            bounds = bounds or (amax * 1e-4, amax)
            s = float(np.clip(amax / 20, *bounds))
            res = self._tune(Xc, yc, bounds, {"alpha1": s, "alpha2": s}, {})
            h = {k: float(v) for k, v in res.hparams.items()}
            w = self._refit(Xc, yc, h, {})
        self.alpha_, self.l1_ratio_ = to_sk(h)["alpha"], to_sk(h)["l1_ratio"]
        self._finish(w, X.shape[1])
        self.history_ = self._history(res, to_sk)
        self.n_iter_, self.n_inner_solves_ = len(res.history), res.num_solves
        return self


class HyperRidge(_HyperRegressor):
    """Ridge with `alpha` tuned by cross-validation and HOAG; an alternative to `RidgeCV`.

    `alpha_` is on scikit-learn's scale (`||y - X w||^2 + alpha ||w||^2`, not averaged);
    `alpha_bounds` too. Same other arguments as `HyperLasso`.
    """

    _builder = staticmethod(problems.ridge_rows)

    def __init__(
        self, *, cv=5, alpha_bounds=None, max_iter=30, tol=1e-7, fit_intercept=True, criterion="cv"
    ):
        self.cv, self.alpha_bounds, self.max_iter = cv, alpha_bounds, max_iter
        self.tol, self.fit_intercept, self.criterion = tol, fit_intercept, criterion

    def fit(self, X, y):
        X, y = self._validate(X, y)
        bounds = _check_bounds(self.alpha_bounds, "alpha_bounds")
        n = X.shape[0]
        with jax.enable_x64(True):
            Xc, yc = self._center(X, y)
            # Our alpha multiplies the averaged loss: scikit-learn's alpha over n.
            b = (bounds[0] / n, bounds[1] / n) if bounds else (1e-6, 1e4)
            res = self._tune(Xc, yc, b, {"alpha": float(np.clip(1.0 / n, *b))}, {})
            # scikit-learn's alpha is on the summed loss: the folds' alpha times their
            # number of training rows, and the refit on all n rows uses it over n.
            nf = self._n_fold_train
            self.alpha_ = float(res.hparams["alpha"]) * nf
            w = self._refit(Xc, yc, {"alpha": self.alpha_ / n}, {})
        self._finish(w, X.shape[1])
        self.history_ = self._history(res, lambda h: {"alpha": float(h["alpha"]) * nf})
        self.n_iter_, self.n_inner_solves_ = len(res.history), res.num_solves
        return self


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
        tol=1e-7,
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
        with jax.enable_x64(True):
            # alpha = 1 / (C n): the penalty on the averaged loss.
            bounds = (1 / (Cb[1] * n), 1 / (Cb[0] * n))
            start = float(np.clip(1.0 / n, *bounds))
            if self.per_feature:
                start = np.full(_bucket(p, 16), start)
            res = self._tune(X, y01, bounds, {"alpha": start}, {})
            # C multiplies the summed loss: C = 1 / (alpha n_fold) on the folds, and the
            # refit on all n rows uses alpha = 1 / (C n), as LogisticRegression(C) would.
            nf = self._n_fold_train
            a = np.asarray(res.hparams["alpha"])
            params = self._refit(X, y01, {"alpha": a * nf / n}, {})
        self.C_ = self._to_C(a, p, nf)
        self.coef_ = np.asarray(params["w"])[None, :p]
        self.intercept_ = np.asarray(params["b"]).reshape(1)
        self.history_ = self._history(res, lambda h: {"C": self._to_C(h["alpha"], p, nf)})
        self.n_iter_, self.n_inner_solves_ = len(res.history), res.num_solves
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags
