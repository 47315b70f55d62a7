"""Online hypergradient descent: optax transformations that adapt their own learning rate.

Interface: `hypergradient_descent(direction, learning_rate, hyper_lr)` is an
`optax.GradientTransformation`; `direction` is any transformation that maps gradients to
a descent direction at unit step (`optax.identity()` for SGD, `optax.trace(momentum,
nesterov=True)` for Nesterov, `optax.scale_by_adam()` for Adam). With `d_t` that
direction and `alpha_t` the learning rate, the update is `theta_t = theta_{t-1} - alpha_t
d_t`, so `d f(theta_{t-1}) / d alpha = -g_t . d_{t-1}` and one gradient step on the
learning rate reads

    alpha_t = alpha_{t-1} + beta g_t . d_{t-1}

(`beta` = `hyper_lr`): the learning rate grows while successive directions agree and
shrinks when they oppose. Invariant: with `hyper_lr = 0` the updates are exactly those
of `optax.chain(direction, optax.scale(-learning_rate))`. The state keeps the current
learning rate (`state.learning_rate`) for logging.

`hd_sgd`, `hd_nesterov` and `hd_adam` are the three variants of Baydin et al.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._types import Array


class HypergradientDescentState(NamedTuple):
    """`learning_rate`: the current step size; `direction`: the last direction `d_{t-1}`
    (zero before the first step); `inner`: the direction transformation's state."""

    learning_rate: Array
    direction: optax.Updates
    inner: optax.OptState


def _check_nonnegative(name, value):
    if isinstance(value, jax.core.Tracer):
        return
    v = np.asarray(value)
    if v.shape != () or v.dtype.kind not in "fiu" or not (np.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a non-negative finite scalar, got {name}={value!r}")


def _vdot(a, b):
    return sum(
        jnp.vdot(x, y).real for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def hypergradient_descent(
    direction: optax.GradientTransformation,
    learning_rate,
    hyper_lr,
    *,
    normalized: bool = False,
) -> optax.GradientTransformation:
    """Wrap a unit-step descent direction with a learning rate adapted online.

        alpha_t = alpha_{t-1} + hyper_lr * g_t . d_{t-1}                    (additive)
        alpha_t = alpha_{t-1} * (1 + hyper_lr * cos(g_t, d_{t-1}))          (normalized)
        update_t = -alpha_t d_t

    The additive rule is the paper's; its `hyper_lr` has the units of a learning rate
    per squared gradient norm, so it must be chosen per problem. The normalized
    (multiplicative) rule is scale-free; it cannot leave zero, so start it from a
    positive learning rate. Neither clips the learning rate: a negative one reports
    gradients that keep opposing, and is a sign that `hyper_lr` is too large.

    Args:
      direction: the unit-step direction (see the module docstring).
      learning_rate: the initial learning rate, non-negative (0 is allowed for the
        additive rule: the first step records a direction, the second moves).
      hyper_lr: `beta`, the learning rate of the learning rate, non-negative.
      normalized: use the multiplicative, cosine-normalized rule.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = hd_sgd(learning_rate=0.0, hyper_lr=0.1)
      >>> params = jnp.array([1.0, -2.0])
      >>> state = tx.init(params)
      >>> for _ in range(3):
      ...     updates, state = tx.update(params, state)  # f = |params|^2 / 2, grad = params
      ...     params = optax.apply_updates(params, updates)
      >>> float(state.learning_rate) > 0
      True

    Reference: Baydin, Cornish, Martinez Rubio, Schmidt and Wood, "Online Learning Rate
    Adaptation with Hypergradient Descent", 2018, https://arxiv.org/abs/1703.04782
    """
    if not isinstance(direction, optax.GradientTransformation):
        raise TypeError(
            f"direction must be an optax.GradientTransformation, got direction={direction!r}"
        )
    _check_nonnegative("learning_rate", learning_rate)
    _check_nonnegative("hyper_lr", hyper_lr)

    def init_fn(params):
        leaves = jax.tree.leaves(params)
        dtype = jnp.result_type(*leaves) if leaves else jnp.result_type(float)
        return HypergradientDescentState(
            learning_rate=jnp.asarray(learning_rate, dtype),
            direction=jax.tree.map(jnp.zeros_like, params),
            inner=direction.init(params),
        )

    def update_fn(updates, state, params=None):
        grads = updates
        d, inner = direction.update(grads, state.inner, params)
        h = _vdot(grads, state.direction)
        lr = state.learning_rate
        if normalized:
            norms = jnp.sqrt(_vdot(grads, grads) * _vdot(state.direction, state.direction))
            cosine = jnp.where(norms > 0, h / jnp.where(norms > 0, norms, 1.0), 0.0)
            lr = lr * (1 + hyper_lr * cosine)
        else:
            lr = lr + hyper_lr * h
        lr = lr.astype(state.learning_rate.dtype)
        new_updates = jax.tree.map(lambda x: (-lr * x).astype(x.dtype), d)
        return new_updates, HypergradientDescentState(lr, d, inner)

    return optax.GradientTransformation(init_fn, update_fn)


def hd_sgd(learning_rate, hyper_lr, *, normalized: bool = False) -> optax.GradientTransformation:
    """SGD-HD: `alpha_t = alpha_{t-1} + beta g_t . g_{t-1}`, `theta_t = theta_{t-1} - alpha_t g_t`.

    See `hypergradient_descent`; Baydin et al. use `beta = 1e-3` on MNIST logistic
    regression (`alpha_0 = 1e-3`).
    """
    return hypergradient_descent(optax.identity(), learning_rate, hyper_lr, normalized=normalized)


def hd_nesterov(
    learning_rate, hyper_lr, momentum: float = 0.9, *, normalized: bool = False
) -> optax.GradientTransformation:
    """SGDN-HD: Nesterov momentum `d_t = g_t + mu v_t`, `v_t = mu v_{t-1} + g_t`, with the
    learning rate adapted by `g_t . d_{t-1}` (see `hypergradient_descent`)."""
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got momentum={momentum!r}")
    return hypergradient_descent(
        optax.trace(decay=momentum, nesterov=True), learning_rate, hyper_lr, normalized=normalized
    )


def hd_adam(
    learning_rate,
    hyper_lr,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    normalized: bool = False,
) -> optax.GradientTransformation:
    """Adam-HD: Adam's direction `m_hat / (sqrt(v_hat) + eps)` with the learning rate
    adapted by `g_t . d_{t-1}` (see `hypergradient_descent`); Baydin et al. use
    `beta = 1e-7` for Adam on MNIST."""
    return hypergradient_descent(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps), learning_rate, hyper_lr, normalized=normalized
    )
