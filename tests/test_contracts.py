"""Input contracts of the entry points (issue 13, parts 1 to 3): bad hyperparameter keys,
integer dtypes, warm starts of the wrong shape, empty data, values outside a problem's
documented domain, and a solver without the problem's penalty are refused before any
solve, by an error that names the argument and the value; `Implicit` on a run without a
tolerance warns, and raises with `throw=True`."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import problems
from hypergrad.solvers import FISTA, L1, LBFGS, Newton, OptaxSolver, Status, check_status

from ._problems import logistic_problem, ridge_problem


@pytest.fixture(scope="module")
def ridge():
    return ridge_problem()


@pytest.fixture(scope="module")
def regression():
    X, y = problems.synthetic_regression(60, 8, noise=0.5, seed=1)
    return X[:40], y[:40], X[40:], y[40:]


@pytest.mark.parametrize(
    "hparams, pattern",
    [
        ({"alpah": 0.5}, r"unknown key 'alpah' \(did you mean 'alpha'\?\); missing key 'alpha'"),
        ({"alpha": 0.5, "beta": 1.0}, r"unknown key 'beta'.*keys \['alpha'\]"),
        ({}, r"missing key 'alpha'"),
    ],
)
def test_wrong_keys_are_named(ridge, hparams, pattern):
    with pytest.raises(ValueError, match=r"hparams has the wrong keys: " + pattern):
        hg.hypergradient(ridge, hparams)
    with pytest.raises(ValueError, match=pattern):
        hg.outer_loss(ridge, hparams)


def test_misspelled_key_of_two_gets_the_closest(regression):
    pb = problems.elastic_net(*regression, alpha1=0.01, alpha2=0.1)
    with pytest.raises(ValueError, match=r"unknown key 'alpha_2' \(did you mean 'alpha2'\?\)"):
        hg.hypergradient(pb, {"alpha1": 0.01, "alpha_2": 0.1})


def test_wrong_keys_under_jit(ridge):
    # Keys are structure, known while tracing: the same error inside a jitted caller.
    f = jax.jit(lambda h: hg.hypergradient(ridge, h).grad)
    with pytest.raises(ValueError, match=r"unknown key 'alpah' \(did you mean 'alpha'\?\)"):
        f({"alpah": jnp.asarray(0.5)})


def test_integer_hparams_are_converted(ridge):
    ref = hg.hypergradient(ridge, {"alpha": 2.0})
    for value in (2, np.int32(2), jnp.asarray(2)):
        out = hg.hypergradient(ridge, {"alpha": value})
        assert out.grad["alpha"].dtype == ridge.hparams["alpha"].dtype
        np.testing.assert_allclose(out.grad["alpha"], ref.grad["alpha"], rtol=1e-12)
    sol_int = hg.solve(ridge.inner, ridge.init_params, {"alpha": 2}, ridge.train, solver=Newton())
    sol = hg.solve(ridge.inner, ridge.init_params, {"alpha": 2.0}, ridge.train, solver=Newton())
    np.testing.assert_allclose(sol_int.params, sol.params, rtol=1e-12)


@pytest.mark.parametrize("bad", ["0.5", None, object()])
def test_non_numbers_are_refused_by_name(ridge, bad):
    with pytest.raises((TypeError, ValueError), match=r"hparams\['alpha'\]|missing key 'alpha'"):
        hg.hypergradient(ridge, {"alpha": bad})


def test_warm_starts_of_the_wrong_shape(ridge):
    with pytest.raises(ValueError, match=r"init_params must have the shape.*\(5,\).*\(7,\)"):
        hg.hypergradient(ridge, ridge.hparams, init_params=jnp.zeros(7))
    with pytest.raises(ValueError, match=r"init_adjoint must have the shape.*\(5,\).*\(3,\)"):
        hg.hypergradient(ridge, ridge.hparams, init_adjoint=jnp.zeros(3))
    with pytest.raises(ValueError, match=r"init_adjoint must have the structure"):
        hg.hypergradient(ridge, ridge.hparams, init_adjoint={"w": jnp.zeros(5)})


def test_empty_training_or_validation_data(regression):
    X, y, Xv, yv = regression
    with pytest.raises(ValueError, match=r"problem.train has no rows"):
        hg.hypergradient(problems.ridge(X[:0], y[:0], Xv, yv), {"alpha": 0.5})
    with pytest.raises(ValueError, match=r"problem.val has no rows"):
        hg.hypergradient(problems.ridge(X, y, Xv[:0], yv[:0]), {"alpha": 0.5})
    # Rows with weights: a fold whose validation rows all have weight 0 is empty too.
    pb = problems.lasso(X, y, X, y, alpha=0.1, weights=(np.ones(40), np.zeros(40)))
    with pytest.raises(ValueError, match=r"problem.val has no rows"):
        hg.hypergradient(pb, pb.hparams)


def test_negative_penalties_are_refused(regression):
    X, y, Xv, yv = regression
    ridge = problems.ridge(X, y, Xv, yv)
    lasso = problems.lasso(X, y, Xv, yv)
    logistic = logistic_problem()
    enet = problems.elastic_net(X, y, Xv, yv, alpha1=0.01, alpha2=0.1)
    for pb, h, key, text in (
        (ridge, {"alpha": -1.0}, "alpha", "-1.0"),
        (lasso, {"alpha": -0.1}, "alpha", "-0.1"),
        (logistic, {"alpha": -0.5}, "alpha", "-0.5"),
        (enet, {"alpha1": 0.01, "alpha2": -0.1}, "alpha2", "-0.1"),
    ):
        word = "positive" if pb.name == "logistic" else "non-negative"
        pattern = rf"hparams\['{key}'\] must be {word}.*{pb.name}.*={text}"
        with pytest.raises(ValueError, match=pattern):
            hg.hypergradient(pb, h)
    # Per-feature penalties: one negative entry is enough.
    pf = ridge_problem(per_feature=True)
    with pytest.raises(ValueError, match=r"hparams\['alpha'\] must be non-negative"):
        hg.hypergradient(pf, {"alpha": jnp.asarray([0.5, 0.5, -0.5, 0.5, 0.5])})
    # The boundary of the domain is in it.
    assert np.isfinite(hg.hypergradient(ridge, {"alpha": 0.0}).value)


def test_unpenalized_logistic_regression_is_refused_on_separable_data():
    # Linearly separable classes: without a penalty the loss has no minimizer (the
    # weights grow without bound), yet the gradient vanishes, so a solver stops and calls
    # an arbitrary point converged. Shown here by the loss falling along a ray to zero.
    rng = np.random.default_rng(3)
    X = np.r_[rng.standard_normal((20, 3)) + 3, rng.standard_normal((20, 3)) - 3]
    y = np.r_[np.ones(20), np.zeros(20)]
    pb = problems.logistic(X, y, X, y, alpha=0.1)
    ray = lambda t: {"w": t * jnp.ones(3), "b": jnp.zeros(())}  # noqa: E731
    losses = [float(pb.inner(ray(t), {"alpha": 0.0}, pb.train)) for t in (0.1, 0.3, 1.0)]
    assert losses[0] > losses[1] > losses[2] and losses[2] < 1e-2
    with pytest.raises(ValueError, match=r"hparams\['alpha'\] must be positive.*separable.*0\.0"):
        hg.hypergradient(pb, {"alpha": 0.0})
    for build in (lambda: logistic_problem(per_feature=True), lambda: pb):
        p = build()
        zero = jax.tree.map(jnp.zeros_like, p.hparams)
        with pytest.raises(ValueError, match=r"hparams\['alpha'\] must be positive"):
            hg.hypergradient(p, zero)


def test_domain_under_jit_with_throw(ridge):
    # Traced values are checked when the program runs, with throw=True only.
    f = jax.jit(lambda h: hg.hypergradient(ridge, h, throw=True).value)
    assert np.isfinite(f({"alpha": jnp.asarray(0.5)}))
    with pytest.raises(Exception, match=r"hparams\['alpha'\] must be non-negative.*-1"):
        jax.block_until_ready(f({"alpha": jnp.asarray(-1.0)}))


def test_domains_cover_every_ready_problem_key(regression):
    # The table of domains names exactly the hyperparameters each ready problem has.
    from hypergrad._contracts import DOMAINS

    X, y, Xv, yv = regression
    s = (y > np.median(y)).astype(float)
    ready = [
        problems.ridge(X, y, Xv, yv),
        problems.lasso(X, y, Xv, yv),
        problems.weighted_lasso(X, y, Xv, yv),
        problems.elastic_net(X, y, Xv, yv, alpha1=0.01, alpha2=0.1),
        problems.sparse_logistic(X, s, Xv, (yv > np.median(y)).astype(float)),
        logistic_problem(),
        logistic_problem(per_feature=True),
    ]
    for pb in ready:
        assert set(DOMAINS[pb.name]) == set(pb.hparams), pb.name


def test_a_solver_without_the_penalty_is_refused(regression):
    lasso = problems.lasso(*regression, alpha=0.05)
    with pytest.raises(ValueError, match=r"solver=LBFGS.*does not carry problem 'lasso'.*L1"):
        hg.hypergradient(lasso, lasso.hparams, solver=LBFGS())
    with pytest.raises(ValueError, match=r"does not carry problem 'lasso'"):
        hg.outer_loss(lasso, lasso.hparams, solver=LBFGS(), method=hg.Unrolled())
    # One penalty of two is not the problem's penalty either.
    enet = problems.elastic_net(*regression, alpha1=0.01, alpha2=0.1)
    with pytest.raises(ValueError, match=r"does not carry problem 'elastic_net'.*ElasticNet"):
        hg.hypergradient(enet, enet.hparams, solver=FISTA(L1("alpha1"), max_steps=10))


def test_documented_solver_swap_gives_the_same_hypergradient(regression):
    # The documented way to swap the solver: a proximal solver holding the problem's prox.
    lasso = problems.lasso(*regression, alpha=0.05)
    ref = hg.hypergradient(lasso, lasso.hparams, throw=True)
    swapped = FISTA(lasso.solver.prox, max_steps=20000, tol=1e-12)
    out = hg.hypergradient(lasso, lasso.hparams, solver=swapped, throw=True)
    np.testing.assert_allclose(out.grad["alpha"], ref.grad["alpha"], rtol=1e-5)
    np.testing.assert_allclose(out.value, ref.value, rtol=1e-8)


def test_a_run_without_tolerance_is_not_called_converged(ridge):
    sgd = OptaxSolver(optax.sgd(0.05), max_steps=20, tol=None)
    sol = hg.solve(
        ridge.inner, ridge.init_params, ridge.hparams, ridge.train, solver=sgd, method=hg.Unrolled()
    )
    assert Status.name(sol.status) == "steps_done"
    assert int(sol.stats["num_steps"]) == 20
    # Differentiating the fixed-step run itself is what it is for: no failure, no warning.
    check_status(sol)
    # With a tolerance the same solver reports converged (or max_steps), not steps_done.
    with_tol = OptaxSolver(optax.sgd(0.05), max_steps=20, tol=1e-30)
    sol = hg.solve(
        ridge.inner,
        ridge.init_params,
        ridge.hparams,
        ridge.train,
        solver=with_tol,
        method=hg.Unrolled(),
    )
    assert Status.name(sol.status) == "max_steps"


def test_implicit_on_a_run_far_from_stationary_warns_or_raises(ridge):
    # 20 SGD steps, no tolerance: a fixed-step run, not a stationary point.
    sgd = OptaxSolver(optax.sgd(0.05), max_steps=20, tol=None)
    with pytest.warns(RuntimeWarning, match=r"hypergradient: method=Implicit.*residual_tol"):
        out = hg.hypergradient(ridge, ridge.hparams, solver=sgd, method=hg.Implicit())
    assert Status.name(out.solution.status) == "not_stationary"
    # The threshold, checked against the optimality residual computed here by autodiff.
    residual = jax.grad(ridge.inner)(out.solution.params, ridge.hparams, ridge.train)
    start = jax.grad(ridge.inner)(ridge.init_params, ridge.hparams, ridge.train)
    bound = 1e-3 * max(1.0, float(jnp.linalg.norm(start)))
    assert float(jnp.linalg.norm(residual)) > bound
    with pytest.raises(RuntimeError, match=r"hypergradient: status 'not_stationary'"):
        hg.hypergradient(ridge, ridge.hparams, solver=sgd, method=hg.Implicit(), throw=True)
    with pytest.raises(RuntimeError, match=r"solve: status 'not_stationary'"):
        hg.solve(ridge.inner, ridge.init_params, ridge.hparams, ridge.train, solver=sgd, throw=True)
    # A looser documented threshold accepts the same run.
    loose = hg.Implicit(residual_tol=10.0)
    out = hg.hypergradient(ridge, ridge.hparams, solver=sgd, method=loose, throw=True)
    assert Status.name(out.solution.status) == "steps_done"
    # Under jit the status reports it (no host check in the program).
    f = jax.jit(lambda h: hg.hypergradient(ridge, h, solver=sgd, method=hg.Implicit()))
    assert Status.name(f(ridge.hparams).solution.status) == "not_stationary"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # A fixed-step run that does reach stationarity (Newton on a quadratic: one step).
        newton = Newton(max_steps=3, tol=None)
        out = hg.hypergradient(
            ridge, ridge.hparams, solver=newton, method=hg.Implicit(), throw=True
        )
        assert Status.name(out.solution.status) == "steps_done"
        hg.hypergradient(ridge, ridge.hparams, solver=sgd, method=hg.Unrolled())
        hg.hypergradient(ridge, ridge.hparams, solver=Newton(), method=hg.Implicit(), throw=True)


def test_implicit_residual_tol_is_checked():
    with pytest.raises(ValueError, match=r"residual_tol must be a positive number, got -1"):
        hg.Implicit(residual_tol=-1)


def test_tune_names_a_misspelled_key(ridge):
    from hypergrad.space import Real, Space
    from hypergrad.tune import tune

    with pytest.raises(ValueError, match=r"without a hyperparameter \['alpah'\]"):
        tune(ridge, Space({"alpah": Real(1e-4, 1e2, log=True)}), population=2, steps=2)


# hoag and descend check their own arguments before calling hypergradient: both call
# hypergrad._contracts.check_keys first.
def test_hoag_names_a_misspelled_key(ridge):
    from hypergrad.tune import hoag

    with pytest.raises(ValueError, match=r"did you mean 'alpha'"):
        hoag(ridge, {"alpah": 0.5}, max_iter=2)


def test_descend_names_a_misspelled_key(ridge):
    from hypergrad.tune import descend

    with pytest.raises(ValueError, match=r"did you mean 'alpha'"):
        descend(ridge, {"alpah": 0.5}, steps=2)
