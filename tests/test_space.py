"""Search spaces: transforms round-trip, samples are valid members, bad spaces are refused."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from hypergrad.space import (
    Batch,
    Categorical,
    Condition,
    Forbidden,
    Int,
    InvalidConfigError,
    InvalidSpaceError,
    Real,
    Space,
)


def mixed_space():
    return Space(
        {
            "act": Categorical(("relu", "tanh", "gelu")),
            "n_layers": Int(1, 4),
            "lr": Real(1e-4, 1e-1, log=True),
            "width3": Int(8, 128, log=True),
            "dropout": Real(0.0, 0.5),
        },
        conditions={
            "width3": Condition("n_layers", (3, 4)),
            "dropout": Condition("width3", range(64, 129)),
        },
        forbidden=[Forbidden({"act": "gelu", "n_layers": (1, 2)})],
    )


# -- transforms ----------------------------------------------------------------------


@st.composite
def reals(draw):
    log = draw(st.booleans())
    if log:
        low = 10.0 ** draw(st.floats(-8, 3))
        high = low * 10.0 ** draw(st.floats(0.01, 8))
    else:
        low = draw(st.floats(-1e3, 1e3))
        high = low + draw(st.floats(1e-3, 1e3))
    return Real(low, high, log=log)


@given(dim=reals(), t=st.floats(0.0, 1.0))
def test_real_transform_round_trips(dim, t):
    dim.check("x")
    x = float(dim.from_unit(t))
    assert dim.problem(x) is None
    back = float(dim.from_unconstrained(dim.to_unconstrained(x)))
    # float64 logit/sigmoid lose about eps * 1 / (t (1 - t)) in the position t, which
    # the bounds scale; away from the ends that is a few ulps of the span (or of log x).
    span = math.log(dim.high / dim.low) if dim.log else dim.high - dim.low
    err = abs(math.log(back / x)) if dim.log else abs(back - x)
    assert err <= 1e-12 * span / max(min(t, 1 - t), 1e-4) + 4 * np.finfo(float).eps * abs(x)


@given(dim=reals(), u=st.floats(-50.0, 50.0))
def test_unconstrained_maps_inside_bounds_and_back(dim, u):
    x = float(dim.from_unconstrained(u))
    assert dim.low <= x <= dim.high
    if abs(u) < 20:  # beyond that, sigmoid saturates to the bound in float64
        assert float(dim.to_unconstrained(x)) == pytest.approx(u, abs=1e-6 * (1 + abs(u)))


def test_transforms_compose_with_jit_vmap_grad():
    space = mixed_space()
    batch = space.sample(jax.random.key(1), 32)

    @jax.jit
    def roundtrip(values):
        return space.from_unconstrained(space.to_unconstrained(values))

    back = roundtrip(batch.values)
    assert set(back) == {"lr", "dropout"}
    np.testing.assert_allclose(back["lr"], batch.values["lr"], rtol=1e-12)
    # The derivative of from_unconstrained is the chain rule through sigmoid and exp:
    # dx/du = t (1 - t) * (log high - log low) * x for the log scale.
    lr = space.dims["lr"]
    u = jnp.linspace(-3.0, 3.0, 7)
    g = jax.vmap(jax.grad(lr.from_unconstrained))(u)
    t = jax.nn.sigmoid(u)
    expected = t * (1 - t) * math.log(1e3) * lr.from_unconstrained(u)
    np.testing.assert_allclose(g, expected, rtol=1e-10)
    assert space.continuous == ("lr", "dropout")
    assert set(space.discrete) == {"act", "n_layers", "width3"}


# -- sampling ------------------------------------------------------------------------


@st.composite
def spaces(draw):
    n = draw(st.integers(1, 5))
    dims, conditions, discrete = {}, {}, []
    for i in range(n):
        name = f"d{i}"
        kind = draw(st.sampled_from(["real", "int", "cat"]))
        if kind == "real":
            dims[name] = draw(reals())
        elif kind == "int":
            log = draw(st.booleans())
            low = draw(st.integers(1 if log else -20, 20))
            dims[name] = Int(low, low + draw(st.integers(1, 200)), log=log)
        else:
            k = draw(st.integers(2, 4))
            choices = draw(
                st.lists(
                    st.sampled_from(["a", "b", "c", 1, 2.5, True, None]),
                    min_size=k,
                    max_size=k,
                    unique=True,  # by ==, as Optuna compares choices
                )
            )
            dims[name] = Categorical(choices)
        if discrete and draw(st.booleans()):
            parent = draw(st.sampled_from(discrete))
            pd = dims[parent]
            domain = (
                list(pd.values())
                if isinstance(pd, Categorical)
                else list(range(pd.low, min(pd.high, pd.low + 5) + 1))
            )
            vals = draw(
                st.lists(
                    st.sampled_from(domain),
                    min_size=1,
                    max_size=len(domain),
                    unique_by=lambda c: (type(c), c),
                )
            )
            conditions[name] = Condition(parent, vals)
        if kind != "real":
            discrete.append(name)
    forbidden = []
    if discrete and draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(discrete), min_size=1, max_size=2, unique=True))
        clause = {}
        for name in names:
            d = dims[name]
            clause[name] = draw(
                st.sampled_from(list(d.values()) if isinstance(d, Categorical) else [d.low, d.high])
            )
        forbidden.append(Forbidden(clause))
    return Space(dims, conditions, forbidden)


def _check_member(space, config):
    assert space.problems(config) == []
    for name, dim in space.dims.items():
        if not space.is_active(name, config):
            assert name not in config  # inactive dimensions are never present
            continue
        v = config[name]
        if isinstance(dim, Real):
            assert type(v) is float and dim.low <= v <= dim.high
        elif isinstance(dim, Int):
            assert type(v) is int and dim.low <= v <= dim.high
        else:
            assert dim.problem(v) is None
    for f in space.forbidden:
        assert not space._matches(f, config)


@given(space=spaces(), seed=st.integers(0, 2**31 - 1))
def test_samples_are_valid_members(space, seed):
    batch = space.sample(jax.random.key(seed), 16)
    assert isinstance(batch, Batch) and len(batch) == 16
    for name, dim in space.dims.items():
        v, a = batch.values[name], batch.active[name]
        assert v.shape == (16,) and a.shape == (16,) and a.dtype == jnp.bool_
        assert jnp.issubdtype(v.dtype, jnp.floating if isinstance(dim, Real) else jnp.integer)
        # Inactive entries hold the documented placeholder.
        assert np.all(np.asarray(v)[~np.asarray(a)] == dim.placeholder)
    configs = space.unstack(batch)
    for c in configs:
        _check_member(space, c)
    restacked = space.stack(configs)
    for name in space.names:
        np.testing.assert_array_equal(restacked.values[name], batch.values[name])
        np.testing.assert_array_equal(restacked.active[name], batch.active[name])


def test_sample_is_a_function_of_the_key():
    space = mixed_space()
    a, b = space.sample(jax.random.key(3), 20), space.sample(jax.random.key(3), 20)
    c = space.sample(jax.random.key(4), 20)
    assert space.unstack(a) == space.unstack(b) != space.unstack(c)


def test_sample_laws():
    """Log-uniform reals are uniform in log x; uniform ints hit every value equally."""
    space = Space({"lr": Real(1e-4, 1e-1, log=True), "k": Int(1, 4)})
    batch = space.sample(jax.random.key(0), 4000)
    t = (np.log(np.asarray(batch.values["lr"])) - np.log(1e-4)) / np.log(1e3)
    # Kolmogorov-Smirnov against U(0, 1) at level 1e-3: a broken law fails by far more.
    assert scipy.stats.kstest(t, "uniform").pvalue > 1e-3
    counts = np.bincount(np.asarray(batch.values["k"]) - 1, minlength=4)
    assert scipy.stats.chisquare(counts).pvalue > 1e-3


def test_batch_is_vmappable():
    space = mixed_space()
    batch = space.sample(jax.random.key(2), 8)
    out = jax.vmap(lambda b: jnp.where(b.active["width3"], b.values["width3"], 0) * b.values["lr"])(
        batch
    )
    expected = np.where(batch.active["width3"], batch.values["width3"], 0) * batch.values["lr"]
    np.testing.assert_allclose(out, expected)


def test_conditional_chain_activity():
    space = mixed_space()
    assert space.is_active("dropout", {"n_layers": 3, "width3": 100})
    assert not space.is_active("dropout", {"n_layers": 2, "width3": 100})  # parent inactive
    assert not space.is_active("dropout", {"n_layers": 4, "width3": 10})
    assert (
        space.names.index("n_layers") < space.names.index("width3") < space.names.index("dropout")
    )


def test_sample_bad_input():
    space = mixed_space()
    with pytest.raises(TypeError, match=r"key must be a PRNG key from jax.random.key, got 0"):
        space.sample(0, 4)
    with pytest.raises(ValueError, match=r"n must be a non-negative int, got -1"):
        space.sample(jax.random.key(0), -1)
    with pytest.raises(ValueError, match=r"u must have shape \(n, 5\), got \(3, 2\)"):
        space.from_unit(np.zeros((3, 2)))


def test_forbidden_everything_is_reported():
    space = Space({"a": Categorical(("x", "y"))}, forbidden=[Forbidden({"a": ("x", "y")})])
    with pytest.raises(InvalidSpaceError, match="forbidden combinations rejected"):
        space.sample(jax.random.key(0), 4, max_rounds=3)


# -- validation messages -------------------------------------------------------------


def test_invalid_config_lists_every_problem():
    space = mixed_space()
    probs = space.problems({"act": "swish", "n_layers": 2, "lr": 2.0, "width3": 9, "zz": 1})
    assert "unknown dimension 'zz'" in probs
    assert "'act': 'swish' is not one of ('relu', 'tanh', 'gelu')" in probs
    assert "'lr': 2.0 is above high=0.1" in probs
    assert any(p.startswith("'width3' is present but inactive") for p in probs)
    with pytest.raises(InvalidConfigError, match=r"config is invalid: .*'lr': 2.0 is above"):
        space.validate({"act": "relu", "n_layers": 2, "lr": 2.0})
    assert space.problems({"act": "relu", "n_layers": 3, "lr": 0.01}) == [
        "'width3' is missing (active because n_layers=3 is in (3, 4))"
    ]
    assert space.problems({"act": "gelu", "n_layers": 2, "lr": 0.01}) == [
        "forbidden combination: act='gelu', n_layers in (1, 2)"
    ]
    assert space.problems({"act": "relu", "n_layers": 2.0, "lr": 0.01}) == [
        "'n_layers': must be an integer, got 2.0"
    ]
    assert space.problems({"act": True, "n_layers": 2, "lr": float("nan")}) == [
        "'act': True is not one of ('relu', 'tanh', 'gelu')",
        "'lr': must be finite, got nan",
    ]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Space({"lr": Real(0.1, 0.1)}), r"'lr': low must be below high"),
        (lambda: Space({"lr": Real(1.0, 0.1)}), r"'lr': low must be below high, got low=1.0"),
        (lambda: Space({"lr": Real(0.0, 1.0, log=True)}), r"'lr': log=True needs low > 0"),
        (lambda: Space({"lr": Real(-1.0, math.inf)}), r"'lr': high must be a finite number"),
        (lambda: Space({"k": Int(3, 3)}), r"'k': low must be below high"),
        (lambda: Space({"k": Int(0, 3, log=True)}), r"'k': log=True needs low > 0"),
        (lambda: Space({"k": Int(0.5, 3)}), r"'k': low must be an integer"),
        (lambda: Space({"act": Categorical([])}), r"'act': choices must not be empty"),
        (lambda: Space({"act": Categorical(["a", "a"])}), r"'act': choice 'a' appears twice"),
        (lambda: Space({"act": Categorical([1, True])}), r"'act': choice True appears twice"),
        (lambda: Space({"act": Categorical([[1]])}), r"'act': a choice must be a str"),
        (
            lambda: Space({"w": Int(1, 3)}, conditions={"w": Condition("depth", (1,))}),
            r"'w': condition on unknown parent 'depth'",
        ),
        (
            lambda: Space(
                {"w": Int(1, 3), "lr": Real(0.1, 1.0)}, conditions={"w": Condition("lr", (0.5,))}
            ),
            r"'w': condition on continuous parent 'lr'",
        ),
        (
            lambda: Space({"w": Int(1, 3), "d": Int(1, 3)}, conditions={"w": Condition("d", (7,))}),
            r"'w': condition on 'd' names value 7",
        ),
        (
            lambda: Space(
                {"a": Int(1, 3), "b": Int(1, 3), "c": Int(1, 3)},
                conditions={
                    "a": Condition("c", (1,)),
                    "b": Condition("a", (1,)),
                    "c": Condition("b", (1,)),
                },
            ),
            r"'a': conditions form a cycle \(a -> c -> b -> a\)",
        ),
        (
            lambda: Space({"a": Int(1, 3)}, conditions={"a": Condition("a", (1,))}),
            r"'a': a dimension cannot be its own parent",
        ),
        (
            lambda: Space({"a": Int(1, 3)}, forbidden=[Forbidden({"zz": 1})]),
            r"'zz': forbidden clause on an unknown dimension",
        ),
        (
            lambda: Space({"a": Real(0.0, 1.0)}, forbidden=[Forbidden({"a": 0.5})]),
            r"'a': forbidden clauses name discrete values",
        ),
        (lambda: Space({}), r"dims must be a non-empty mapping"),
        (lambda: Space({"a": (0, 1)}), r"'a': must be a Real, Int or Categorical"),
    ],
)
def test_invalid_spaces_are_refused_naming_the_dimension(make, match):
    with pytest.raises(InvalidSpaceError, match=match):
        make()


@given(low=st.floats(-1e6, 1e6), gap=st.floats(0.0, 1e6), log=st.booleans())
def test_empty_real_bounds_are_refused(low, gap, log):
    with pytest.raises(InvalidSpaceError, match=r"^'width': "):
        Space({"width": Real(low, low - gap, log=log)})


@given(low=st.integers(-100, 0), high=st.integers(1, 100))
def test_log_int_through_zero_is_refused(low, high):
    with pytest.raises(InvalidSpaceError, match=r"'depth': log=True needs low > 0"):
        Space({"depth": Int(low, high, log=True)})
