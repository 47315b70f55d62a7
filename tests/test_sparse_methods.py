"""Lasso-type problems beyond their default method: every other implicit linear solver,
the derivative unrolled through proximal gradient steps, and forward mode (`jax.jvp`),
each against central differences of the tightly solved validation loss.

A lasso's validation loss is smooth in the penalty wherever the support does not change
(the tests check that it does not within the difference step), so a central difference
is a valid reference there; the default method of these problems
(`Implicit(Dense(symmetric=True))` on the coordinate-descent working set) is tested in
tests/test_sparse.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad as hg
from hypergrad import problems
from hypergrad.problems import lipschitz_of
from hypergrad.solvers import FISTA, L1, ElasticNet, run

from ._problems import central_difference

N_TRAIN, P = 40, 10
# FISTA with gradient restarts at step 1/L on these designs (mu/L about 0.1 on the
# support) reaches rounding level well within this many steps; the unrolled derivative
# of a converged fixed-step run is then the implicit one.
FISTA_STEPS = 600


def _outer(problem, hparams, method, solver):
    return hg.outer_loss(problem, hparams, solver=solver, method=method)


GRAD = jax.jit(jax.grad(_outer, argnums=1), static_argnames=("method", "solver"))
VALUE = jax.jit(_outer, static_argnames=("method", "solver"))


@pytest.fixture(scope="module")
def data():
    X, y = problems.synthetic_regression(2 * N_TRAIN, P, noise=0.3, correlation=0.5, seed=7)
    return X - X.mean(0), y - y.mean()


def _problems(data):
    X, y = data
    tr, va = slice(0, N_TRAIN), slice(N_TRAIN, None)
    lasso = problems.lasso(X[tr], y[tr], X[va], y[va], tol=1e-24)
    enet = problems.elastic_net(X[tr], y[tr], X[va], y[va], tol=1e-24)
    return {"lasso": (lasso, L1("alpha")), "elastic_net": (enet, ElasticNet("alpha1", "alpha2"))}


@pytest.fixture(scope="module", params=["lasso", "elastic_net"])
def case(request, data):
    """A problem, its prox, and central differences of its validation loss at a
    coordinate-descent solve to a relative duality gap of 1e-24 (error ~1e-12)."""
    problem, prox = _problems(data)[request.param]
    tight = jax.jit(
        lambda h: problem.outer(
            run(problem.solver, problem.inner, problem.init_params, h, problem.train).params,
            h,
            problem.val,
        )
    )
    h = problem.hparams
    fd = {leaf: central_difference(tight, h, leaf) for leaf in h}
    # The support must not change within the difference step, or the reference is the
    # slope of a kink: compare supports at +-1e-4 relative, far beyond the step (6e-6).
    supports = []
    for scale in (1 - 1e-4, 1.0, 1 + 1e-4):
        hs = jax.tree.map(lambda a, s=scale: a * s, h)
        w = run(problem.solver, problem.inner, problem.init_params, hs, problem.train).params
        supports.append(np.asarray(w) != 0)
    assert all(np.array_equal(supports[0], s) for s in supports[1:])
    assert 0 < supports[0].sum() < P  # a sparse solution: the restriction matters
    return request.param, problem, prox, fd


def _fista(prox, max_steps=FISTA_STEPS, tol=None):
    return FISTA(prox, max_steps=max_steps, tol=tol, lipschitz=lipschitz_of)


# The methods other than the default, each with the inner solver it needs: implicit
# methods on the default coordinate-descent solver or on FISTA run to a tolerance;
# unrolled ones through a fixed number of FISTA steps.
METHODS = {
    "implicit_cg": (lambda prox: hg.Implicit(hg.CG(tol=1e-12)), None),
    "implicit_gmres": (lambda prox: hg.Implicit(hg.GMRES(tol=1e-12)), None),
    "implicit_dense_lu": (lambda prox: hg.Implicit(hg.Dense()), None),
    "implicit_on_fista": (
        lambda prox: hg.Implicit(hg.CG(tol=1e-12)),
        lambda prox: _fista(prox, 5000, 1e-12),
    ),
    "unrolled_reverse_fista": (lambda prox: hg.Unrolled(), _fista),
    "unrolled_forward_fista": (lambda prox: hg.Unrolled(mode="forward"), _fista),
}


@pytest.mark.parametrize("name", METHODS)
def test_non_default_methods_match_finite_differences(case, name):
    kind, problem, prox, fd = case
    make_method, make_solver = METHODS[name]
    method = make_method(prox)
    solver = problem.solver if make_solver is None else make_solver(prox)
    got = GRAD(problem, problem.hparams, method=method, solver=solver)
    for leaf in problem.hparams:
        # Central differences: ~1e-10 relative on a smooth piece; linear solves to 1e-12
        # and converged inner solves add less. 1e-6 leaves room for both.
        np.testing.assert_allclose(got[leaf], fd[leaf], rtol=1e-6, err_msg=f"{kind} {leaf}")


def test_forward_mode_matches_finite_differences(case):
    kind, problem, _, fd = case
    h = problem.hparams
    # A direction that mixes the leaves (elastic net: alpha1 and alpha2 at once).
    direction = {leaf: jnp.asarray(1.0 - 1.5 * i, h[leaf].dtype) for i, leaf in enumerate(h)}
    value = functools.partial(VALUE, method=None, solver=None)
    _, tangent = jax.jit(lambda hh, d: jax.jvp(lambda x: value(problem, x), (hh,), (d,)))(
        h, direction
    )
    want = sum(float(fd[leaf]) * float(direction[leaf]) for leaf in h)
    np.testing.assert_allclose(tangent, want, rtol=1e-6, err_msg=kind)
