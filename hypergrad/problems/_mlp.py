"""A small MLP trained by gradient descent: an unrolled problem.

The inner "solution" is whatever a fixed budget of SGD steps reaches, so it depends on
the learning rate as much as on the weight decay; only unrolled (or zero-order) methods
see the learning rate.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._bilevel import BilevelProblem
from ..solvers import OptaxSolver
from ._data import load


def mlp_apply(params, X):
    hidden = jnp.tanh(X @ params["W1"] + params["b1"])
    return hidden @ params["W2"] + params["b2"]


def mlp_inner(params, hparams, data):
    X, y = data
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(mlp_apply(params, X), y))
    decay = jnp.sum(params["W1"] ** 2) + jnp.sum(params["W2"] ** 2)
    return loss + 0.5 * hparams["weight_decay"] * decay


def mlp_loss(params, hparams, data):
    del hparams
    X, y = data
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(mlp_apply(params, X), y))


def mlp_accuracy(params, data):
    X, y = data
    return jnp.mean(jnp.argmax(mlp_apply(params, X), -1) == y)


def init_mlp(key, n_in: int, n_hidden: int, n_out: int, dtype=jnp.float32):
    k1, k2 = jax.random.split(key)
    return {
        # Glorot-style scaling keeps tanh units out of saturation at the start.
        "W1": jax.random.normal(k1, (n_in, n_hidden), dtype) / np.sqrt(n_in),
        "b1": jnp.zeros(n_hidden, dtype),
        "W2": jax.random.normal(k2, (n_hidden, n_out), dtype) / np.sqrt(n_hidden),
        "b2": jnp.zeros(n_out, dtype),
    }


def sgd_from_hparams(hparams):
    """Plain SGD at `hparams["learning_rate"]` (module level: equal across problems)."""
    return optax.sgd(hparams["learning_rate"])


def mlp_digits(
    *,
    hidden: int = 32,
    steps: int = 100,
    learning_rate: float = 0.5,
    weight_decay: float = 1e-3,
    seed: int = 0,
    dtype=None,
) -> BilevelProblem:
    """A one-hidden-layer tanh MLP on scikit-learn's digits, trained by full-batch SGD.

    Hyperparameters `{"learning_rate", "weight_decay"}`; the inner solver runs exactly
    `steps` SGD steps (`OptaxSolver(lambda h: optax.sgd(h["learning_rate"]), steps,
    tol=None)`); the outer objective is the validation cross-entropy. Rows are split
    50 / 25 / 25 into train / validation / test with `seed`, which also draws the initial
    weights.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got steps={steps!r}")
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"hidden must be a positive int, got hidden={hidden!r}")
    dtype = jnp.result_type(float) if dtype is None else dtype
    d = load("digits", seed=seed)

    def pair(X, y):
        return jnp.asarray(X, dtype), jnp.asarray(y, jnp.int32)

    return BilevelProblem(
        inner=mlp_inner,
        outer=mlp_loss,
        init_params=init_mlp(jax.random.key(seed), d.X_train.shape[1], hidden, 10, dtype),
        train=pair(d.X_train, d.y_train),
        val=pair(d.X_val, d.y_val),
        test=pair(d.X_test, d.y_test),
        hparams={
            "learning_rate": jnp.asarray(learning_rate, dtype),
            "weight_decay": jnp.asarray(weight_decay, dtype),
        },
        solver=OptaxSolver(sgd_from_hparams, max_steps=steps, tol=None),
        name="mlp_digits",
    )
