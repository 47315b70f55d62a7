"""hypergrad.sklearn: scikit-learn's estimator checks, agreement with the scikit-learn CV
estimators on the bundled data, and rejection of bad input."""

import warnings

import numpy as np
import pytest
from scipy.special import expit
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import (
    ElasticNet,
    ElasticNetCV,
    Lasso,
    LassoCV,
    LogisticRegression,
    LogisticRegressionCV,
    Ridge,
    RidgeCV,
)
from sklearn.metrics import log_loss
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from benchmarks.regularization import fit_logistic
from hypergrad.sklearn import HyperElasticNet, HyperLasso, HyperLogisticRegression, HyperRidge


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """scikit-learn and scipy with one BLAS thread: the suite runs with 2 workers on 2
    cores, where two BLAS threads per worker made a 5-fold CV of small logistic fits take
    11 s instead of 0.3 s. JAX does not use these threads."""
    with threadpool_limits(1):
        yield


# Small outer budgets: the checks test the estimator contract, not the tuning.
FAST = [
    HyperLasso(cv=3, max_iter=3),
    HyperElasticNet(cv=3, max_iter=3),
    HyperRidge(cv=3, max_iter=3),
    HyperLogisticRegression(cv=3, max_iter=3),
]


@parametrize_with_checks(FAST)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _cv_mse(model, X, y, cv):
    return -cross_val_score(model, X, y, cv=cv, scoring="neg_mean_squared_error").mean()


# "Within 0.5%": the CV criterion of the penalty we choose, refitted by scikit-learn's
# own estimator on the same folds, is at most 0.5% above that of the CV estimator's choice.
@pytest.mark.parametrize("kind", ["lasso", "enet", "ridge"])
def test_regressors_match_sklearn_cv(diabetes, kind):
    X, y = diabetes
    cv = KFold(5)
    if kind == "lasso":
        ours, ref = HyperLasso(cv=cv).fit(X, y), LassoCV(cv=cv).fit(X, y)
        a, b = Lasso(alpha=ours.alpha_), Lasso(alpha=ref.alpha_)
    elif kind == "enet":
        ours = HyperElasticNet(cv=cv).fit(X, y)
        ref = ElasticNetCV(cv=cv, l1_ratio=[0.1, 0.5, 0.9, 1.0]).fit(X, y)
        a = ElasticNet(alpha=ours.alpha_, l1_ratio=ours.l1_ratio_)
        b = ElasticNet(alpha=ref.alpha_, l1_ratio=ref.l1_ratio_)
    else:
        ours = HyperRidge(cv=cv).fit(X, y)
        ref = RidgeCV(alphas=np.logspace(-3, 3, 100), cv=cv).fit(X, y)
        a, b = Ridge(alpha=ours.alpha_), Ridge(alpha=ref.alpha_)
    assert _cv_mse(a, X, y, cv) <= 1.005 * _cv_mse(b, X, y, cv)
    assert ours.coef_.shape == (X.shape[1],) and np.isfinite(ours.intercept_)
    assert ours.score(X, y) > 0.4  # R^2 of a sane linear fit on diabetes (~0.5)
    # The search stops on convergence, before its cap of 30 steps.
    if kind == "ridge":  # a scan, then Newton steps on log alpha
        assert ours.n_iter_ < 30 and ours.stop_reason_ == "step"
    else:
        assert len(ours.history_) == ours.n_iter_ < 30
        assert ours.stop_reason_ in ("gradient", "step", "stall")


def _loo_mse_by_refits(X, y, alpha):
    """Leave-one-out mean squared error of `Ridge(alpha)` by n explicit refits."""
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        model = Ridge(alpha=alpha, solver="cholesky").fit(X[keep], y[keep])
        errors.append(y[i] - model.predict(X[i : i + 1])[0])
    return float(np.mean(np.square(errors)))


@pytest.mark.parametrize("shape", [(30, 6), (18, 40)])  # rows > and < features
@pytest.mark.parametrize("cv", [None, 3])
def test_ridge_search_derivatives(shape, cv):
    """HyperRidge's search runs on closed-form values and first and second derivatives in
    log alpha (leave-one-out, K-fold): values against explicit refits by scikit-learn,
    derivatives against central differences of those refits."""
    from hypergrad.sklearn._estimators import _factor, _KFoldPath, _LooPath

    rng = np.random.default_rng(3)
    X = rng.standard_normal(shape) @ np.diag(np.linspace(0.3, 2.0, shape[1]))
    y = X[:, :3] @ np.array([1.0, -2.0, 0.5]) + 0.7 * rng.standard_normal(shape[0]) + 4.0
    if cv is None:
        Q, lam, _ = _factor(X, X.mean(0))
        path = _LooPath(Q, lam, y - y.mean(), intercept=True)
        reference = lambda a: _loo_mse_by_refits(X, y, a)  # noqa: E731
    else:
        folds = KFold(cv)
        path = _KFoldPath(*HyperRidge(cv=folds)._ridge_folds(X, y))
        reference = lambda a: _cv_mse(Ridge(alpha=a, solver="cholesky"), X, y, folds)  # noqa: E731
    t = np.log([0.05, 1.0, 20.0])
    values = path.values(t)
    h = 1e-3
    for i, ti in enumerate(t):
        lo, mid, hi = (reference(np.exp(ti + d)) for d in (-h, 0.0, h))
        f, g, c = path.newton(ti)
        np.testing.assert_allclose([f, values[i]], mid, rtol=1e-9)
        np.testing.assert_allclose(g, (hi - lo) / (2 * h), rtol=1e-5, atol=1e-9 * mid)
        np.testing.assert_allclose(c, (hi - 2 * mid + lo) / h**2, rtol=1e-3, atol=1e-6 * mid)


def _l1_logistic_cv_loss(X, y, cv, C):
    """The CV log-loss of `LogisticRegression(C, l1_ratio=1)` solved exactly (L-BFGS-B).
    saga, scikit-learn's L1 solver, stops at max_iter=5000 on these data off by up to 4%
    at tol 1e-6 (against tol 1e-8, which takes ~50 s), more than the 0.5% checked."""
    losses = []
    for tr, va in cv.split(X, y):
        w, b, _ = fit_logistic(X[tr], y[tr], C, l1=True)
        losses.append(log_loss(y[va], expit(X[va] @ w + b)))
    return float(np.mean(losses))


@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_logistic_matches_sklearn_cv_and_reports_C(cancer, penalty):
    X, y = cancer
    cv = StratifiedKFold(5)
    ours = HyperLogisticRegression(penalty=penalty, cv=cv).fit(X, y)
    # saga's choice depends on its max_iter (C=0.36 at 1000; 2.8 at the default 100,
    # where it has not converged): 1000, as a user seeking accuracy would. lbfgs chooses
    # the same C at its default 100 as at 1000.
    ref = LogisticRegressionCV(
        Cs=10,
        l1_ratios=(1.0 if penalty == "l1" else 0.0,),
        solver="saga" if penalty == "l1" else "lbfgs",
        scoring="neg_log_loss",
        cv=cv,
        max_iter=1000 if penalty == "l1" else 100,
        use_legacy_attributes=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # large C: max_iter reached
        ref.fit(X, y)
    if penalty == "l1":
        loss = lambda C: _l1_logistic_cv_loss(X, y, cv, C)  # noqa: E731
    else:

        def loss(C):
            m = LogisticRegression(C=C, l1_ratio=0.0, max_iter=5000, tol=1e-8)
            return -cross_val_score(m, X, y, cv=cv, scoring="neg_log_loss").mean()

    assert loss(ours.C_) <= 1.005 * loss(float(np.ravel(ref.C_)[0]))
    assert ours.score(X, y) > 0.95
    # C_ is the best outer step's penalty: the history shows it on the same scale.
    best = min(ours.history_, key=lambda e: e["criterion"])
    assert best["C"] == pytest.approx(ours.C_, rel=1e-12)
    assert len(ours.history_) == ours.n_iter_ <= 30


def test_per_feature_logistic(cancer):
    X, y = cancer
    est = HyperLogisticRegression(penalty="l2", per_feature=True, cv=3, max_iter=5).fit(X, y)
    assert est.C_.shape == (X.shape[1],) and np.all(est.C_ > 0)
    assert len(np.unique(np.round(est.C_, 12))) > 1  # the penalties moved apart


def _bad_y(kind, y):
    if kind == "nan":
        y = y.copy()
        y[3] = np.nan
    elif kind == "short":
        y = y[:-1]
    elif kind == "strings":
        y = np.where(y > 0.5, "yes", "no")
    return y


@pytest.mark.parametrize(
    "make, y_kind, match",
    [
        (lambda: HyperLasso(alpha_bounds=(1.0, 0.1)), None, r"alpha_bounds.*lower < upper"),
        (lambda: HyperLasso(alpha_bounds=(0.0, 1.0)), None, r"alpha_bounds.*positive"),
        (lambda: HyperLasso(alpha_bounds=(-1.0, 1.0)), None, r"alpha_bounds.*positive"),
        (lambda: HyperLogisticRegression(C_bounds=(10.0, 1.0)), None, r"C_bounds.*lower < upper"),
        (lambda: HyperLasso(), "nan", "NaN"),
        (lambda: HyperLasso(), "short", "inconsistent numbers of samples"),
        (lambda: HyperLasso(criterion="aic"), None, "criterion must be one of"),
        (lambda: HyperLogisticRegression(penalty="l0"), None, "penalty must be"),
        (lambda: HyperRidge(), "strings", r"y must hold numbers for the regressor HyperRidge"),
        (lambda: HyperLasso(), "strings", r"y must hold numbers .*HyperLasso.*'(yes|no)'"),
    ],
)
def test_bad_input_raises_and_fits_nothing(make, y_kind, match):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4))
    y = _bad_y(y_kind, (rng.random(30) > 0.5).astype(float))
    est = make()
    with pytest.raises(ValueError, match=match):
        est.fit(X, y)
    assert not hasattr(est, "coef_")


def test_validation_gap_compares_the_cv_criterion_with_held_out_loss(diabetes, cancer):
    from hypergrad.analysis import ValidationOverfitWarning

    X, y = diabetes
    Xtr, ytr, Xte, yte = X[:350], y[:350], X[350:], y[350:]
    cv = KFold(5)
    lasso = HyperLasso(cv=cv).fit(Xtr, ytr)
    # cv_value_ is the K-fold mean squared error at alpha_ (scikit-learn's folds and fits).
    ref = -cross_val_score(
        Lasso(alpha=lasso.alpha_, tol=1e-12, max_iter=100000),
        Xtr,
        ytr,
        cv=cv,
        scoring="neg_mean_squared_error",
    ).mean()
    np.testing.assert_allclose(lasso.cv_value_, ref, rtol=1e-4)
    gap = lasso.validation_gap(Xte, yte, warn=False)
    np.testing.assert_allclose(gap.test, np.mean((yte - lasso.predict(Xte)) ** 2), rtol=1e-12)
    assert gap.val == lasso.cv_value_
    # Leave-one-out for ridge: RidgeCV's own criterion at the same alpha.
    ridge = HyperRidge().fit(Xtr, ytr)
    loo = RidgeCV(alphas=[ridge.alpha_], scoring="neg_mean_squared_error").fit(Xtr, ytr)
    np.testing.assert_allclose(ridge.cv_value_, -loo.best_score_, rtol=1e-6)
    # A threshold of zero warns whenever the test loss is above the CV criterion.
    with pytest.warns(ValidationOverfitWarning) if gap.gap > 0 else warnings.catch_warnings():
        lasso.validation_gap(Xte, yte, threshold=0.0)
    # The classifier's measure is the log-loss, labels as given to fit.
    Xc, yc = cancer
    labels = np.array(["benign", "malignant"])[yc]
    clf = HyperLogisticRegression(cv=3).fit(Xc[:400], labels[:400])
    gap = clf.validation_gap(Xc[400:], labels[400:], warn=False)
    np.testing.assert_allclose(
        gap.test,
        log_loss(labels[400:], clf.predict_proba(Xc[400:]), labels=clf.classes_),
        rtol=1e-9,
    )
    with pytest.raises(ValueError, match="labels the model was not fit on"):
        clf.validation_gap(Xc[400:410], np.array(["other"] * 10))
