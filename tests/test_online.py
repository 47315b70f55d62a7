"""Online bilevel mode: inner and outer steps alternate within one run of gradient
descent; on ridge the learned penalty approaches the best one, and bad input raises."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hypergrad import problems
from hypergrad.solvers import LBFGS, OptaxSolver
from hypergrad.tune._online import online_bilevel

from ._problems import hessian_bound, ridge_problem


@pytest.fixture(scope="module")
def ridge():
    pb = ridge_problem(alpha=10.0)
    grid = jnp.logspace(-3, 2, 200)
    val = jax.vmap(lambda a: pb.outer(problems.ridge_solution(pb, {"alpha": a}), None, pb.val))(
        grid
    )
    return pb, float(grid[jnp.argmin(val)]), float(jnp.min(val)), float(val[-1])


def test_online_bilevel_moves_the_penalty_to_the_best_one(ridge):
    pb, best_alpha, best_val, _ = ridge
    solver = OptaxSolver(optax.sgd(1.0 / hessian_bound(pb)), max_steps=10**6, tol=None)
    out = online_bilevel(
        pb,
        {"alpha": jnp.asarray(10.0)},
        outer_optimizer=optax.adam(0.05),
        num_steps=300,
        inner_steps=4,
        lookahead=1,
        solver=solver,
    )
    alpha = float(out.hparams["alpha"])
    assert out.history["value"].shape == (300,)
    # descend's history format: every iteration took 4 + 1 inner steps, none diverged.
    assert out.history["hparams"]["alpha"].shape == (300,)
    assert float(out.history["hparams"]["alpha"][0]) == pytest.approx(10.0)
    assert out.num_inner_steps == 300 * 5 and np.all(out.history["inner_steps"] == 5)
    # A solver without a tolerance: each iteration's steps are done, not "converged".
    assert out.inner_status["steps_done"] == 300
    assert sum(out.inner_status.values()) == 300
    assert out.inner_failures == 0
    # Started at 10; the greedy one-step hypergradient is
    # biased (short horizon), so ask for the right decade, not the optimum itself.
    assert abs(np.log10(alpha) - np.log10(best_alpha)) < 0.5, (alpha, best_alpha)
    val = float(pb.outer(problems.ridge_solution(pb, out.hparams), None, pb.val))
    start = float(pb.outer(problems.ridge_solution(pb, {"alpha": 10.0}), None, pb.val))
    # Normalized suboptimality (BENCHMARKS.md) of the learned penalty: below 5%.
    assert (val - best_val) / (start - best_val) < 0.05, (val, best_val, start)
    # The training run continued: the final params are those of the last alpha, nearly.
    w_star = problems.ridge_solution(pb, out.hparams)
    assert float(jnp.linalg.norm(out.params - w_star)) < 0.05 * float(jnp.linalg.norm(w_star))


def test_online_bilevel_rejects_bad_input(ridge):
    pb = ridge[0]
    sgd = OptaxSolver(optax.sgd(0.1), max_steps=100, tol=None)
    kw = dict(outer_optimizer=optax.adam(0.1), num_steps=10)
    with pytest.raises(ValueError, match="line search"):
        online_bilevel(pb, pb.hparams, solver=LBFGS(), **kw)
    with pytest.raises(ValueError, match="tol=None"):
        online_bilevel(pb, pb.hparams, solver=OptaxSolver(optax.sgd(0.1)), **kw)
    with pytest.raises(ValueError, match="lookahead must be an int >= 1"):
        online_bilevel(pb, pb.hparams, solver=sgd, lookahead=0, **kw)
    with pytest.raises(ValueError, match="more than the solver's max_steps"):
        online_bilevel(pb, pb.hparams, solver=sgd, inner_steps=20, **kw)
