"""Inner solvers: they find the minimizer, report their status, and warm-start."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import problems
from hypergrad.solvers import LBFGS, Newton, OptaxSolver, Status, run

from ._problems import logistic_problem, ridge_problem


@pytest.fixture(scope="module")
def ridge():
    return ridge_problem()


@pytest.mark.parametrize(
    "solver",
    [
        Newton(max_steps=1),
        LBFGS(tol=1e-10),
        OptaxSolver(optax.sgd(0.2), max_steps=5000, tol=1e-10),
        OptaxSolver(optax.adam(0.05), max_steps=20000, tol=1e-8),
    ],
    ids=["newton", "lbfgs", "sgd", "adam"],
)
def test_solvers_reach_the_closed_form_ridge_solution(ridge, solver):
    sol = jax.jit(lambda pb: run(solver, pb.inner, pb.init_params, pb.hparams, pb.train))(ridge)
    assert Status.name(sol.status) == "converged"
    exact = problems.ridge_solution(ridge, ridge.hparams)
    # Strong convexity mu >= alpha = 0.5 turns a gradient norm g into a distance <= g / mu.
    assert float(jnp.linalg.norm(sol.params - exact)) <= 2 * float(solver.tol) / 0.5 + 1e-12


def test_lbfgs_solves_logistic_to_its_tolerance():
    pb = logistic_problem()
    sol = run(LBFGS(tol=1e-10), pb.inner, pb.init_params, pb.hparams, pb.train)
    tight = run(Newton(tol=1e-14), pb.inner, pb.init_params, pb.hparams, pb.train)
    assert Status.name(sol.status) == "converged"
    assert float(sol.stats["grad_norm"]) <= 1e-10
    # Distance <= grad_norm / mu, mu >= alpha... except along the unpenalized intercept,
    # whose curvature is mean sigmoid'(z) > 0.1 on this data: 1e-8 bounds both.
    np.testing.assert_allclose(sol.params["w"], tight.params["w"], atol=1e-8)


def test_warm_start_from_the_solution_takes_no_steps(ridge):
    solver = OptaxSolver(optax.sgd(0.2), max_steps=5000, tol=1e-10)
    cold = run(solver, ridge.inner, ridge.init_params, ridge.hparams, ridge.train)
    warm = run(solver, ridge.inner, cold.params, ridge.hparams, ridge.train)
    assert int(cold.stats["num_steps"]) > 10
    assert int(warm.stats["num_steps"]) == 0
    nearby = {"alpha": ridge.hparams["alpha"] * 1.05}
    from_cold = run(solver, ridge.inner, ridge.init_params, nearby, ridge.train)
    from_warm = run(solver, ridge.inner, cold.params, nearby, ridge.train)
    assert int(from_warm.stats["num_steps"]) < int(from_cold.stats["num_steps"])


def test_fixed_step_budget_reports_converged_after_exactly_max_steps(ridge):
    solver = OptaxSolver(optax.sgd(0.01), max_steps=7, tol=None)
    sol = run(solver, ridge.inner, ridge.init_params, ridge.hparams, ridge.train)
    assert int(sol.stats["num_steps"]) == 7
    assert Status.name(sol.status) == "converged"


def test_max_steps_status(ridge):
    solver = OptaxSolver(optax.sgd(0.01), max_steps=7, tol=1e-12)
    sol = run(solver, ridge.inner, ridge.init_params, ridge.hparams, ridge.train)
    assert Status.name(sol.status) == "max_steps"


def test_diverging_solve_reports_diverged_and_throw_raises(ridge):
    solver = OptaxSolver(optax.sgd(10.0), max_steps=1000, tol=1e-10)  # step far above 2/L
    sol = hg.solve(ridge.inner, ridge.init_params, ridge.hparams, ridge.train, solver=solver)
    assert Status.name(sol.status) == "diverged"
    assert int(sol.stats["num_steps"]) < 1000  # it stops early instead of running on
    with pytest.raises(RuntimeError, match="diverged"):
        hg.solve(
            ridge.inner, ridge.init_params, ridge.hparams, ridge.train, solver=solver, throw=True
        )
    jitted = jax.jit(
        lambda h: (
            hg.solve(
                ridge.inner, ridge.init_params, h, ridge.train, solver=solver, throw=True
            ).params
        )
    )
    with pytest.raises(Exception, match="diverged"):
        jax.block_until_ready(jitted(ridge.hparams))


def test_nonfinite_objective_reports_nonfinite():
    fun = lambda w, h, a: jnp.sum(jnp.log(w - h))  # noqa: E731  (NaN once w < h)
    sol = run(OptaxSolver(optax.sgd(1.0), 100, 1e-8), fun, jnp.array([1.0]), 0.5)
    assert Status.name(sol.status) == "nonfinite"


def test_hypergradient_warm_starts_give_the_same_answer(ridge):
    h = ridge.hparams
    solver = OptaxSolver(optax.sgd(0.2), max_steps=5000, tol=1e-12)
    first = hg.hypergradient(ridge, h, solver=solver, method=hg.Implicit(hg.CG(tol=1e-12)))
    nearby = {"alpha": h["alpha"] * 1.01}
    cold = hg.hypergradient(ridge, nearby, solver=solver, method=hg.Implicit(hg.CG(tol=1e-12)))
    warm = hg.hypergradient(
        ridge,
        nearby,
        solver=solver,
        method=hg.Implicit(hg.CG(tol=1e-12)),
        init_params=first.solution.params,
        init_adjoint=first.adjoint,
    )
    exact = problems.ridge_hypergradient(ridge, nearby)["alpha"]
    np.testing.assert_allclose(warm.grad["alpha"], exact, rtol=1e-8)
    np.testing.assert_allclose(cold.grad["alpha"], exact, rtol=1e-8)
    assert int(warm.solution.stats["num_steps"]) < int(cold.solution.stats["num_steps"])
