"""Black-box proposers: they find a known optimum, never propose what the space forbids,
batch without duplicates, and resume from a record."""

import importlib.util
import math

import jax
import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypergrad.records import Records
from hypergrad.search import (
    ASHA,
    GridSearch,
    OptunaSearch,
    Proposal,
    RandomSearch,
    SobolSearch,
    SuccessiveHalving,
    grid_points,
    run,
    rung_budgets,
    suggest,
    to_optuna_distributions,
)
from hypergrad.space import Categorical, Condition, Forbidden, Int, Real, Space

from ._records_objectives import (
    TOY_GAP,
    TOY_OPTIMUM,
    TOY_SPACE,
    toy,
    toy_budgeted,
    toy_two,
    toy_value,
)
from .test_space import spaces

optuna.logging.set_verbosity(optuna.logging.WARNING)


def memory(name="s", directions=("minimize",)):
    return Records.open(optuna.storages.InMemoryStorage(), name, directions=directions)


def test_toy_optimum_by_enumeration():
    """Enumerate every discrete choice (and a fine grid of the continuous dimensions):
    the optimum is TOY_OPTIMUM at 0, every other discrete choice costs TOY_GAP or more."""
    # Odd resolution: the geometric midpoints 10**-2.5 and 32 are grid points.
    points = grid_points(TOY_SPACE, resolution=25)
    assert len(points) > 10_000
    best_by_choice = {}
    for c in points:
        k = (c["opt"], c["layers"])
        best_by_choice[k] = min(best_by_choice.get(k, math.inf), toy_value(c))
    assert best_by_choice.pop(("adam", 3)) == pytest.approx(0.0, abs=1e-12)
    assert min(best_by_choice.values()) >= TOY_GAP - 1e-12
    assert toy_value(TOY_OPTIMUM) == pytest.approx(0.0, abs=1e-12)


# Each proposer, its trial budget, and the objective it runs. A best value below TOY_GAP
# can only come from the optimal discrete choice (opt=adam, layers=3); below 0.1 the
# learning rate is within 0.32 decades and width3 within 1.4 octaves of the optimum.
FINDERS = {
    "random": (lambda: RandomSearch(TOY_SPACE, seed=1), 400, toy),
    "sobol": (lambda: SobolSearch(TOY_SPACE, seed=1), 256, toy),
    "grid": (lambda: GridSearch(TOY_SPACE, resolution=5), 500, toy),
    "asha": (lambda: ASHA(TOY_SPACE, 1, 27, seed=1), 400, toy_budgeted),
    "successive-halving": (
        lambda: SuccessiveHalving(TOY_SPACE, 243, 1, 81, seed=1),
        400,
        toy_budgeted,
    ),
    "optuna-tpe": (lambda: OptunaSearch(TOY_SPACE, "tpe", seed=1), 100, toy),
    "optuna-cmaes": (lambda: OptunaSearch(TOY_SPACE, "cmaes", seed=1), 150, toy),
}


@pytest.mark.parametrize("name", FINDERS)
def test_proposers_find_the_toy_optimum(name):
    make, n_trials, objective = FINDERS[name]
    if name == "optuna-cmaes" and importlib.util.find_spec("cmaes") is None:
        pytest.skip("Optuna's CMA-ES sampler needs the cmaes package")
    proposer = make()
    result = run(objective, proposer, n_trials, records=memory(name), batch_size=8)
    # Every proposal evaluated, nothing beyond: the budget, unless the proposer runs out
    # first (the grid has 420 points at resolution 5; successive halving's bracket of 243
    # at eta = 3 holds 243 + 81 + 27 + 9 + 3 evaluations up to budget 81).
    expected = {"grid": len(grid_points(TOY_SPACE, resolution=5))}
    expected["successive-halving"] = sum(243 // 3**k for k in range(5))
    assert len(result.trials) == len(set(result.trials)) == expected.get(name, n_trials)
    if isinstance(proposer, ASHA | SuccessiveHalving):
        config, value, budget = proposer.best
        assert budget == proposer.budgets[-1]
    else:
        config, value = result.best_config, result.best_value
    assert value < 0.1
    assert (config["opt"], config["layers"]) == ("adam", 3)
    assert abs(math.log10(config["lr"]) + 2.5) < 0.32
    assert "momentum" not in config and abs(math.log2(config["width3"]) - 5) < 1.42
    if name == "grid":  # the grid holds the optimum exactly
        assert value == 0.0 and config == TOY_OPTIMUM


# -- validity of every proposal -------------------------------------------------------


def _drive(proposer, rounds=4, n=8):
    seen = []
    for _ in range(rounds):
        ps = proposer.ask(n)
        seen += ps
        proposer.tell(ps, [float(i) for i in range(len(ps))])
    return seen


@settings(max_examples=8)
@given(space=spaces(), seed=st.integers(0, 2**16))
def test_builtin_proposals_are_valid(space, seed):
    for proposer in (
        RandomSearch(space, seed),
        SobolSearch(space, seed),
        GridSearch(space, resolution=3),
        ASHA(space, 1, 9, seed=seed),
    ):
        for p in _drive(proposer):
            assert space.problems(p.config) == [], (proposer.name, p.config)


def forbidding_space():
    return Space(
        {"a": Categorical(("x", "y", "z")), "k": Int(1, 3), "w": Int(1, 2), "r": Real(0.0, 1.0)},
        conditions={"w": Condition("a", ("y",))},
        forbidden=[Forbidden({"a": "x", "k": (1, 2)}), Forbidden({"w": 2, "k": 3})],
    )


@pytest.mark.parametrize("sampler", ["tpe", "random", "nsga2"])
def test_optuna_never_proposes_forbidden(sampler):
    space = forbidding_space()
    proposer = OptunaSearch(space, sampler, seed=0)
    seen = _drive(proposer, rounds=5)
    assert len(seen) == 40
    for p in seen:
        assert space.problems(p.config) == []
    # Optuna did draw forbidden combinations (about half the space is forbidden);
    # they were failed with the reason and never handed out.
    failed = [t for t in proposer.study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all(
        "forbidden combination" in t.user_attrs["hypergrad.forbidden"] for t in failed
    )


def test_conditional_space_reaches_optuna_as_a_tree():
    dists = to_optuna_distributions(TOY_SPACE)
    assert dists["lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    assert dists["width3"] == optuna.distributions.IntDistribution(8, 128, log=True)
    assert dists["opt"] == optuna.distributions.CategoricalDistribution(("sgd", "adam", "lbfgs"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: toy_value(suggest(t, TOY_SPACE)), n_trials=40)
    for t in study.trials:
        assert TOY_SPACE.problems(t.params) == []
        assert ("momentum" in t.params) == (t.params["opt"] == "sgd")
        assert ("width3" in t.params) == (t.params["layers"] >= 3)


def _batch_min_gap(proposer) -> float:
    first = proposer.ask(10)  # the startup trials are random
    proposer.tell(first, [p.config["x"] ** 2 + p.config["y"] ** 2 for p in first])
    batch = proposer.ask(8)  # modelled, all asked before any is told
    points = np.array([[p.config["x"], p.config["y"]] for p in batch])
    return np.linalg.norm(points[:, None] - points[None], axis=-1)[np.triu_indices(8, 1)].min()


def test_tpe_batches_spread_out_with_the_constant_liar():
    space = Space({"x": Real(-1.0, 1.0), "y": Real(-1.0, 1.0)})
    liar = _batch_min_gap(OptunaSearch(space, "tpe", seed=3))
    with pytest.warns(optuna.exceptions.ExperimentalWarning):  # group=True
        sampler = optuna.samplers.TPESampler(
            seed=3, constant_liar=False, multivariate=True, group=True
        )
    no_liar = _batch_min_gap(OptunaSearch(space, sampler))
    # Without the liar, TPE draws every member of a batch from the same model, so they
    # crowd around its mode (closest pair 0.04 apart here, at most 0.12 over seeds 0-5);
    # with it, pending trials count as bad results and push the others away (closest
    # pair at least 0.22 over the same seeds).
    assert liar > 0.2 and liar > 3 * no_liar


def test_gp_batches_are_not_copies():
    if importlib.util.find_spec("torch") is None:
        pytest.skip("Optuna's GP sampler needs torch")
    space = Space({"x": Real(-1.0, 1.0), "y": Real(-1.0, 1.0)})
    # Optuna's GP sampler conditions its acquisition on running trials.
    assert _batch_min_gap(OptunaSearch(space, "gp", seed=0)) > 1e-3


def test_multi_objective_nsga2_records_both_values():
    records = memory("mo", directions=("minimize", "minimize"))
    proposer = OptunaSearch(TOY_SPACE, "nsga2", seed=0, directions=("minimize", "minimize"))
    result = run(toy_two, proposer, 24, records=records, batch_size=8)
    assert result.best_value is None
    trials = records.trials()
    assert len(trials) == 24
    for t in trials:
        assert t.values == pytest.approx([toy_value(t.params), math.log10(t.params["lr"])])
    assert records.study.best_trials  # Optuna computes the Pareto front


# -- the mechanics of each proposer ---------------------------------------------------


def test_rung_budgets():
    assert rung_budgets(1, 27, 3) == [1, 3, 9, 27]
    assert rung_budgets(1, 10, 3) == [1, 3, 10]  # the top rung is max_budget
    assert rung_budgets(0.1, 1.0, 2) == pytest.approx([0.125, 0.25, 0.5, 1.0])
    with pytest.raises(ValueError, match="min_budget must be positive, got 0"):
        rung_budgets(0, 10, 3)
    with pytest.raises(ValueError, match="eta must be above 1, got 1"):
        rung_budgets(1, 10, 1)
    with pytest.raises(ValueError, match="max_budget must be at least min_budget"):
        rung_budgets(5, 2, 3)


def test_asha_promotes_the_top_third_at_once():
    space = Space({"x": Real(0.0, 1.0)})
    asha = ASHA(space, 1, 9, eta=3, seed=0)
    first = asha.ask(6)
    assert [p.budget for p in first] == [1] * 6
    xs = [p.config["x"] for p in first]
    asha.tell(first, xs)
    nxt = asha.ask(4)
    # 6 results at rung 0: the best two go up, the rest of the batch is new.
    assert [p.budget for p in nxt] == [3, 3, 1, 1]
    assert sorted(p.config["x"] for p in nxt[:2]) == sorted(xs)[:2]
    asha.tell(nxt, [p.config["x"] for p in nxt])
    asked = first + nxt
    for _ in range(10):
        ps = asha.ask(4)
        asha.tell(ps, [p.config["x"] for p in ps])
        asked += ps
    # Each configuration at most once per rung, unchanged when promoted.
    keys = [(p.info["config_id"], p.info["rung"]) for p in asked]
    assert len(keys) == len(set(keys))
    by_id = {}
    for p in asked:
        assert by_id.setdefault(p.info["config_id"], p.config) == p.config
    assert max(p.info["rung"] for p in asked) == 2


def test_successive_halving_waits_for_its_rung():
    space = Space({"x": Real(0.0, 1.0)})
    sh = SuccessiveHalving(space, 9, 1, 9, eta=3, seed=0)
    assert sh.sizes == [9, 3, 1]
    rung0 = sh.ask(5) + sh.ask(5)
    assert len(rung0) == 9 and sh.ask(3) == []  # nine started, none told
    sh.tell(rung0[:8], [p.config["x"] for p in rung0[:8]])
    assert sh.ask(3) == []  # one result missing
    sh.tell(rung0[8:], [rung0[8].config["x"]])
    rung1 = sh.ask(10)
    assert [p.budget for p in rung1] == [3, 3, 3]
    assert sorted(p.config["x"] for p in rung1) == sorted(p.config["x"] for p in rung0)[:3]
    sh.tell(rung1, [p.config["x"] for p in rung1])
    (top,) = sh.ask(10)
    sh.tell([top], [top.config["x"]])
    assert sh.finished and sh.ask(10) == []
    assert sh.best[0]["x"] == min(p.config["x"] for p in rung0) and sh.best[2] == 9


def test_grid_is_exhaustive_and_unique():
    space = Space(
        {
            "kernel": Categorical(("linear", "poly", "rbf")),
            "degree": Int(2, 4),
            "gamma": Real(1e-2, 1.0, log=True),
        },
        conditions={
            "degree": Condition("kernel", ("poly",)),
            "gamma": Condition("kernel", ("rbf", "poly")),
        },
        forbidden=[Forbidden({"kernel": "poly", "degree": 4})],
    )
    grid = GridSearch(space, resolution=3)
    points = [p.config for p in grid.ask(100)]
    # linear: 1; poly: 2 degrees x 3 gammas; rbf: 3 gammas.
    assert len(points) == 1 + 6 + 3 == len(grid)
    assert len({tuple(sorted(c.items())) for c in points}) == len(points)
    assert {"kernel": "rbf", "gamma": 0.1} in points
    assert grid.exhausted and grid.ask(5) == []


def test_sobol_is_balanced_and_deterministic():
    space = Space({"x": Real(0.0, 1.0), "y": Real(0.0, 1.0)})
    pts = np.array([[p.config["x"], p.config["y"]] for p in SobolSearch(space, 3).ask(16)])
    again = np.array([[p.config["x"], p.config["y"]] for p in SobolSearch(space, 3).ask(16)])
    np.testing.assert_array_equal(pts, again)
    # 16 Sobol points in 2-d: exactly one in each cell of a 4 x 4 grid.
    cells = {(int(4 * x), int(4 * y)) for x, y in pts}
    assert len(cells) == 16


def test_observe_moves_past_recorded_points():
    space = Space({"x": Real(0.0, 1.0)})
    first = RandomSearch(space, 5)
    old = first.ask(4) + first.ask(4)
    again = RandomSearch(space, 5)
    for p in old:
        again.observe(p, 0.0)
    new = again.ask(4)
    assert not {p.config["x"] for p in new} & {p.config["x"] for p in old}
    assert new[0].info["round"] == 2

    sobol = SobolSearch(space, 5)
    old = sobol.ask(8)
    resumed = SobolSearch(space, 5)
    for p in old:
        resumed.observe(p, 0.0)
    assert resumed.ask(1)[0].config == SobolSearch(space, 5).ask(9)[8].config

    grid = GridSearch(space, resolution=4)
    done = grid.ask(2)
    resumed = GridSearch(space, resolution=4)
    resumed.observe(done[0], 1.0)
    resumed.observe(done[1], None)  # cut off: asked again
    assert [p.config for p in resumed.ask(10)] == [done[1].config] + [
        p.config for p in grid.ask(10)
    ]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RandomSearch({"x": Real(0, 1)}), "space must be a hypergrad.space.Space"),
        (lambda: RandomSearch(Space({"x": Real(0, 1)}), seed=-1), r"seed must be an int .*-1"),
        (lambda: RandomSearch(Space({"x": Real(0, 1)})).ask(-2), r"n must be a non-negative"),
        (lambda: GridSearch(Space({"x": Real(0, 1)}), resolution=1), "resolution must be"),
        (lambda: OptunaSearch(Space({"x": Real(0, 1)}), "bayes"), "sampler must be 'tpe'"),
        (lambda: OptunaSearch(Space({"x": Real(0, 1)}), directions=["up"]), "directions must"),
        (lambda: SuccessiveHalving(Space({"x": Real(0, 1)}), 0, 1, 9), "n_configs must be"),
        (
            lambda: RandomSearch(Space({"x": Real(0, 1)})).tell([Proposal({"x": 0.5})], []),
            "one value per proposal",
        ),
        (
            lambda: run(toy, RandomSearch(TOY_SPACE), 2, records=memory(), batch_size=0),
            "batch_size must be a positive int, got 0",
        ),
    ],
)
def test_bad_input(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_every_search_refuses_a_space_that_forbids_every_point():
    from hypergrad.space import InvalidSpaceError

    space = Space(
        {"act": Categorical(("relu", "tanh")), "n": Int(1, 2)},
        forbidden=[Forbidden({"act": ("relu", "tanh")})],
    )
    with pytest.raises(
        InvalidSpaceError,
        match=r"space forbids every grid point: all 4 points at resolution=5 are forbidden "
        r"combinations \(the first: .*act.*\); forbidden=",
    ):
        GridSearch(space)
    # The others refuse it too (when they first ask), as ValueErrors.
    for proposer in (RandomSearch(space), SobolSearch(space), OptunaSearch(space, "random")):
        with pytest.raises(ValueError, match="forbidden"):
            proposer.ask(2)


def test_grid_workers_split_the_points_and_claim_each_once():
    """Proposers attached to one study (as workers are) skip the points other trials hold;
    two that propose one point at once: the first trial runs, the second is withdrawn."""
    from optuna.trial import TrialState

    from hypergrad.records import ClaimTakenError, record_trial

    space = Space({"k": Int(1, 4)})
    records = memory()
    a, b, c = (GridSearch(space) for _ in range(3))
    for g in (a, b, c):
        g.attach(records)
    (pa,) = a.ask(1)
    records.start(pa.config, space=space, claim=pa.claim)  # running in "worker a"
    (pb,) = b.ask(1)
    assert (pa.config, pb.config) == ({"k": 1}, {"k": 2})  # b skips the running point
    record_trial(records, toy_k, pb.config, space=space, claim=pb.claim)
    # b and c both propose k=3 before either records it.
    (pb2,), (pc,) = b.ask(1), c.ask(1)
    assert pb2.config == pc.config == {"k": 3}
    first, _ = record_trial(records, toy_k, pb2.config, space=space, claim=pb2.claim)
    with pytest.raises(ClaimTakenError, match=rf"trial {first} claimed 'grid:{{\"k\": 3}}'"):
        record_trial(records, toy_k, pc.config, space=space, claim=pc.claim)
    assert [t.params for t in records.trials()] == [{"k": 1}, {"k": 2}, {"k": 3}]
    assert [t.state for t in records.trials()][1:] == [TrialState.COMPLETE] * 2
    # The withdrawn trial never ran and is not a record; c moves on to the last point.
    assert [p.config for p in c.ask(5)] == [{"k": 4}]
    assert not c.exhausted


def toy_k(config, *, seed):
    return float(config["k"])


def test_failed_values_are_never_best():
    space = Space({"x": Real(0.0, 1.0)})
    asha = ASHA(space, 1, 9)
    ps = asha.ask(3)
    asha.tell(ps, [math.nan, None, 0.5])
    assert asha.best[1] == 0.5


def test_sample_key_independence_from_jax_x64():
    """Proposals depend on the seed only, not on whether JAX computes in float64."""
    before = [p.config for p in RandomSearch(TOY_SPACE, 9).ask(4)]
    jax.config.update("jax_enable_x64", False)
    try:
        after = [p.config for p in RandomSearch(TOY_SPACE, 9).ask(4)]
    finally:
        jax.config.update("jax_enable_x64", True)
    assert before == after
