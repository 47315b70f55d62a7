"""`tune(..., refine=k)`: refinement rounds after the proposed ones.

Each restarts the best configuration's best points at a third of the previous learning
rate; the references are NumPy's closed-form ridge loss (`test_tune._ridge_loss`), the
tuner's own records (starting points, recorded settings) and JAX's trace events.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hypergrad import problems
from hypergrad.records import Records, reproduce
from hypergrad.space import Categorical, Space
from hypergrad.tune import tune
from hypergrad.tune._trials import REFINE_ATTR

from .test_tune import (
    ALPHA,
    _counted,
    _grid_best,
    _records,
    _ridge,
    interrupted_run,
    ridge_factory,
)

SPACE = Space({"alpha": ALPHA})


def _trials_of(records, rnd):
    return [records.trial(m.trial) for m in rnd.members]


def test_refinement_restarts_the_best_points_slower_and_closes_on_the_optimum():
    pb = _ridge()
    alpha_star, value_star = _grid_best(pb)
    kwargs = dict(population=2, steps=6, learning_rate=0.5)
    plain = tune(pb, SPACE, records=_records(), **kwargs)
    records = _records()
    refined = tune(pb, SPACE, refine=3, records=records, **kwargs)

    levels = [r.level for r in refined.rounds]
    assert levels[0] == 0 and levels == list(range(len(levels))) and len(levels) >= 3
    for k, rnd in enumerate(refined.rounds):
        trials = _trials_of(records, rnd)
        # The learning rate it ran with is recorded (so `reproduce` rebuilds it).
        rates = [t.user_attrs["budget"]["settings"]["learning_rate"] for t in trials]
        assert rates == pytest.approx([0.5 / 3**k] * 2, rel=1e-12)
        assert {t.user_attrs.get(REFINE_ATTR) for t in trials} == {k}
        if k:  # starts: the best points of every earlier round, best first
            earlier = sorted(
                (m for r in refined.rounds[:k] for m in r.members), key=lambda m: m.value
            )[:2]
            starts = [m.start["alpha"] for m in rnd.members]
            assert starts == pytest.approx([float(m.hparams["alpha"]) for m in earlier])
            assert rnd.value <= min(r.value for r in refined.rounds[:k])
    # The same rounds without refinement stop farther from the closed-form optimum.
    assert plain.rounds[0].value == pytest.approx(refined.rounds[0].value, rel=1e-12)
    err = lambda res: abs(np.log(res.config["alpha"] / alpha_star))  # noqa: E731
    assert err(refined) < 0.5 * err(plain)
    assert refined.value - value_star < 0.1 * (plain.value - value_star)


def test_refinement_compiles_no_new_descent():
    """The learning rate is data: refinement rounds trace nothing that the first round
    did not (the outer objective is traced once per compiled program)."""
    counts = {}
    for refine in (0, 2):
        traces = []
        res = tune(
            _counted(_ridge(), traces),
            SPACE,
            population=2,
            steps=4,
            learning_rate=0.5,
            refine=refine,
            records=_records(),
        )
        counts[refine] = (len(traces), len(res.rounds))
    assert counts[2][1] == 3 and counts[0][1] == 1
    assert counts[2][0] == counts[0][0] > 0


def test_refinement_stops_when_it_no_longer_improves():
    pb = _ridge()
    res = tune(
        pb,
        SPACE,
        population=2,
        steps=40,
        learning_rate=0.3,
        refine=20,
        min_improvement=1e-3,
        records=_records(),
    )
    values = [r.value for r in res.rounds]
    assert 2 <= len(values) < 21
    # Every refinement but the last gained more than 0.1%, the last at most that.
    for k in range(1, len(values) - 1):
        assert values[k] < min(values[:k]) * (1 - 1e-3)
    assert values[-1] >= min(values[:-1]) * (1 - 1e-3)


def test_interrupted_refinement_resumes_without_rerunning_the_proposed_rounds(monkeypatch):
    space = Space({"features": Categorical(("all", "half")), "alpha": ALPHA})
    kwargs = dict(rounds=2, population=2, steps=6, learning_rate=0.4, refine=1)
    records = _records()
    interrupted_run(monkeypatch, 3, ridge_factory, space, records=records, **kwargs)

    resumed = tune(ridge_factory, space, records=records, **kwargs)
    assert [(r.resumed, r.level) for r in resumed.rounds] == [(True, 0), (True, 0), (False, 1)]
    assert resumed.num_inner_solves == 2 * 6  # only the refinement round ran again
    fresh = tune(ridge_factory, space, records=_records(), **kwargs)
    assert resumed.config == fresh.config
    assert resumed.value == pytest.approx(fresh.value, rel=1e-12)
    # Run again, everything is read back: nothing runs.
    again = tune(ridge_factory, space, records=records, **kwargs)
    assert again.num_inner_solves == 0 and again.value == resumed.value


def test_reproduce_a_refinement_trial(tmp_path):
    storage = f"sqlite:///{tmp_path / 'refine.db'}"
    records = Records.open(storage, "refined")
    space = Space({"features": Categorical(("all",)), "alpha": ALPHA})
    kwargs = dict(population=2, steps=5, learning_rate=0.5, refine=1)
    res = tune(ridge_factory, space, records=records, **kwargs)
    (trial, *_) = _trials_of(records, res.rounds[1])
    rep = reproduce(storage, "refined", trial.number, rtol=1e-9)
    assert rep.within_tolerance and rep.matches, rep.summary()


def _array_ridge(config, *, seed):
    X, y = problems.synthetic_regression(80, 4, seed=seed)
    pb = problems.ridge(X[:40], y[:40], X[40:], y[40:])
    return dataclasses.replace(pb, hparams={"alpha": jnp.ones(4)})


@pytest.mark.parametrize(
    "args, match",
    [
        (dict(refine=-1), "refine must be a non-negative int"),
        (dict(refine=True), "refine must be a non-negative int"),
        (dict(refine=1, optimizer=optax.adam(0.1)), "optimizer given by name"),
        (
            dict(
                refine=1,
                problem=ridge_factory,
                space=Space({"features": Categorical(("all", "half"), relax="softmax")}),
            ),
            "relaxed dimensions",
        ),
        (
            dict(
                refine=1,
                problem=_array_ridge,
                space=Space({"c": Categorical(("a",)), "alpha": ALPHA}),
            ),
            "are arrays",
        ),
    ],
    ids=["negative", "bool", "transformation", "relaxed", "array"],
)
def test_bad_refine_arguments_raise_before_any_trial(args, match):
    records = _records()
    args = {"problem": _ridge(), "space": SPACE, **args}
    with pytest.raises((ValueError, TypeError), match=match):
        tune(args.pop("problem"), args.pop("space"), records=records, **args)
    assert records.trials() == []
