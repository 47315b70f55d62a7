"""Relaxed categorical choices: Gumbel-softmax (concrete) samples, straight-through
estimators and temperature annealing.

Interface: a categorical choice among `n` options is parameterized by unnormalized
`logits` of shape `(..., n)`. A relaxation maps `(key, logits, temperature)` to weights
on the probability simplex, differentiable in `logits`; `discretize(logits)` maps the
logits to the index a tuner would finally pick. Invariant: as the temperature goes to
zero, `gumbel_softmax(key, logits, t)` tends to the one-hot `gumbel_argmax(key, logits)`
drawn with the same key, whose index is distributed as `softmax(logits)`.

A tuner relaxing a `Categorical` dimension holds its logits as hyperparameters, mixes
the options' results with the relaxation's weights (`mix`), takes hypergradients with
respect to the logits, then discretizes and re-evaluates the discrete choice exactly.
"""

import abc

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array


def check_temperature(temperature, name="temperature"):
    """Reject a concrete non-positive or non-finite temperature; pass traced ones through.

    Traced temperatures cannot be checked when the program is built; `gumbel_softmax`
    then returns NaN for a non-positive one (a failure as a value, not a wrong number).
    """
    if isinstance(temperature, jax.core.Tracer):
        return
    t = np.asarray(temperature)
    if t.dtype.kind not in "fiu" or not np.all(np.isfinite(t)) or not np.all(t > 0):
        raise ValueError(f"{name} must be positive and finite, got {name}={temperature!r}")


def _guard(temperature, x):
    # NaN, not a silently wrong sample, when a traced temperature is not positive.
    return jnp.where(temperature > 0, x, jnp.nan)


def straight_through(hard: Array, soft: Array) -> Array:
    """`hard` in the forward pass, the derivative of `soft` in the backward pass.

        straight_through(hard, soft) = soft + stop_gradient(hard - soft)

    Reference: Bengio, Leonard and Courville, "Estimating or Propagating Gradients
    Through Stochastic Neurons for Conditional Computation", 2013,
    https://arxiv.org/abs/1308.3432
    """
    return soft + jax.lax.stop_gradient(hard - soft)


def gumbel_argmax(key: Array, logits: Array, axis: int = -1) -> Array:
    """An exact categorical sample as a one-hot vector (the Gumbel-max trick).

    index = argmax_i (logits_i + g_i),  g_i ~ Gumbel(0, 1),
    P(index = i) = softmax(logits)_i
    """
    g = jax.random.gumbel(key, jnp.shape(logits), jnp.result_type(logits, float))
    idx = jnp.argmax(logits + g, axis=axis)
    return jax.nn.one_hot(idx, jnp.shape(logits)[axis], dtype=g.dtype, axis=axis)


def gumbel_softmax(
    key: Array, logits: Array, temperature, *, hard: bool = False, axis: int = -1
) -> Array:
    """A Gumbel-softmax (concrete) sample: a point on the simplex, differentiable in logits.

        y = softmax((logits + g) / temperature),  g_i ~ Gumbel(0, 1)

    At low temperature `y` approaches the one-hot `gumbel_argmax(key, logits)`; at high
    temperature it approaches the uniform weights. The gradient's variance grows as the
    temperature falls (anneal it: `annealed_temperature`).

    Args:
      key: a PRNG key.
      logits: unnormalized log-probabilities, `(..., n)`.
      temperature: positive; a concrete non-positive value raises `ValueError`.
      hard: return the one-hot argmax in the forward pass and the soft sample's
        derivative in the backward pass (straight-through Gumbel-softmax).
      axis: the categories' axis.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> y = gumbel_softmax(jax.random.key(0), jnp.zeros(3), 0.5)
      >>> bool(jnp.isclose(y.sum(), 1.0))
      True

    References:
      Jang, Gu and Poole, "Categorical Reparameterization with Gumbel-Softmax", 2017,
      https://arxiv.org/abs/1611.01144
      Maddison, Mnih and Teh, "The Concrete Distribution: A Continuous Relaxation of
      Discrete Random Variables", 2017, https://arxiv.org/abs/1611.00712
    """
    check_temperature(temperature)
    logits = jnp.asarray(logits)
    g = jax.random.gumbel(key, logits.shape, jnp.result_type(logits, float))
    soft = _guard(temperature, jax.nn.softmax((logits + g) / temperature, axis=axis))
    if not hard:
        return soft
    one_hot = jax.nn.one_hot(
        jnp.argmax(soft, axis=axis), logits.shape[axis], dtype=soft.dtype, axis=axis
    )
    return straight_through(one_hot, soft)


def annealed_temperature(
    step, *, initial: float = 1.0, final: float = 0.1, num_steps: int = 1000
) -> Array:
    """Exponential annealing from `initial` to `final` over `num_steps`, then constant.

        temperature(step) = max(final, initial * (final / initial) ** (step / num_steps))

    Jang et al. anneal as `max(0.5, exp(-r step))`; this is the same schedule written
    with its end points. It composes with optax schedules (a function of the step).
    """
    check_temperature(initial, "initial")
    check_temperature(final, "final")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got num_steps={num_steps!r}")
    frac = jnp.clip(jnp.asarray(step, float) / num_steps, 0.0, 1.0)
    return jnp.maximum(final, initial * (final / initial) ** frac)


def mix(weights: Array, outputs):
    """Combine per-option outputs with simplex weights: `sum_i weights_i * outputs_i`.

    `outputs` is a pytree whose leaves have a leading axis of size `n` (one entry per
    option, e.g. `jax.vmap` of a model over the options, or stacked results).
    """

    def one(leaf):
        w = weights.reshape(weights.shape + (1,) * (leaf.ndim - 1))
        return jnp.sum(w * leaf, axis=0)

    return jax.tree.map(one, outputs)


class AbstractRelaxation(abc.ABC):
    """How a discrete choice among `n` options becomes weights that depend smoothly on
    logits: `weights(key, logits, temperature)`; `discretize(logits)` picks the option."""

    @abc.abstractmethod
    def weights(self, key: Array, logits: Array, temperature) -> Array:
        """Weights on the simplex, shape `(n,)`, differentiable in `logits`."""

    def discretize(self, logits: Array) -> Array:
        """The final discrete choice: the most probable option."""
        return jnp.argmax(logits, axis=-1)

    def init_logits(self, n: int, dtype=float) -> Array:
        """Uniform logits over `n` options: where a tuner starts."""
        return jnp.zeros((n,), dtype)


class GumbelSoftmax(AbstractRelaxation):
    """Stochastic relaxation: `gumbel_softmax(key, logits, temperature, hard=hard)`.

    `hard=True` evaluates one option per sample (straight-through); `hard=False` mixes
    all of them. The expected weights are `softmax(logits)` only in the limit of zero
    temperature; optimize the expected outer loss over samples (several keys, vmap).
    """

    def __init__(self, hard: bool = False):
        self.hard = bool(hard)

    def weights(self, key, logits, temperature):
        return gumbel_softmax(key, logits, temperature, hard=self.hard)

    def __repr__(self):
        return f"GumbelSoftmax(hard={self.hard})"


class Softmax(AbstractRelaxation):
    """Deterministic relaxation: `softmax(logits / temperature)`; ignores the key.

    The continuous mixture of DARTS. Cheap and low-variance, but the optimum of the
    mixture need not be a vertex: re-evaluate the discretized choice exactly.

    Reference: Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search",
    2019, https://arxiv.org/abs/1806.09055
    """

    def weights(self, key, logits, temperature):
        del key
        check_temperature(temperature)
        return _guard(temperature, jax.nn.softmax(jnp.asarray(logits) / temperature, axis=-1))

    def __repr__(self):
        return "Softmax()"
