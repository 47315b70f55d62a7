"""Populations: the batch-friendly solvers agree with dense references and with a loop.

BatchedLBFGS and the population default (`population_solver`) are checked against
Newton's solution (quadratic convergence, float64) and the hypergradients of a vmap-ed
population against a Python loop of single hypergradients with the problem's L-BFGS and
against central differences of the exact (Newton) validation loss.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hypergrad import Implicit, hypergradient, outer_loss, problems
from hypergrad.solvers import LBFGS, BatchedLBFGS, Newton, Status, run
from hypergrad.solvers._batched import population_solver
from hypergrad.tune import descend


def _logistic(p, n=80, seed=0):
    X, y = problems.synthetic_classification(2 * n, p, informative=3, seed=seed)
    return problems.logistic(X[:n], y[:n], X[n:], y[n:])


def test_batched_lbfgs_reaches_newtons_solution():
    pb = _logistic(12)
    h = {"alpha": jnp.asarray(1e-3)}
    ref = run(Newton(tol=1e-12, line_search=8), pb.inner, pb.init_params, h, pb.train)
    sol = run(BatchedLBFGS(tol=1e-10), pb.inner, pb.init_params, h, pb.train)
    assert int(sol.status) == Status.CONVERGED
    for k in ("w", "b"):
        np.testing.assert_allclose(sol.params[k], ref.params[k], rtol=1e-7, atol=1e-9)


def test_population_solver_rule():
    assert isinstance(population_solver(LBFGS(tol=1e-9), jnp.zeros(30)), Newton)
    big = population_solver(LBFGS(max_steps=300, tol=1e-9), jnp.zeros(100))
    assert big == BatchedLBFGS(max_steps=300, tol=1e-9, memory_size=5)
    # A smaller memory than the population's cap is kept.
    small = population_solver(LBFGS(tol=1e-9, memory_size=3), jnp.zeros(100))
    assert small == BatchedLBFGS(tol=1e-9, memory_size=3)
    newton = Newton(tol=1e-7)
    assert population_solver(newton, jnp.zeros(100)) is newton  # kept: no while loop


@pytest.mark.parametrize("p", [5, 70])  # below and above the Newton / BatchedLBFGS switch
def test_vmapped_population_matches_a_loop_and_finite_differences(p):
    pb = _logistic(p)
    default = population_solver(pb.solver, pb.init_params)
    assert isinstance(default, Newton if p <= 64 else BatchedLBFGS)
    alphas = jnp.asarray(np.geomspace(1e-3, 1.0, 5))

    def grad_of(problem):
        return lambda a: hypergradient(problem, {"alpha": a}, method=Implicit()).grad["alpha"]

    batched = jax.jit(jax.vmap(grad_of(dataclasses.replace(pb, solver=default))))(alphas)
    single = jax.jit(grad_of(pb))  # the problem's L-BFGS
    looped = jnp.stack([single(a) for a in alphas])
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-9)
    # Central differences of the validation loss at Newton's (exact) solutions.
    exact = dataclasses.replace(pb, solver=Newton(tol=1e-13, line_search=8))
    loss = jax.jit(lambda a: outer_loss(exact, {"alpha": a}))
    for a, g in zip(alphas, batched, strict=True):
        e = 1e-4 * a
        fd = (loss(a + e) - loss(a - e)) / (2 * e)
        np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-8)


def test_descend_population_runs_and_records_the_population_solver():
    pb = _logistic(70)
    h = {"alpha": jnp.asarray([1e-2, 1e-1, 1.0])}
    res = descend(pb, h, steps=3, batch_hparams=True, throw=True)
    assert res.solver == repr(BatchedLBFGS(max_steps=500, tol=1e-9, memory_size=5))
    alone = descend(pb, {"alpha": jnp.asarray(1e-2)}, steps=3)
    assert alone.solver == repr(pb.solver)


def test_tune_records_the_population_solver():
    # LBFGS's line search is a loop per member: tune's populations run the
    # batch-friendly replacement, and the result and every trial say which.
    import optuna

    from hypergrad.records import Records
    from hypergrad.space import Real, Space
    from hypergrad.tune import tune

    pb = _logistic(70)
    records = Records.open(optuna.storages.InMemoryStorage(), "population-solver")
    res = tune(
        pb, Space({"alpha": Real(1e-3, 1.0, log=True)}), population=2, steps=2, records=records
    )
    chosen = population_solver(pb.solver, pb.init_params)
    assert isinstance(chosen, BatchedLBFGS) and not isinstance(pb.solver, BatchedLBFGS)
    assert res.solver == repr(chosen)
    trials = records.trials()
    assert len(trials) == 2
    assert {t.user_attrs["result.solver"] for t in trials} == {repr(chosen)}
