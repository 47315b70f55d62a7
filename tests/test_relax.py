"""Relaxations: Gumbel-softmax sampling law, gradients to the logits, straight-through,
relaxed integers, smoothed metrics, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from hypergrad import relax

from ._problems import central_difference

PROBS = np.array([0.05, 0.1, 0.2, 0.25, 0.4])
N_SAMPLES = 20_000


@pytest.fixture(scope="module")
def low_temperature_samples():
    logits = jnp.log(jnp.asarray(PROBS))
    keys = jax.random.split(jax.random.key(1), N_SAMPLES)
    sample = jax.jit(jax.vmap(lambda k: relax.gumbel_softmax(k, logits, 0.01)))
    return np.asarray(sample(keys))


def test_gumbel_softmax_frequencies_match_probabilities(low_temperature_samples):
    y = low_temperature_samples
    # At temperature 0.01 a sample is one-hot up to rounding unless two perturbed logits
    # are within ~0.01 of each other: its argmax is the Gumbel-max sample.
    assert np.mean(y.max(axis=1) > 0.99) > 0.95
    counts = np.bincount(y.argmax(axis=1), minlength=len(PROBS))
    expected = N_SAMPLES * PROBS
    chi2 = np.sum((counts - expected) ** 2 / expected)
    # Pearson's statistic is chi-square with k - 1 degrees of freedom under the null;
    # the fixed seed makes this deterministic, the 0.999 quantile makes it meaningful
    # (a wrong law, e.g. uniform, gives chi2 in the thousands at this sample size).
    assert chi2 < stats.chi2.ppf(0.999, df=len(PROBS) - 1), (chi2, counts)
    uniform = N_SAMPLES / len(PROBS)
    assert np.sum((counts - uniform) ** 2 / uniform) > 1000


def test_gumbel_softmax_matches_gumbel_argmax_with_same_key():
    logits = jnp.array([0.3, -1.0, 2.0, 0.0])
    for seed in range(20):
        key = jax.random.key(seed)
        hard = relax.gumbel_argmax(key, logits)
        soft = relax.gumbel_softmax(key, logits, 1e-3)
        np.testing.assert_array_equal(jnp.argmax(soft), jnp.argmax(hard))


def test_gumbel_softmax_on_simplex_and_gradients_reach_logits():
    logits = jnp.array([0.5, -0.2, 0.1])
    values = jnp.array([1.0, 3.0, -2.0])
    key = jax.random.key(0)
    y = relax.gumbel_softmax(key, logits, 0.7)
    assert jnp.all(y > 0) and jnp.isclose(y.sum(), 1.0)

    def f(lg, hard):
        return relax.gumbel_softmax(key, lg, 0.7, hard=hard) @ values

    # With the key fixed the Gumbel noise is fixed and the soft sample is a smooth
    # function of the logits: its gradient is checked against central differences
    # (step eps^(1/3), accurate to ~1e-10 relative).
    soft = np.asarray(jax.jit(jax.grad(f), static_argnums=1)(logits, False))
    fd = central_difference(lambda h: f(h["l"], False), {"l": logits}, leaf="l")
    np.testing.assert_allclose(soft, fd, rtol=1e-7, atol=1e-10)
    assert np.linalg.norm(fd) > 0.1  # the comparison is not between two near-zeros
    # softmax is shift-invariant: the gradient has no component along ones.
    assert abs(float(soft.sum())) < 1e-12
    # Straight-through: the hard forward value is one option's value exactly, and its
    # gradient is the soft sample's gradient.
    hard_val = f(logits, True)
    assert float(hard_val) in set(np.asarray(values).tolist())
    np.testing.assert_allclose(jax.grad(f)(logits, True), jax.grad(f)(logits, False), rtol=1e-12)


def test_expected_gradient_of_relaxed_objective_points_to_best_option():
    # Minimizing E[sum_i y_i c_i] over logits must raise the logit of the cheapest option.
    costs = jnp.array([1.0, 0.0, 2.0])
    keys = jax.random.split(jax.random.key(3), 2000)

    def expected_cost(lg):
        ys = jax.vmap(lambda k: relax.gumbel_softmax(k, lg, 0.5))(keys)
        return jnp.mean(ys @ costs)

    g = jax.jit(jax.grad(expected_cost))(jnp.zeros(3))
    assert int(jnp.argmin(g)) == 1 and int(jnp.argmax(g)) == 2
    # The keys are fixed (common random numbers), so the Monte Carlo objective is a
    # smooth function of the logits and its gradient is exactly that of central
    # differences of the same sum, up to their eps^(2/3) error.
    fd = central_difference(lambda h: jax.jit(expected_cost)(h["l"]), {"l": jnp.zeros(3)}, "l")
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-10)


def test_annealed_temperature_end_points_and_monotone():
    ts = np.asarray(
        jax.vmap(lambda s: relax.annealed_temperature(s, initial=2.0, final=0.1, num_steps=50))(
            jnp.arange(80)
        )
    )
    np.testing.assert_allclose(ts[0], 2.0)
    np.testing.assert_allclose(ts[50:], 0.1, rtol=1e-12)
    assert np.all(np.diff(ts) <= 1e-15)


def test_relaxation_objects_and_mix():
    logits = jnp.array([0.0, 1.0, -1.0])
    outputs = {"a": jnp.arange(3.0), "b": jnp.eye(3)}
    for r in (relax.Softmax(), relax.GumbelSoftmax(), relax.GumbelSoftmax(hard=True)):
        w = r.weights(jax.random.key(0), logits, 0.5)
        assert w.shape == (3,) and jnp.isclose(w.sum(), 1.0)
        mixed = relax.mix(w, outputs)
        np.testing.assert_allclose(mixed["a"], w @ jnp.arange(3.0))
        np.testing.assert_allclose(mixed["b"], w)
    assert int(relax.Softmax().discretize(logits)) == 1
    np.testing.assert_array_equal(relax.Softmax().init_logits(4), jnp.zeros(4))


def test_int_interpolation_exact_at_integers_and_linear_between():
    f = lambda k: (k.astype(float) - 2.0) ** 2  # noqa: E731
    relaxed = lambda x: relax.mix(  # noqa: E731
        relax.int_interpolation(x, 0, 5)[1], f(relax.int_interpolation(x, 0, 5)[0])
    )
    for k in range(6):
        np.testing.assert_allclose(relaxed(jnp.asarray(float(k))), f(jnp.asarray(k)))
    np.testing.assert_allclose(relaxed(2.25), 0.25 * 1.0)
    # Slope between 2 and 3 is f(3) - f(2) = 1.
    np.testing.assert_allclose(jax.grad(relaxed)(2.5), 1.0)
    np.testing.assert_allclose(relaxed(9.0), f(jnp.asarray(5)))  # clipped
    assert int(relax.discretize_int(2.6, 0, 5)) == 3


def test_int_distribution_concentrates_and_is_differentiable():
    w = relax.int_distribution(3.0, 0, 6, temperature=0.05)
    np.testing.assert_allclose(w[3], 1.0, atol=1e-12)
    mean = lambda x: relax.int_distribution(x, 0, 6, 1.0) @ jnp.arange(7.0)  # noqa: E731
    # Away from the bounds the discretized Gaussian's mean tracks x, slope about 1.
    assert abs(float(mean(3.2)) - 3.2) < 1e-3
    assert abs(float(jax.grad(mean)(3.2)) - 1.0) < 1e-2


def test_stochastic_round_unbiased_with_identity_gradient():
    keys = jax.random.split(jax.random.key(0), 40_000)
    r = jax.vmap(relax.stochastic_round, in_axes=(0, None))(keys, 2.3)
    assert set(np.unique(np.asarray(r)).tolist()) == {2.0, 3.0}
    # Bernoulli(0.3) mean: standard error sqrt(0.21 / 40000) ~ 2.3e-3; allow 4 of them.
    assert abs(float(r.mean()) - 2.3) < 4 * np.sqrt(0.21 / 40_000)
    np.testing.assert_allclose(jax.grad(relax.stochastic_round, argnums=1)(keys[0], 2.3), 1.0)


def test_smooth_accuracy_tends_to_accuracy_and_has_gradient():
    logits = jnp.array([[2.0, 0.0, 1.0], [0.0, 3.0, 2.5], [1.0, 0.2, 1.5], [0.1, 0.0, 0.0]])
    labels = jnp.array([0, 1, 0, 2])
    acc = float(jnp.mean(jnp.argmax(logits, -1) == labels))
    np.testing.assert_allclose(relax.smooth_accuracy(logits, labels, 1e-4), acc, atol=1e-6)
    g = jax.grad(relax.smooth_accuracy)(logits, labels, 0.5)
    fd = central_difference(
        lambda h: relax.smooth_accuracy(h["z"], labels, 0.5), {"z": logits}, leaf="z"
    )
    # Central differences, eps^(2/3) ~ 4e-11 relative; the gradient is not near zero.
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-10)
    assert np.linalg.norm(fd) > 0.01
    # Binary form: labels in {0, 1} against one logit per row.
    np.testing.assert_allclose(
        relax.smooth_accuracy(jnp.array([3.0, -2.0, 1.0]), jnp.array([1, 0, 0]), 1e-4), 2 / 3
    )


def test_smooth_hinge_pieces_and_continuity():
    z = jnp.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(relax.smooth_hinge(z), [1.5, 0.5, 0.125, 0.0, 0.0])
    dz = jax.vmap(jax.grad(relax.smooth_hinge))(jnp.array([-1e-9, 1e-9, 1 - 1e-9, 1 + 1e-9]))
    np.testing.assert_allclose(dz, [-1.0, -1.0, 0.0, 0.0], atol=1e-8)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_raises(bad):
    with pytest.raises(ValueError, match="temperature"):
        relax.gumbel_softmax(jax.random.key(0), jnp.zeros(3), bad)
    with pytest.raises(ValueError, match="temperature"):
        relax.smooth_accuracy(jnp.zeros((2, 3)), jnp.array([0, 1]), bad)
    with pytest.raises(ValueError, match="temperature"):
        relax.int_distribution(1.0, 0, 3, bad)
    with pytest.raises(ValueError, match="temperature"):
        relax.Softmax().weights(None, jnp.zeros(3), bad)


def test_traced_nonpositive_temperature_gives_nan_not_a_sample():
    y = jax.jit(relax.gumbel_softmax)(jax.random.key(0), jnp.zeros(3), 0.0)
    assert np.all(np.isnan(y))


def test_bad_integer_bounds_raise():
    with pytest.raises(ValueError, match="high must be larger"):
        relax.int_interpolation(1.0, 3, 3)
    with pytest.raises(TypeError, match="low and high must be ints"):
        relax.int_distribution(1.0, 0.0, 3)
    with pytest.raises(ValueError, match="num_steps"):
        relax.annealed_temperature(0, num_steps=0)
