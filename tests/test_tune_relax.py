"""The tuner with relaxed discrete dimensions: a choice of feature map for ridge, relaxed
by softmax and by Gumbel-softmax, against enumeration; the relaxed and the exact value;
records, resume and reproduce; bad input."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import optuna
import pytest

import hypergrad as hg
from hypergrad import problems
from hypergrad.records import Records, reproduce, to_optuna_distributions
from hypergrad.solvers import Newton
from hypergrad.space import RELAXED, Categorical, Condition, Int, InvalidSpaceError, Real, Space
from hypergrad.tune import tune
from hypergrad.tune._plan import discrete_space, seeds_of

MAPS = {"identity": lambda z: z, "tanh": jnp.tanh, "cube": lambda z: z**3 / 3}
ALPHA = Real(1e-4, 1e2, log=True)
GRID = np.geomspace(1e-4, 1e2, 601)
# One object, so tune calls share the compiled outer step; Dense, because the relaxed
# inner Hessian is only 12 x 12 and a dense solve compiles faster than CG.
METHOD = hg.Implicit(hg.Dense())
SEED = seeds_of(0, 1)[0]  # the seed tune builds its single problem with


def _features(X, name):
    Z = np.asarray(MAPS[name](jnp.asarray(X)))
    return (Z - Z[:60].mean(0)) / Z[:60].std(0)


def _scaled(Phi, weights):
    """Each map's block of features scaled by its weight: a one-hot weight is that map."""
    return (Phi * weights[None, :, None]).reshape(Phi.shape[0], -1)


def _relaxed_inner(w, h, data):
    Phi, y = data
    return 0.5 * jnp.mean((_scaled(Phi, h["map"]) @ w - y) ** 2) + 0.5 * h["alpha"] * w @ w


def _relaxed_outer(w, h, data):
    Phi, y = data
    return 0.5 * jnp.mean((_scaled(Phi, h["map"]) @ w - y) ** 2)


def factory(config, *, seed):
    """Ridge on one feature map of the inputs; the truth is tanh, so tanh should win.

    With `config["map"] is RELAXED`, every map's features sit side by side, scaled by
    `hparams["map"]` (the tuner's weights, shape (3,)).
    """
    rng = np.random.default_rng(0)
    X = 1.5 * rng.standard_normal((150, 4))  # wide enough for tanh to saturate
    y = np.tanh(X) @ rng.standard_normal(4) + 0.3 * rng.standard_normal(150)
    idx = np.random.default_rng(seed).permutation(150)
    X, y = X[idx], y[idx] - y[idx][:60].mean()
    if config["map"] is RELAXED:
        Phi = jnp.asarray(np.stack([_features(X, m) for m in MAPS], axis=1))
        y = jnp.asarray(y)
        return hg.BilevelProblem(
            inner=_relaxed_inner,
            outer=_relaxed_outer,
            init_params=jnp.zeros(Phi.shape[1] * Phi.shape[2]),
            train=(Phi[:60], y[:60]),
            val=(Phi[60:120], y[60:120]),
            test=(Phi[120:], y[120:]),
            hparams={"alpha": jnp.asarray(1.0), "map": jnp.full(3, 1 / 3)},
            solver=Newton(max_steps=1),  # the inner problem is quadratic: one step is exact
        )
    Z = _features(X, config["map"])
    return problems.ridge(Z[:60], y[:60], Z[60:120], y[60:120], Z[120:], y[120:])


def indexed_factory(config, *, seed):
    """The same problem with the map given by its number, 1 to 3 (an `Int`)."""
    index = config["map"]
    return factory({"map": index if index is RELAXED else tuple(MAPS)[index - 1]}, seed=seed)


def _records(storage=None):
    return Records.open(storage or optuna.storages.InMemoryStorage(), "relaxed")


def _closed_form(pb, alphas, split="val"):
    """The ridge validation (or test) loss at each penalty in `alphas`, by NumPy's dense
    algebra (independent of the library's solvers and methods): with the eigenvectors
    `V` and eigenvalues `d` of `X^T X / n`, `w(alpha) = V diag(1 / (d + alpha)) V^T X^T y / n`."""
    X, y = (np.asarray(a, np.float64) for a in pb.train)
    Xo, yo = (np.asarray(a, np.float64) for a in (pb.val if split == "val" else pb.test))
    d, V = np.linalg.eigh(X.T @ X / len(y))
    b = V.T @ (X.T @ y / len(y))
    W = V @ (b[:, None] / (d[:, None] + np.atleast_1d(alphas)[None, :]))  # (p, len(alphas))
    return 0.5 * np.mean((Xo @ W - yo[:, None]) ** 2, axis=0)


def _exact(config, split="val"):
    pb = factory({"map": config["map"]}, seed=SEED)
    return float(_closed_form(pb, config["alpha"], split)[0])


@pytest.fixture(scope="module")
def enumerated():
    """The best validation value of each map over a dense grid of penalties."""
    return {m: float(_closed_form(factory({"map": m}, seed=SEED), GRID).min()) for m in MAPS}


def test_softmax_relaxation_finds_the_enumerated_choice_with_both_values(enumerated):
    records = _records()
    space = Space({"map": Categorical(tuple(MAPS), relax="softmax"), "alpha": ALPHA})
    res = tune(
        factory, space, population=2, steps=30, learning_rate=0.2, method=METHOD, records=records
    )
    best = min(enumerated, key=enumerated.get)
    assert best == "tanh" and enumerated["tanh"] < 0.5 * min(enumerated["identity"], 1.0)
    assert res.config["map"] == best
    # The penalty was tuned with the other maps' weights near (not at) zero: its exact
    # value is near the enumerated optimum, not at it; 2% is a few times the gap seen.
    assert enumerated[best] <= res.value <= 1.02 * enumerated[best]

    # The exact value is a direct evaluation of the discretized configuration.
    assert res.value == pytest.approx(_exact(res.config), rel=1e-10)
    member = min(res.rounds[0].members, key=lambda m: m.value)
    assert member.choice == {"map": res.config["map"]}
    assert res.relaxed_value == member.relaxed_value
    # The relaxed value is the relaxed problem's at the member's weights and penalty.
    weights = member.hparams["map"]
    assert weights.shape == (3,) and weights.sum() == pytest.approx(1.0)
    assert tuple(MAPS)[int(np.argmax(weights))] == res.config["map"]
    relaxed_pb = factory({"map": RELAXED}, seed=SEED)
    scaled = types.SimpleNamespace(
        train=(_scaled(relaxed_pb.train[0], weights), relaxed_pb.train[1]),
        val=(_scaled(relaxed_pb.val[0], weights), relaxed_pb.val[1]),
    )
    relaxed_exact = float(_closed_form(scaled, res.config["alpha"])[0])
    assert res.relaxed_value == pytest.approx(relaxed_exact, rel=1e-8)
    assert res.relaxed_value != res.value  # two different evaluations
    # Every member is evaluated exactly, and the records hold both numbers.
    for m in res.rounds[0].members:
        config = {"map": m.choice["map"], "alpha": float(m.hparams["alpha"])}
        assert m.value == pytest.approx(_exact(config), rel=1e-10)
        t = records.trial(m.trial)
        assert "map" not in t.params  # a relaxed dimension has no single starting value
        assert t.value == m.value
        assert t.user_attrs["result.relaxed_value"] == m.relaxed_value
        assert t.user_attrs["result.choice"] == m.choice
    assert res.test_value == pytest.approx(_exact(res.config, split="test"), rel=1e-10)


def test_gumbel_relaxed_int_finds_the_choice_reproduces_and_resumes(enumerated, tmp_path):
    storage = f"sqlite:///{tmp_path / 'relaxed.db'}"
    records = _records(storage)
    # An Int from 1: its argmax must come back as the integer, not the index.
    space = Space({"map": Int(1, 3, relax="gumbel", temperature=0.5), "alpha": ALPHA})
    kwargs = dict(population=2, steps=30, learning_rate=0.2, method=METHOD)
    res = tune(indexed_factory, space, records=records, **kwargs)
    best = min(enumerated, key=enumerated.get)
    assert res.config["map"] == 1 + tuple(MAPS).index(best)
    config = {"map": best, "alpha": res.config["alpha"]}
    assert res.value == pytest.approx(_exact(config), rel=1e-10)
    assert res.relaxed_value is not None and np.isfinite(res.relaxed_value)
    # The replay draws the same Gumbel noise: the relaxed curve and the exact value match.
    t = records.trials()[0]
    rep = reproduce(storage, "relaxed", t.number, rtol=1e-9)
    assert rep.within_tolerance, rep.summary()
    assert len(rep.reproduced_intermediate) == t.user_attrs["budget"]["steps"]
    # A finished run read back from its records: the same result, no new work.
    again = tune(indexed_factory, space, records=records, **kwargs)
    assert [r.resumed for r in again.rounds] == [True]
    assert again.num_inner_solves == 0
    assert again.config == res.config
    assert (again.value, again.relaxed_value) == (res.value, res.relaxed_value)


def _lacking_weights(config, *, seed):
    pb = factory(config, seed=seed)
    if config["map"] is RELAXED:
        pb = dataclasses.replace(pb, hparams={"alpha": pb.hparams["alpha"]})
    return pb


def _wrong_shape(config, *, seed):
    pb = factory(config, seed=seed)
    if config["map"] is RELAXED:
        pb = dataclasses.replace(pb, hparams={**pb.hparams, "map": jnp.zeros(2)})
    return pb


def _no_exact(config, *, seed):
    if config["map"] is RELAXED:
        return factory(config, seed=seed)
    pb = factory(config, seed=seed)  # the exact problem keeps a weights leaf
    return dataclasses.replace(pb, hparams={**pb.hparams, "map": jnp.ones(3)})


RELAXED_SPACE = Space({"map": Categorical(tuple(MAPS), relax="softmax"), "alpha": ALPHA})


@pytest.mark.parametrize(
    "problem, space, match",
    [
        (_lacking_weights, RELAXED_SPACE, "no entry 'map' for relaxed dimension 'map'"),
        (_wrong_shape, RELAXED_SPACE, r"float array of shape \(3,\).*got shape \(2,\)"),
        (_no_exact, RELAXED_SPACE, "hyperparameters without a continuous dimension"),
        (factory({"map": "tanh"}, seed=0), RELAXED_SPACE, "pass a factory"),
        (
            factory,
            Space(
                {
                    "map": Categorical(tuple(MAPS), relax="softmax"),
                    "alpha": ALPHA,
                    "beta": ALPHA,
                },
                conditions={"beta": Condition("map", ("cube",))},
            ),
            "'beta' is conditioned on relaxed dimension 'map'",
        ),
    ],
    ids=["no-weights", "wrong-shape", "exact-has-weights", "fixed-problem", "relaxed-parent"],
)
def test_bad_relaxed_input_raises_before_any_trial(problem, space, match):
    records = _records()
    with pytest.raises(ValueError, match=match):
        tune(problem, space, records=records, method=METHOD)
    assert records.trials() == []


def test_unknown_relax_kind_and_stray_temperature_are_refused():
    with pytest.raises(InvalidSpaceError, match="'map': relax must be one of 'softmax', 'gumbel'"):
        Space({"map": Categorical(tuple(MAPS), relax="argmax")})
    with pytest.raises(InvalidSpaceError, match="'k': temperature must be positive"):
        Space({"k": Int(1, 3, relax="gumbel", temperature=0.0)})
    with pytest.raises(InvalidSpaceError, match="only used with relax"):
        Space({"k": Int(1, 3, temperature=0.5)})


def test_relax_is_a_request_to_the_tuner_only():
    space = Space({"map": Categorical(tuple(MAPS), relax="gumbel"), "k": Int(1, 3), "a": ALPHA})
    assert space.discrete == ("map", "k") and space.relaxed == ("map",)
    assert space.continuous == ("a",)
    # Searched and recorded as the plain dimension: the same distribution for Optuna.
    plain = Space({"map": Categorical(tuple(MAPS)), "k": Int(1, 3), "a": ALPHA})
    assert to_optuna_distributions(space) == to_optuna_distributions(plain)
    assert space.sample_configs(jax.random.key(0), 4) == plain.sample_configs(jax.random.key(0), 4)
    assert discrete_space(space).names == ("k",)


BUILT: list = []


def counting_factory(config, *, seed):
    """`factory`, remembering each configuration and seed it was called with."""
    BUILT.append((tuple(sorted((k, repr(v)) for k, v in config.items())), seed))
    return factory(config, seed=seed)


def test_the_factory_is_called_once_per_configuration_and_seed():
    BUILT.clear()
    space = Space({"map": Categorical(tuple(MAPS), relax="softmax"), "alpha": ALPHA})
    # The relaxed problem for the descent, the exact ones for the check before the
    # trials, the members' discretized choices and the best member's test value: each
    # configuration is built once per seed.
    res = tune(
        counting_factory, space, population=3, seeds=2, steps=3, method=METHOD, records=_records()
    )
    assert res.test_value is not None
    assert len(BUILT) == len(set(BUILT))
    configs = {c for c, _ in BUILT}
    assert len(BUILT) == 2 * len(configs) and len(configs) >= 2  # relaxed and >= 1 exact
