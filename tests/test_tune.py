"""The tuner against dense grids and enumeration; traces, seeds, bad input, Ctrl-C."""

import dataclasses
import warnings

import jax.numpy as jnp
import numpy as np
import optax
import optuna
import pytest
import scipy.stats

import hypergrad as hg
import hypergrad.tune._evaluate as evaluate_module
from hypergrad import problems
from hypergrad.cli import main
from hypergrad.records import Records, reproduce
from hypergrad.space import Categorical, Real, Space
from hypergrad.tune import tune
from hypergrad.tune._plan import seeds_of

ALPHA = Real(1e-4, 1e3, log=True)


def _ridge(p=12, seed=0, n=60):
    X, y = problems.synthetic_regression(2 * n + 40, p, noise=2.0, seed=seed)
    return problems.ridge(X[:n], y[:n], X[n : 2 * n], y[n : 2 * n], X[2 * n :], y[2 * n :])


def ridge_factory(config, *, seed):
    """Ridge on all features or on the first half; the data split depends on `seed`."""
    X, y = problems.synthetic_regression(160, 12, noise=2.0, seed=0)
    idx = np.random.default_rng(seed).permutation(160)
    X, y = X[idx], y[idx]
    if config["features"] == "half":
        X = X[:, :6]
    return problems.ridge(X[:60], y[:60], X[60:120], y[60:120], X[120:], y[120:])


def _records():
    return Records.open(optuna.storages.InMemoryStorage(), "test")


GRID = np.geomspace(1e-4, 1e3, 3001)  # 0.5% spacing: finer than the 1% asked


def _ridge_loss(pb, alphas, split="val"):
    """The ridge loss on `split` at each penalty of `alphas`, by NumPy's dense algebra
    (independent of the library): `w = V diag(1 / (d + alpha)) V^T X^T y / n` with
    `X^T X / n = V diag(d) V^T`."""
    X, y = (np.asarray(a, np.float64) for a in pb.train)
    Xo, yo = (np.asarray(a, np.float64) for a in (pb.val if split == "val" else pb.test))
    d, V = np.linalg.eigh(X.T @ X / len(y))
    b = V.T @ (X.T @ y / len(y))
    W = V @ (b[:, None] / (d[:, None] + np.atleast_1d(alphas)[None, :]))
    return 0.5 * np.mean((Xo @ W - yo[:, None]) ** 2, axis=0)


def _grid_best(pb):
    vals = _ridge_loss(pb, GRID)
    i = int(np.argmin(vals))
    return GRID[i], float(vals[i])


def test_tune_ridge_reaches_the_grid_optimal_penalty():
    pb = _ridge()
    alpha_star, value_star = _grid_best(pb)
    assert 1e-3 < alpha_star < 1e2  # an interior optimum
    res = tune(
        pb, Space({"alpha": ALPHA}), population=4, steps=80, learning_rate=0.2, records=_records()
    )
    assert abs(res.config["alpha"] / alpha_star - 1) < 0.01
    assert res.value <= value_star * (1 + 1e-6)
    # The test value is the test loss at the tuned penalty.
    test = _ridge_loss(pb, res.config["alpha"], split="test")[0]
    assert res.test_value == pytest.approx(test, rel=1e-8)


def test_tune_finds_the_enumerated_categorical_optimum():
    space = Space({"features": Categorical(("all", "half")), "alpha": ALPHA})
    enumerated = {
        f: _grid_best(ridge_factory({"features": f}, seed=seeds_of(0, 1)[0]))
        for f in ("all", "half")
    }
    best_choice = min(enumerated, key=lambda f: enumerated[f][1])
    res = tune(
        ridge_factory,
        space,
        rounds=2,
        population=3,
        steps=80,
        learning_rate=0.2,
        records=_records(),
    )
    # With two rounds and two choices the default proposer is the exhaustive grid.
    assert [r.config["features"] for r in res.rounds] == ["all", "half"]
    assert res.config["features"] == best_choice
    alpha_star, value_star = enumerated[best_choice]
    assert abs(res.config["alpha"] / alpha_star - 1) < 0.01
    assert res.value == pytest.approx(value_star, rel=1e-6)


def _counted(pb, traces):
    """`pb` with an outer objective of its own (a fresh function: no cache can hold its
    compilation) that counts how often JAX traces it."""

    def counted_outer(params, hparams, data):
        traces.append(1)  # runs when JAX traces, not when the compiled program runs
        return problems._linear_models.squared_error(params, hparams, data)

    return hg.BilevelProblem(
        inner=pb.inner,
        outer=counted_outer,
        init_params=pb.init_params,
        train=pb.train,
        val=pb.val,
        hparams=pb.hparams,
        solver=pb.solver,
    )


def test_no_retrace_across_outer_steps_or_population_members():
    counts = {}
    for population, steps in ((1, 1), (1, 12), (6, 12)):
        traces = []
        pb = _counted(_ridge(), traces)
        tune(pb, Space({"alpha": ALPHA}), population=population, steps=steps, records=_records())
        counts[population, steps] = len(traces)
    assert counts[1, 1] == counts[1, 12] == counts[6, 12] > 0
    # A second run with equal settings reuses the compiled outer step.
    traces = []
    pb = _counted(_ridge(), traces)
    for _ in range(2):
        tune(pb, Space({"alpha": ALPHA}), population=6, steps=3, records=_records())
        counts["again"] = len(traces)
        traces.clear()
    assert counts["again"] == 0


def test_seed_aggregation_matches_a_direct_computation():
    space = Space({"features": Categorical(("all",)), "alpha": ALPHA})
    res = tune(
        ridge_factory,
        space,
        population=2,
        seeds=3,
        steps=40,
        learning_rate=0.2,
        records=_records(),
        seed=5,
    )
    rnd = res.rounds[0]
    seeds = seeds_of(5, 3)
    h = {"alpha": jnp.asarray(res.config["alpha"])}
    direct = np.array(
        [float(hg.outer_loss(ridge_factory({"features": "all"}, seed=s), h)) for s in seeds]
    )
    np.testing.assert_allclose(res.per_seed, direct, rtol=1e-8)
    half = scipy.stats.t.ppf(0.975, 2) * direct.std(ddof=1) / np.sqrt(3)
    assert res.value == pytest.approx(direct.mean(), rel=1e-8)
    assert res.std == pytest.approx(direct.std(ddof=1), rel=1e-6)
    assert (res.ci_low, res.ci_high) == pytest.approx(
        (direct.mean() - half, direct.mean() + half), rel=1e-6
    )
    # The choice is the seed mean's best, the same hyperparameters on every seed.
    best_member = min(rnd.members, key=lambda m: m.value)
    assert res.value == pytest.approx(best_member.value)


def test_successive_halving_drops_members_and_saves_inner_solves():
    res = tune(
        _ridge(),
        Space({"alpha": ALPHA}),
        population=8,
        steps=16,
        halving=2,
        learning_rate=0.2,
        records=_records(),
    )
    ran = sorted(m.steps for m in res.rounds[0].members)
    assert ran == [2, 2, 2, 2, 4, 4, 8, 16]
    assert res.num_inner_solves == sum(ran)
    best = min(res.rounds[0].members, key=lambda m: m.value)
    assert best.steps == 16


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"space": Space({"beta": ALPHA})}, "space does not match"),
        ({"space": Space({"alpha": ALPHA, "beta": ALPHA})}, "continuous dimensions without"),
        ({"steps": 0}, "steps must be a positive int"),
        ({"population": 0}, "population must be a positive int"),
        ({"seeds": 2}, "seeds=2 needs a factory"),
        ({"time_budget_s": 0}, "time_budget_s must be positive"),
        ({"halving": 1}, "halving must be at least 2"),
        ({"optimizer": "no_such_optimizer"}, "optimizer must name an optax optimizer"),
        ({"learning_rate": -1.0}, "learning_rate must be positive"),
        ({"problem": 3}, "problem must be a BilevelProblem or a callable"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_input_raises_before_any_trial(kwargs, match):
    records = _records()
    args = {"problem": _ridge(), "space": Space({"alpha": ALPHA}), **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        tune(args.pop("problem"), args.pop("space"), records=records, **args)
    assert records.trials() == []


def test_factory_returning_something_else_is_refused():
    with pytest.raises(TypeError, match="must return a BilevelProblem"):
        tune(lambda config, *, seed: None, Space({"c": Categorical(("a",))}), records=_records())


def interrupted_run(monkeypatch, call, *args, **kwargs):
    """`tune(*args, **kwargs)` interrupted (Ctrl-C) at its `call`-th descent."""
    real = evaluate_module.run_descent
    calls = []

    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*a, **kw)

    with monkeypatch.context() as m:
        m.setattr(evaluate_module, "run_descent", interrupted)
        with pytest.raises(KeyboardInterrupt):
            tune(*args, **kwargs)


def test_interrupted_tune_keeps_finished_trials_and_resumes(monkeypatch):
    space = Space({"features": Categorical(("all", "half")), "alpha": ALPHA})
    kwargs = dict(rounds=2, population=2, steps=10, learning_rate=0.2)
    records = _records()
    interrupted_run(monkeypatch, 2, ridge_factory, space, records=records, **kwargs)
    states = [t.state for t in records.trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    assert states.count(optuna.trial.TrialState.FAIL) == 2

    resumed = tune(ridge_factory, space, records=records, **kwargs)
    assert [r.resumed for r in resumed.rounds] == [True, False]
    assert [r.config["features"] for r in resumed.rounds] == ["all", "half"]
    assert resumed.num_inner_solves == 2 * 10  # only the second round ran again
    fresh = tune(ridge_factory, space, records=_records(), **kwargs)
    assert resumed.config == fresh.config
    assert resumed.value == pytest.approx(fresh.value, rel=1e-12)


def test_reproduce_a_recorded_gradient_trial(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    records = Records.open(storage, "tuned")
    space = Space({"features": Categorical(("all", "half")), "alpha": ALPHA})
    tune(ridge_factory, space, rounds=1, population=3, seeds=2, steps=8, halving=2, records=records)
    trials = records.trials()
    assert {t.user_attrs["kind"] for t in trials} == {"gradient"}
    shortest = min(trials, key=lambda t: t.user_attrs["budget"]["steps"])
    for t in (trials[0], shortest):
        rep = reproduce(storage, "tuned", t.number, rtol=1e-9)
        assert rep.within_tolerance and rep.matches, rep.summary()
        assert len(rep.reproduced_intermediate) == t.user_attrs["budget"]["steps"]
    # The command line: exit code 0 and the verdict.
    assert (
        main(
            [
                "reproduce",
                str(tmp_path / "tune.db"),
                "--study",
                "tuned",
                "--trial",
                "0",
                "--rtol",
                "1e-9",
            ]
        )
        == 0
    )
    assert "reproduced" in capsys.readouterr().out


def test_inner_tolerance_schedule_loosens_early_solves_and_reaches_the_optimum():
    from hypergrad.solvers import Newton
    from hypergrad.tune import decades

    schedule = decades(1e-3, 1e-9, 40)
    # Six decades over 40 steps: one decade every 40 // 7 = 5 steps, then the end.
    assert [schedule(t) for t in (0, 4, 5, 39)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-9])
    X, y = problems.synthetic_classification(120, 20, seed=1)  # optimum alpha near 0.2
    pb = problems.logistic(X[:60], y[:60], X[60:], y[60:])
    pb = dataclasses.replace(pb, solver=Newton(max_steps=50, tol=1e-10))
    space = Space({"alpha": Real(1e-4, 1e1, log=True)})
    loose = tune(pb, space, population=2, steps=40, inner_tol=(1e-8, 1e-10), records=_records())
    tight = tune(pb, space, population=2, steps=40, records=_records())
    # The same optimum (the loss is flat there: 1% in alpha is 1e-6 in value).
    assert loose.config["alpha"] == pytest.approx(tight.config["alpha"], rel=1e-2)
    assert loose.value == pytest.approx(tight.value, rel=1e-6)
    # The reported value is an exact one (the best among the final, tight solves).
    h = {"alpha": jnp.asarray(loose.config["alpha"])}
    assert float(hg.outer_loss(pb, h)) == pytest.approx(loose.value, rel=1e-9)
    with pytest.raises(ValueError, match="inner_tol must be a pair"):
        tune(pb, space, inner_tol=1e-3, records=_records())
    with pytest.raises(ValueError, match="need 0 < end <= start"):
        tune(pb, space, inner_tol=(1e-9, 1e-3), records=_records())


def test_inner_solves_that_hit_max_steps_are_reported_and_raised_with_throw():
    from hypergrad.solvers import OptaxSolver

    # Three plain gradient steps cannot reach a gradient norm of 1e-12: every inner solve
    # stops at max_steps (the hypergradient is still taken, at the inexact solution).
    pb = dataclasses.replace(_ridge(), solver=OptaxSolver(optax.sgd(1e-2), max_steps=3, tol=1e-12))
    space = Space({"alpha": ALPHA})
    records = _records()
    res = tune(pb, space, population=2, steps=4, records=records)
    solves = 2 * 4  # members x outer steps, one seed
    assert res.num_inner_solves == solves
    assert res.inner_status["max_steps"] == solves
    assert sum(res.inner_status.values()) == solves
    assert res.inner_failures == solves
    for m in res.rounds[0].members:
        assert m.inner_failures == 4
        t = records.trial(m.trial)
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.user_attrs["result.inner_failures"] == 4
        assert t.user_attrs["result.inner_status"]["max_steps"] == 4
    # A converging solver reports no failure.
    ok = tune(_ridge(), space, population=2, steps=4, records=_records())
    assert ok.inner_failures == 0 and ok.inner_status["converged"] == ok.num_inner_solves

    records = _records()
    with pytest.raises(RuntimeError, match="8 of 8 inner solves did not converge.*max_steps"):
        tune(pb, space, population=2, steps=4, records=records, throw=True)
    trials = records.trials()
    assert len(trials) == 2
    for t in trials:
        assert t.state == optuna.trial.TrialState.FAIL
        assert "max_steps" in t.user_attrs["failed_reason"]


def test_validation_to_test_gap_is_reported_and_recorded_for_the_analysis():
    from hypergrad.analysis import TEST_VALUE_ATTR, ValidationOverfitWarning, test_values

    pb = _ridge()
    space = Space({"alpha": ALPHA})
    # Test data equal to the validation data: the test value is the validation value
    # (solved again from a cold start: equal up to the inner solve's rounding).
    same = dataclasses.replace(pb, test=pb.val)
    records = _records()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ValidationOverfitWarning)
        res = tune(same, space, population=2, steps=10, records=records)
    assert res.test_value == pytest.approx(res.value, rel=1e-9)
    assert res.gap.val == res.value and res.gap.test == res.test_value
    assert abs(res.gap.relative_gap) < 1e-9 and not res.gap.exceeds
    best = min(res.rounds[0].members, key=lambda m: m.value)
    assert records.trial(best.trial).user_attrs[TEST_VALUE_ATTR] == res.test_value
    assert test_values(records.study) == [(best.trial, best.value, res.test_value)]
    # Test targets shifted by 3 (about the noise level 2): the test loss is far above the
    # validation loss, which warns past the threshold and not below it.
    shifted = dataclasses.replace(pb, test=(pb.val[0], pb.val[1] + 3.0))
    with pytest.warns(ValidationOverfitWarning, match="above the 10% threshold"):
        res = tune(shifted, space, population=2, steps=10, records=_records())
    assert res.gap.exceeds and res.gap.relative_gap > 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error", ValidationOverfitWarning)
        res = tune(shifted, space, population=2, steps=10, records=_records(), gap_threshold=1e3)
    assert not res.gap.exceeds


def test_resumed_rounds_reach_an_optuna_proposer_through_its_observe():
    from hypergrad.search import OptunaSearch

    space = Space({"features": Categorical(("all", "half")), "alpha": ALPHA})
    discrete = Space({"features": Categorical(("all", "half"))})
    records = _records()
    first = tune(
        ridge_factory,
        space,
        rounds=1,
        population=2,
        steps=5,
        records=records,
        proposer=OptunaSearch(discrete, "tpe", seed=0),
    )
    proposer = OptunaSearch(discrete, "tpe", seed=1)  # a new process: an empty history
    again = tune(
        ridge_factory, space, rounds=2, population=2, steps=5, records=records, proposer=proposer
    )
    assert [r.resumed for r in again.rounds] == [True, False]
    done = proposer.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 2  # the resumed round, observed, and the new one, told
    assert done[0].params == first.rounds[0].config
    assert done[0].value == first.rounds[0].value
