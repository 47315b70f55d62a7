"""The tuner's settings as JSON, and methods and solvers written by their fields: every
object comes back equal (and estimates the same), lossy cases are refused, nothing is
evaluated."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad._config import from_config, to_config
from hypergrad.methods import AbstractMethod
from hypergrad.solvers import (
    FISTA,
    L1,
    LBFGS,
    AbstractSolver,
    CoordinateDescent,
    ElasticNet,
    Newton,
    OptaxSolver,
)
from hypergrad.tune import TuneSettings

OBJECTS = [
    hg.Implicit(),
    hg.Implicit(hg.CG(tol=1e-6, atol=1e-12, maxiter=7)),
    hg.Implicit(hg.GMRES(tol=1e-7, atol=1e-9, restart=5)),
    hg.Implicit(hg.BiCGStab(atol=1e-4)),
    hg.Implicit(hg.Neumann(num_terms=3, step_size=0.5)),
    hg.Implicit(hg.Dense(symmetric=True)),
    hg.Implicit(hg.Identity(scale=0.1)),
    hg.Unrolled(mode="forward"),
    hg.Unrolled(checkpoints=4),
    hg.Truncated(3),
    Newton(max_steps=3, tol=1e-9, damping=0.5),
    LBFGS(max_steps=20, memory_size=4),
    CoordinateDescent(ElasticNet("a1", "a2"), tol=1e-6, working_set=32),
    FISTA(L1("alpha"), lipschitz=2.0, restart=False),
]


def _through_json(obj):
    return from_config(json.loads(json.dumps(to_config(obj))))


@pytest.mark.parametrize("obj", OBJECTS, ids=repr)
def test_objects_come_back_equal_from_json(obj):
    again = _through_json(obj)
    assert type(again) is type(obj) and again == obj
    assert to_config(again) == to_config(obj)
    base = AbstractMethod if isinstance(obj, AbstractMethod) else AbstractSolver
    assert type(obj).from_config(obj.to_config()) == obj
    assert base.from_config(obj.to_config()) == obj


def test_the_absolute_tolerances_that_repr_loses_are_kept():
    for cls in (hg.GMRES, hg.BiCGStab):
        solver = cls(atol=1e-5)
        assert "atol" not in repr(solver)  # what eval(repr(...)) used to lose
        assert _through_json(solver).atol == 1e-5


def test_es_keeps_its_key_and_estimates_the_same_gradient():
    method = hg.ES(num_samples=64, sigma=1e-2, key=jax.random.key(7))
    again = _through_json(method)
    assert np.array_equal(jax.random.key_data(again.key), jax.random.key_data(method.key))

    def fun(w, alpha, args):
        return 0.5 * jnp.sum((w - 1.0) ** 2) + 0.5 * alpha * w @ w

    def w0(m, alpha):
        return hg.solve(fun, jnp.zeros(2), alpha, solver=Newton(), method=m).params[0]

    g = [float(jax.grad(lambda a, m=m: w0(m, a))(1.0)) for m in (method, again)]
    assert g[0] == g[1]  # the same draws, bit for bit


def test_objects_that_are_not_data_are_refused_not_written_lossily():
    with pytest.raises(TypeError, match="OptaxSolver.optimizer .* is not data"):
        to_config(OptaxSolver(optax.sgd(0.1)))
    with pytest.raises(TypeError, match="only hypergrad objects"):
        to_config(optax.sgd(0.1))
    with pytest.raises(ValueError, match="must name a hypergrad class"):
        from_config({"type": "os:system", "fields": {"command": "true"}})
    with pytest.raises(ValueError, match="describes a Newton, not a AbstractMethod"):
        AbstractMethod.from_config(Newton().to_config())


def test_tuner_settings_round_trip_through_json():
    settings = TuneSettings(
        rounds=3,
        population=4,
        seeds=2,
        steps=12,
        halving=2,
        method=hg.Implicit(hg.GMRES(atol=1e-8)),
        optimizer="sgd",
        learning_rate=0.3,
        tol=1e-6,
        min_improvement=1e-4,
        inner_tol=(1e-3, 1e-8),
        seed=9,
        throw=True,
        gap_threshold=0.2,
        time_budget_s=60.0,
    )
    data = json.loads(json.dumps(settings.to_json()))
    assert TuneSettings.from_json(data) == settings
    assert TuneSettings.from_json(TuneSettings().to_json()) == TuneSettings()
    custom = TuneSettings(optimizer=optax.adam(0.1)).to_json()
    assert custom["optimizer"] is None
    with pytest.raises(ValueError, match="custom optimizer object; it cannot be rebuilt"):
        TuneSettings.from_json(custom)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rounds": 0}, "rounds must be a positive int, got rounds=0"),
        ({"halving": 1}, "halving must be at least 2"),
        ({"method": "implicit"}, "method must be a hypergrad method"),
        ({"optimizer": "no_such"}, "optimizer must name an optax optimizer"),
        ({"tol": -1.0}, "tol must be >= 0, got tol=-1.0"),
        ({"inner_tol": (1e-8, 1e-3)}, "need 0 < end <= start"),
        ({"gap_threshold": -0.1}, "gap_threshold must be a non-negative number"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_settings_name_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TuneSettings(**kwargs)
