"""Smoothed metrics: differentiable stand-ins for validation objectives that are not.

Accuracy is a step function of the logits and has a zero gradient almost everywhere;
its sigmoid-smoothed version tends to it as the temperature goes to zero. The smooth
hinge is the hinge loss with its kink replaced by a quadratic piece.

Invariant: `smooth_accuracy(..., temperature -> 0)` tends to the accuracy wherever no
margin is exactly zero; `smooth_hinge` is continuously differentiable and equals the
hinge `max(0, 1 - z)` up to 1/2 for `z <= 0` and for `z >= 1`.
"""

import jax
import jax.numpy as jnp

from .._types import Array
from ._categorical import _guard, check_temperature


def margins(logits: Array, labels: Array) -> Array:
    """Classification margins: positive when the prediction is right.

    Multiclass (`logits` of shape `(n, k)`, integer `labels` of shape `(n,)`): the true
    class's logit minus the largest other logit. Binary (`logits` of shape `(n,)`,
    labels in {0, 1}): `(2 y - 1) * logit`.
    """
    logits = jnp.asarray(logits)
    if logits.ndim == jnp.ndim(labels):
        sign = 2 * jnp.asarray(labels, logits.dtype) - 1
        return sign * logits
    k = logits.shape[-1]
    one_hot = jax.nn.one_hot(labels, k, dtype=bool)
    true = jnp.sum(jnp.where(one_hot, logits, 0), axis=-1)
    other = jnp.max(jnp.where(one_hot, -jnp.inf, logits), axis=-1)
    return true - other


def smooth_accuracy(logits: Array, labels: Array, temperature=0.1) -> Array:
    """Sigmoid-smoothed accuracy: `mean(sigmoid(margin / temperature))`.

    Differentiable in the logits; tends to the accuracy as the temperature goes to zero
    (a concrete non-positive temperature raises `ValueError`).

    Example:
      >>> import jax.numpy as jnp
      >>> logits = jnp.array([[2.0, 0.0], [0.0, 3.0]])
      >>> round(float(smooth_accuracy(logits, jnp.array([0, 0]), 1e-3)), 3)
      0.5
    """
    check_temperature(temperature)
    m = margins(logits, labels)
    return _guard(temperature, jnp.mean(jax.nn.sigmoid(m / temperature)))


def smooth_hinge(z: Array) -> Array:
    """The smooth hinge loss of a margin `z`:

        1/2 - z          if z <= 0
        (1 - z)^2 / 2    if 0 < z < 1
        0                if z >= 1

    Reference: Rennie and Srebro, "Loss Functions for Preference Levels: Regression with
    Discrete Ordered Labels", 2005.
    """
    z = jnp.asarray(z)
    return jnp.where(z <= 0, 0.5 - z, jnp.where(z < 1, 0.5 * (1 - z) ** 2, 0.0))
