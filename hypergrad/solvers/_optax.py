"""Inner solvers built on optax: any `GradientTransformation`, and L-BFGS.

`OptaxSolver(optimizer, ...)` runs `optimizer` on `fun(params, hparams, args)`. The
optimizer may be a fixed `optax.GradientTransformation`, or a function
`hparams -> GradientTransformation`: the latter makes solver hyperparameters such as the
learning rate part of `hparams`, so unrolled differentiation reaches them.
"""

from collections.abc import Callable
from functools import partial

import jax
import optax

from .._types import HParams
from ._base import AbstractSolver, _check_steps, advance, common_state


def _check_optimizer(optimizer, name):
    if not (isinstance(optimizer, optax.GradientTransformation) or callable(optimizer)):
        raise TypeError(
            f"{name} must be an optax.GradientTransformation or a function hparams -> "
            f"GradientTransformation, got {name}={optimizer!r}"
        )


class OptaxSolver(AbstractSolver):
    """Minimize the inner objective with an optax optimizer.

    Args:
      optimizer: an `optax.GradientTransformation`, or a function of `hparams` returning
        one (for example `lambda h: optax.sgd(h["learning_rate"])`).
      max_steps: the largest number of steps.
      tol: stop when the gradient norm is at most `tol`; `None` runs exactly `max_steps`.
      divergence: see `AbstractSolver`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from hypergrad.solvers import OptaxSolver, run
      >>> fun = lambda w, h, args: 0.5 * jnp.sum((w - h) ** 2)
      >>> sol = run(OptaxSolver(optax.sgd(0.5), max_steps=100, tol=1e-8), fun, 0.0, 3.0)
      >>> round(float(sol.params), 6)
      3.0
    """

    def __init__(
        self,
        optimizer: optax.GradientTransformation | Callable[[HParams], optax.GradientTransformation],
        max_steps: int = 1000,
        tol: float | None = 1e-6,
        divergence: float = 1e6,
        *,
        _value_from_state: bool = False,
    ):
        _check_steps(max_steps, tol, divergence)
        _check_optimizer(optimizer, "optimizer")
        self.optimizer = optimizer
        self.max_steps = max_steps
        self.tol = tol
        self.divergence = divergence
        # L-BFGS's line search already evaluated value and gradient at the accepted point
        # and keeps them in its state; reading them back saves one evaluation per step.
        self._value_from_state = _value_from_state

    def _tx(self, hparams):
        tx = self.optimizer
        if not isinstance(tx, optax.GradientTransformation):
            tx = tx(hparams)
        return optax.with_extra_args_support(tx)

    def init(self, fun, params, hparams, args):
        value, grad = jax.value_and_grad(fun)(params, hparams, args)
        return common_state(self._tx(hparams).init(params), value, grad)

    def step(self, fun, params, state, hparams, args):
        value_fn = partial(_bind, fun, hparams=hparams, args=args)
        updates, inner = self._tx(hparams).update(
            state.grad, state.inner, params, value=state.value, grad=state.grad, value_fn=value_fn
        )
        params = optax.apply_updates(params, updates)
        if self._value_from_state:
            value, grad = optax.value_and_grad_from_state(value_fn)(params, state=inner)
        else:
            value, grad = jax.value_and_grad(value_fn)(params)
        return params, advance(state, inner, value, grad)

    def __repr__(self):
        return f"OptaxSolver({self.optimizer!r}, max_steps={self.max_steps}, tol={self.tol})"


def _check_memory_size(memory_size):
    if isinstance(memory_size, bool) or not isinstance(memory_size, int) or memory_size < 1:
        raise ValueError(f"memory_size must be a positive int, got memory_size={memory_size!r}")


def _bind(fun, params, hparams, args):
    return fun(params, hparams, args)


class LBFGS(AbstractSolver):
    """L-BFGS with optax's zoom line search (strong Wolfe), run to a gradient tolerance.

    Args:
      max_steps: the largest number of steps.
      tol: stop when the gradient norm is at most `tol`.
      memory_size: number of curvature pairs kept.
      divergence: see `AbstractSolver`.

    Reference: Nocedal, "Updating quasi-Newton matrices with limited storage", 1980.
    """

    def __init__(
        self,
        max_steps: int = 500,
        tol: float | None = 1e-8,
        memory_size: int = 10,
        divergence: float = 1e6,
    ):
        _check_memory_size(memory_size)
        self.memory_size = memory_size
        self._loop = OptaxSolver(  # private: equality goes by the public configuration
            optax.lbfgs(memory_size=memory_size),
            max_steps=max_steps,
            tol=tol,
            divergence=divergence,
            _value_from_state=True,
        )
        self.max_steps, self.tol, self.divergence = max_steps, tol, divergence

    # The zoom line search is a while loop: forward-differentiable, not reversible.
    reverse_differentiable = False

    def init(self, fun, params, hparams, args):
        return self._loop.init(fun, params, hparams, args)

    def step(self, fun, params, state, hparams, args):
        return self._loop.step(fun, params, state, hparams, args)

    def __repr__(self):
        return f"LBFGS(max_steps={self.max_steps}, tol={self.tol}, memory_size={self.memory_size})"
