"""Hypergradient descent: reaches the optimum, compiles once, aggregates seeds honestly."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

import hypergrad as hg
from hypergrad import problems
from hypergrad.problems._linear_models import ridge_inner, squared_error
from hypergrad.tune import aggregate_seeds, decades, descend, stack_problems

from ._problems import ridge_problem


def _ridge(seed=0, n=80, p=10):
    X, y = problems.synthetic_regression(2 * n, p, noise=2.0, seed=seed)
    return problems.ridge(X[:n], y[:n], X[n:], y[n:], alpha=1.0)


def test_descend_reaches_the_grid_optimum_of_ridge():
    pb = _ridge()
    grid = np.logspace(-3, 3, 3001)  # 0.2% spacing: finer than the 1% asked of the tuner
    val = jax.jit(
        jax.vmap(lambda a: squared_error(problems.ridge_solution(pb, {"alpha": a}), None, pb.val))
    )(jnp.asarray(grid))
    best = grid[int(np.argmin(val))]
    res = descend(pb, {"alpha": jnp.asarray(0.01)}, steps=200, optimizer=optax.adam(0.1))
    assert abs(float(res.hparams["alpha"]) / best - 1) < 0.01
    assert float(res.value) <= float(np.min(val)) + 1e-9


def _counting_problem():
    """A ridge problem whose inner objective counts how often JAX traces it."""
    traces = []

    def counted_inner(w, h, data):
        traces.append(1)
        return ridge_inner(w, h, data)

    base = _ridge()
    pb = problems.BilevelProblem(
        inner=counted_inner,
        outer=squared_error,
        init_params=base.init_params,
        train=base.train,
        val=base.val,
        hparams=base.hparams,
        solver=base.solver,
    )
    return pb, traces


@pytest.mark.parametrize("members", [1, 5])
def test_no_tracing_after_the_first_outer_step(members):
    pb, traces = _counting_problem()
    after_first = []
    descend(
        pb,
        {"alpha": jnp.linspace(0.1, 10.0, members)},
        steps=7,
        batch_hparams=True,
        callback=lambda t, stats: after_first.append(len(traces)) if t == 0 else None,
    )
    assert after_first[0] > 0
    assert len(traces) == after_first[0]


def test_population_size_does_not_change_tracing():
    counts = []
    for members in (1, 6):
        pb, traces = _counting_problem()  # fresh function: nothing cached from before
        descend(pb, {"alpha": jnp.linspace(0.1, 10.0, members)}, steps=2, batch_hparams=True)
        counts.append(len(traces))
    assert counts[0] == counts[1]


def test_population_times_seeds_matches_members_run_alone():
    pbs = [_ridge(seed=s) for s in range(3)]
    starts = jnp.array([0.05, 5.0])
    res = descend(
        stack_problems(pbs), {"alpha": starts}, steps=15, batch_hparams=True, batch_problem=True
    )
    assert res.value.shape == (2, 3)
    assert res.num_inner_solves == 15 * 6
    alone = descend(pbs[2], {"alpha": starts[1]}, steps=15)
    # Same arithmetic batched or not, up to the order of reductions.
    np.testing.assert_allclose(res.value[1, 2], alone.value, rtol=1e-9)
    np.testing.assert_allclose(res.hparams["alpha"][1, 2], alone.hparams["alpha"], rtol=1e-7)


def test_seed_aggregation_matches_direct_computation():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, 6)) + np.arange(4)[:, None]
    summary = aggregate_seeds(values, confidence=0.9)
    for k in range(4):
        v = values[k]
        lo, hi = scipy.stats.t.interval(0.9, len(v) - 1, loc=v.mean(), scale=scipy.stats.sem(v))
        assert summary.mean[k] == pytest.approx(np.mean(v))
        assert summary.std[k] == pytest.approx(np.std(v, ddof=1))
        assert summary.ci_low[k] == pytest.approx(lo)
        assert summary.ci_high[k] == pytest.approx(hi)
    assert summary.best == int(np.argmin(values.mean(1)))
    # Chosen by the mean, not by a lucky seed: a config with one great seed loses.
    lucky = np.array([[0.0, 5.0, 5.0], [1.0, 1.0, 1.0]])
    assert aggregate_seeds(lucky).best == 1


def test_bad_input_is_refused_before_work():
    pb = _ridge()
    with pytest.raises(ValueError, match="steps must be a positive int, got steps=0"):
        descend(pb, steps=0)
    with pytest.raises(ValueError, match="non-empty leading axis"):
        descend(pb, {"alpha": jnp.zeros((0,))}, batch_hparams=True)
    with pytest.raises(ValueError, match="unknown key 'lam'; missing key 'alpha'"):
        descend(pb, {"lam": jnp.asarray(1.0)})
    with pytest.raises(ValueError, match="structure of problem.hparams"):
        descend(pb, {"alpha": {"nested": jnp.asarray(1.0)}})
    with pytest.raises(TypeError, match="method must be"):
        descend(pb, method="implicit")
    with pytest.raises(TypeError, match="problem must be a BilevelProblem"):
        descend(lambda h: h, steps=3)
    with pytest.raises(ValueError, match="confidence"):
        aggregate_seeds([[1.0, 2.0]], confidence=1.5)


def test_descend_with_unrolled_method_tunes_learning_rate():
    pb = problems.mlp_digits(hidden=8, steps=30, learning_rate=0.05)
    res = descend(pb, steps=10, method=hg.Unrolled(), optimizer=optax.adam(0.2))
    # Adam's first step moves each log-hyperparameter by its learning rate against the
    # sign of the derivative: the sign here comes from central differences of the
    # 30-step training run's validation loss, not from the unrolled derivative.
    loss = jax.jit(lambda h: hg.outer_loss(pb, h, method=hg.Unrolled()))
    for name, x in pb.hparams.items():
        x, e = float(x), 1e-3 * float(x)
        fd = float(loss({**pb.hparams, name: x + e}) - loss({**pb.hparams, name: x - e})) / (2 * e)
        assert abs(fd) > 1e-6, name  # a sign to compare with
        moved = float(res.history["hparams"][name][1])
        # (Adam's eps=1e-8 shortens the step by 0.2 * 1e-8 / |gradient|: atol 1e-4.)
        np.testing.assert_allclose(np.log(moved), np.log(x) - 0.2 * np.sign(fd), atol=1e-4)
    assert float(res.value) < float(res.history["value"][0])  # and it kept improving


def test_pooled_seeds_step_on_the_mean_hypergradient():
    pbs = stack_problems([_ridge(seed=s) for s in range(3)])
    lr = 0.05
    res = descend(
        pbs,
        {"alpha": jnp.asarray(0.5)},
        steps=1,
        optimizer=optax.sgd(lr),
        batch_problem=True,
        pool_seeds=True,
    )
    grads, values = [], []
    for s in range(3):
        pb = _ridge(seed=s)
        # d/du of the loss at alpha = exp(u), by the closed form.
        g = problems.ridge_hypergradient(pb, {"alpha": jnp.asarray(0.5)})["alpha"] * 0.5
        grads.append(float(g))
        values.append(float(hg.outer_loss(pb, {"alpha": jnp.asarray(0.5)})))
    expected_u = np.log(0.5) - lr * np.mean(grads)
    np.testing.assert_allclose(float(res.state.u["alpha"]), expected_u, rtol=1e-10)
    np.testing.assert_allclose(res.per_seed, values, rtol=1e-10)
    np.testing.assert_allclose(float(res.value), np.mean(values), rtol=1e-10)
    with pytest.raises(ValueError, match="pool_seeds=True needs batch_problem=True"):
        descend(_ridge(), steps=1, pool_seeds=True)


def test_a_tolerance_schedule_is_data_one_program_for_every_decade():
    from hypergrad.solvers import LBFGS

    pb, traces = _counting_problem()
    pb = dataclasses.replace(pb, solver=LBFGS(max_steps=100, tol=1e-10))
    schedule = decades(1e-2, 1e-8, 12)  # seven tolerances over twelve steps
    after_first = []
    res = descend(
        pb,
        {"alpha": jnp.asarray(0.5)},
        steps=12,
        inner_tol=schedule,
        callback=lambda t, stats: after_first.append(len(traces)) if t == 0 else None,
    )
    assert len({schedule(t) for t in range(12)}) == 7
    assert after_first[0] > 0 and len(traces) == after_first[0]  # no trace per decade
    np.testing.assert_allclose(res.history["tol"], [schedule(t) for t in range(12)])
    # Looser solves stop earlier: the first step's inner iterations are the fewest.
    steps = res.history["inner_steps"]
    assert steps[0] < steps[-1]
    assert res.inner_failures == 0 and res.inner_status["converged"] == 12


def test_inner_solves_that_stop_at_max_steps_are_counted_and_raised_with_throw():
    from hypergrad.solvers import OptaxSolver

    pb = dataclasses.replace(_ridge(), solver=OptaxSolver(optax.sgd(1e-2), max_steps=2, tol=1e-12))
    starts = {"alpha": jnp.asarray([0.1, 1.0, 10.0])}
    res = descend(pb, starts, steps=4, batch_hparams=True)
    assert res.num_inner_solves == 12 and res.inner_status["max_steps"] == 12
    assert res.inner_failures == 12 and res.num_inner_steps == 2 * 12
    assert res.history["inner_failures"].shape == (4, 3)
    assert np.all(res.history["inner_status"][..., 1] == 1)  # one solve per member and step
    with pytest.raises(RuntimeError, match="descend: 12 of 12 inner solves.*'max_steps'"):
        descend(pb, starts, steps=4, batch_hparams=True, throw=True)


def test_population_stops_when_every_member_is_done():
    pb = _ridge()
    starts = {"alpha": jnp.asarray([0.1, 10.0])}
    # Each member stops when its best value improved by at most 1e-3 over 5 steps; the
    # population runs until both have, so it stops before the 200 steps and the state
    # says why. A member that stopped takes no more steps: its history ends there.
    res = descend(pb, starts, steps=200, batch_hparams=True, min_improvement=1e-3)
    assert res.num_steps < 200 and res.stop_reason == "stall"
    took = np.asarray(res.state.k)
    assert np.max(took) == res.num_steps
    for j, k in enumerate(took - 1):
        best = np.minimum.accumulate(res.history["value"][: k + 1, j])
        assert best[k - 5] - best[k] <= 1e-3 * abs(best[k - 5])  # stalled at its last step
        assert best[k - 6] - best[k - 1] > 1e-3 * abs(best[k - 6])  # not one step earlier
        assert np.all(np.isnan(res.history["value"][k + 1 :, j]))


def test_population_members_end_where_they_end_alone():
    # Two members that stop at different steps: alpha=50 meets the gradient tolerance at
    # its first step, alpha=0.5 runs all 10. Each ends at the point, value and count of
    # inner solves of its own descent (a member that is done keeps its state).
    pb = ridge_problem()
    starts = [0.5, 50.0]
    res = descend(pb, {"alpha": jnp.asarray(starts)}, steps=10, batch_hparams=True, tol=0.025)
    alone = [descend(pb, {"alpha": jnp.asarray(a)}, steps=10, tol=0.025) for a in starts]
    assert [r.num_steps for r in alone] == [10, 1]  # the case this test is about
    np.testing.assert_array_equal(np.asarray(res.state.k), [10, 1])
    for j, r in enumerate(alone):
        np.testing.assert_allclose(res.hparams["alpha"][j], r.hparams["alpha"], rtol=1e-9)
        np.testing.assert_allclose(res.value[j], r.value, rtol=1e-9)
    assert res.num_inner_solves == sum(r.num_inner_solves for r in alone) == 11


def test_population_of_coordinate_descent_members_matches_their_own_descents():
    # Coordinate descent's control flow depends on its data (working sets, sweeps): its
    # members are mapped with lax.map, not vmap, and match their own descents.
    X, y = problems.synthetic_regression(80, 30, seed=1)
    pb = problems.lasso(X[:40], y[:40], X[40:], y[40:])
    a_max = float(np.max(np.asarray(pb.hparams["alpha"])))
    starts = [0.05 * a_max, 0.3 * a_max, 2.0 * a_max]
    res = descend(pb, {"alpha": jnp.asarray(starts)}, steps=4, batch_hparams=True)
    for j, a in enumerate(starts):
        r = descend(pb, {"alpha": jnp.asarray(a)}, steps=4)
        np.testing.assert_allclose(res.hparams["alpha"][j], r.hparams["alpha"], rtol=1e-7)
        np.testing.assert_allclose(res.value[j], r.value, rtol=1e-7)
