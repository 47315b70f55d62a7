"""Relaxed integers: a continuous location `x` standing for an integer hyperparameter.

Three forms, from exact to stochastic:

- `int_interpolation(x, low, high)`: the two neighboring integers and linear weights,
  `f(x) ~ (1 - w) f(floor x) + w f(floor x + 1)`; exact at integers, piecewise linear in
  between; for models that can be evaluated at both neighbors (a polynomial degree, a
  number of features).
- `int_distribution(x, low, high, temperature)`: a discretized Gaussian over all
  integers in `[low, high]` centred at `x`, a distribution over neighboring integers
  whose weights (or Gumbel samples from its log-weights) depend smoothly on `x`.
- `stochastic_round(key, x)`: an integer in the forward pass, unbiased
  (`E[round] = x`), with the identity as straight-through derivative.

Invariant: the weights of the first two sum to one and put all the mass on `x` when it
is an integer (the second in the limit of zero temperature); `discretize_int` rounds.
"""

import jax
import jax.numpy as jnp

from .._types import Array
from ._categorical import _guard, check_temperature, straight_through


def _check_bounds(low, high):
    if (
        isinstance(low, bool)
        or isinstance(high, bool)
        or not (isinstance(low, int) and isinstance(high, int))
    ):
        raise TypeError(f"low and high must be ints, got low={low!r}, high={high!r}")
    if high <= low:
        raise ValueError(f"high must be larger than low, got low={low}, high={high}")


def int_interpolation(x, low: int, high: int) -> tuple[Array, Array]:
    """The neighbors of `x` in `[low, high]` and linear interpolation weights.

        indices = (k, k + 1),  weights = (k + 1 - x, x - k),  k = clip(floor x, low, high - 1)

    `x` is clipped to `[low, high]` first (the derivative is zero outside). Mix model
    outputs at the two integers with `hypergrad.relax.mix(weights, outputs)`.

    Returns:
      `(indices, weights)`, each of shape `x.shape + (2,)`; indices are int32.
    """
    _check_bounds(low, high)
    x = jnp.clip(jnp.asarray(x, jnp.result_type(x, float)), low, high)
    k = jnp.clip(jnp.floor(jax.lax.stop_gradient(x)), low, high - 1)
    w_hi = x - k
    indices = jnp.stack([k, k + 1], axis=-1).astype(jnp.int32)
    return indices, jnp.stack([1 - w_hi, w_hi], axis=-1)


def int_distribution(x, low: int, high: int, temperature=0.5) -> Array:
    """Weights over the integers `low..high`: a discretized Gaussian centred at `x`.

        weights_k = softmax_k( -(k - x)^2 / (2 temperature^2) ),  k = low, ..., high

    Differentiable in `x` (and in the temperature). Use them as mixture weights, or
    their logarithm as logits for `gumbel_softmax` to sample one integer.

    Returns:
      weights of shape `x.shape + (high - low + 1,)`.
    """
    _check_bounds(low, high)
    check_temperature(temperature)
    x = jnp.asarray(x, jnp.result_type(x, float))
    ks = jnp.arange(low, high + 1, dtype=x.dtype)
    logits = -((ks - x[..., None]) ** 2) / (2 * jnp.asarray(temperature, x.dtype) ** 2)
    return _guard(temperature, jax.nn.softmax(logits, axis=-1))


def stochastic_round(key: Array, x) -> Array:
    """Round `x` up with probability `x - floor(x)`, down otherwise; derivative 1.

    Unbiased (`E[stochastic_round(key, x)] = x`), so the straight-through derivative
    (the identity) is the derivative of the expectation of any function linear in it.
    The result keeps `x`'s floating dtype; cast where an int is needed.
    """
    x = jnp.asarray(x, jnp.result_type(x, float))
    lo = jnp.floor(x)
    up = jax.random.uniform(key, x.shape, x.dtype) < (x - lo)
    return straight_through(lo + up.astype(x.dtype), x)


def discretize_int(x, low: int, high: int) -> Array:
    """The integer a relaxed `x` stands for: rounded and clipped to `[low, high]`."""
    _check_bounds(low, high)
    return jnp.clip(jnp.round(x), low, high).astype(jnp.int32)
