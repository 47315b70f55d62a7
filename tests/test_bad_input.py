"""Bad input is refused at the API boundary, naming the argument and the value."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import problems
from hypergrad.solvers import LBFGS, Newton, OptaxSolver

from ._problems import ridge_problem


@pytest.fixture(scope="module")
def ridge():
    return ridge_problem()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_hparams(ridge, bad):
    with pytest.raises(ValueError, match=r"hparams\['alpha'\] must be finite.*" + str(bad)):
        hg.hypergradient(ridge, {"alpha": jnp.asarray(bad)})
    with pytest.raises(ValueError, match=r"hparams\['alpha'\] must be finite"):
        hg.solve(ridge.inner, ridge.init_params, {"alpha": bad}, ridge.train, solver=Newton())


def test_mismatched_hparam_shape(ridge):
    with pytest.raises(ValueError, match=r"hparams\['alpha'\].*shape \(5,\).*\(3,\)"):
        hg.hypergradient(ridge, {"alpha": jnp.ones(3)})


def test_mismatched_param_shape(ridge):
    with pytest.raises(ValueError, match="init_params"):
        hg.solve(ridge.inner, jnp.zeros(7), ridge.hparams, ridge.train, solver=Newton())


def test_mismatched_data_lengths():
    X, y = problems.synthetic_regression(20, 3)
    with pytest.raises(ValueError, match=r"X_train and y_train.*\(20, 3\).*\(19,\)"):
        problems.ridge(X, y[:19], X, y)


@pytest.mark.parametrize("steps", [-1, 2.5, True])
def test_bad_number_of_steps(steps):
    with pytest.raises(ValueError, match=f"max_steps.*{steps!r}"):
        OptaxSolver(optax.sgd(0.1), max_steps=steps)
    with pytest.raises(ValueError, match=f"max_steps.*{steps!r}"):
        Newton(max_steps=steps)


def test_bad_truncation():
    with pytest.raises(ValueError, match="k must be a positive int, got k=0"):
        hg.Truncated(0)
    pb = ridge_problem()
    with pytest.raises(ValueError, match=r"Truncated\(k=20\) is longer than the unroll.*10"):
        hg.outer_loss(
            pb, pb.hparams, solver=OptaxSolver(optax.sgd(0.1), 10), method=hg.Truncated(20)
        )


@pytest.mark.parametrize("method", ["implicit", hg.CG(), 3])
def test_unknown_method(ridge, method):
    with pytest.raises(TypeError, match="method must be a hypergrad method"):
        hg.solve(
            ridge.inner,
            ridge.init_params,
            ridge.hparams,
            ridge.train,
            solver=Newton(),
            method=method,
        )


def test_unknown_mode_and_bad_options():
    with pytest.raises(ValueError, match="mode must be one of.*'sideways'"):
        hg.Unrolled(mode="sideways")
    with pytest.raises(ValueError, match="checkpoints=0"):
        hg.Unrolled(checkpoints=0)
    with pytest.raises(ValueError, match="checkpoints only apply"):
        hg.Unrolled(mode="forward", checkpoints=4)
    with pytest.raises(ValueError, match="tol=-1"):
        hg.CG(tol=-1)
    with pytest.raises(ValueError, match="num_terms=-2"):
        hg.Neumann(num_terms=-2)
    with pytest.raises(TypeError, match="linear_solver must be"):
        hg.Implicit("cg")
    with pytest.raises(TypeError, match="optimizer must be"):
        OptaxSolver("sgd")


def test_unknown_solver(ridge):
    with pytest.raises(TypeError, match="solver must be"):
        hg.solve(ridge.inner, ridge.init_params, ridge.hparams, ridge.train, solver="lbfgs")


def test_reverse_unroll_through_line_search_is_refused(ridge):
    with pytest.raises(ValueError, match="cannot be reverse-differentiated"):
        hg.outer_loss(ridge, ridge.hparams, solver=LBFGS(), method=hg.Unrolled())


def test_cg_on_nonsymmetric_condition_is_refused(ridge):
    cond = hg.methods.OptimalityCondition(residual=lambda p, h, a: p - h["alpha"], symmetric=False)
    with pytest.raises(ValueError, match="symmetric positive definite"):
        hg.solve(
            ridge.inner,
            ridge.init_params,
            ridge.hparams,
            ridge.train,
            solver=Newton(),
            optimality=cond,
        )
