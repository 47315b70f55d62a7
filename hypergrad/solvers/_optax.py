"""Inner solvers built on optax: any `GradientTransformation`, and L-BFGS.

`OptaxSolver(optimizer, ...)` runs `optimizer` on `fun(params, hparams, args)`. The
optimizer may be a fixed `optax.GradientTransformation`, or a function
`hparams -> GradientTransformation`: the latter makes solver hyperparameters such as the
learning rate part of `hparams`, so unrolled differentiation reaches them.
"""

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

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
    """L-BFGS with a backtracking line search (Armijo), run to a gradient tolerance.

    Each step takes the L-BFGS direction `d = -H g` (the two-loop recursion over the
    flattened parameters; steepest descent when `d` does not descend) and tries the step
    sizes `t = 1, ...` until Armijo's rule `f(x + t d) <= f(x) + 1e-4 t g.d` holds (up to
    `8 eps |f(x)|`, rounding), each new `t` the minimizer of the quadratic through `f(x)`,
    `g.d` and `f(x + t d)`, kept in `[t/10, t/2]` (`MAX_TRIALS` trials at most; a
    non-finite value halves `t`). The pair `(s, y)` of the step enters the memory only
    when its curvature `s.y` is positive (above `eps |y|^2`): the cautious update, which
    keeps `H` positive definite, and so every `d` a descent direction, on non-convex
    objectives too, where Armijo's rule alone does not guarantee `s.y > 0`. On a strongly
    convex objective every pair enters. With no pair held the direction is `-gamma g`,
    `gamma` doubling after each step of negative curvature. A step whose search finds
    no decrease (nor a finite value) leaves the parameters where they are and empties the
    memory. Non-finite trial values are backtracked from, so the run reports `diverged`
    on an objective unbounded below rather than `nonfinite`, which it reports when the
    objective is not finite where the run starts.

    Why not optax's L-BFGS (`optax.lbfgs`, its zoom line search for the strong Wolfe
    conditions): the zoom search is a large program, and the first call of a
    hypergradient waits for XLA to compile it (issue 10). Parameters are flattened once
    per step, so the recursion is one vector operation per pair, not one per leaf.

    Args:
      max_steps: the largest number of steps.
      tol: stop when the gradient norm is at most `tol`.
      memory_size: number of curvature pairs kept.
      divergence: see `AbstractSolver`.

    Example:
      >>> import jax.numpy as jnp
      >>> from hypergrad.solvers import LBFGS, Status, run
      >>> rosenbrock = lambda w, b, args: (1 - w[0]) ** 2 + b * (w[1] - w[0] ** 2) ** 2
      >>> sol = run(LBFGS(tol=1e-10), rosenbrock, jnp.array([-1.2, 1.0]), 100.0)
      >>> [round(float(x), 6) for x in sol.params], Status.name(sol.status)
      ([1.0, 1.0], 'converged')

    References: Nocedal, "Updating quasi-Newton matrices with limited storage", 1980;
    Li and Fukushima, "On the global convergence of the BFGS method for nonconvex
    unconstrained optimization problems", 2001 (the cautious update); Nocedal and Wright,
    "Numerical Optimization", 2nd ed., 2006, sections 3.5 and 7.2.
    """

    MAX_TRIALS = 30  # step sizes tried per step; the last is below 2^-30 of the first

    def __init__(
        self,
        max_steps: int = 500,
        tol: float | None = 1e-8,
        memory_size: int = 10,
        divergence: float = 1e6,
    ):
        _check_steps(max_steps, tol, divergence)
        _check_memory_size(memory_size)
        self.memory_size = memory_size
        self.max_steps, self.tol, self.divergence = max_steps, tol, divergence

    # The line search is a while loop: forward-differentiable, not reversible.
    reverse_differentiable = False

    def init(self, fun, params, hparams, args):
        value, grad = jax.value_and_grad(fun)(params, hparams, args)
        flat = ravel_pytree(params)[0]
        m, n = self.memory_size, flat.size
        memory = (
            jnp.zeros((m, n), flat.dtype),  # s, newest at (count - 1) % m
            jnp.zeros((m, n), flat.dtype),  # y
            jnp.zeros((m,), flat.dtype),  # 1 / s.y
            jnp.zeros((), jnp.int32),  # pairs stored so far
            _first_scale(ravel_pytree(grad)[0]),  # gamma while no pair is held
        )
        return common_state(memory, value, grad)

    def _direction(self, g, memory):
        """`-H g` by the two-loop recursion; steepest descent when it does not descend."""
        S, Y, rho, count, scale = memory
        m = self.memory_size
        held = jnp.minimum(count, m)

        def newest_first(i, carry):
            q, a = carry
            j = (count - 1 - i) % m
            ai = jnp.where(i < held, rho[j] * (S[j] @ q), 0.0)
            return q - ai * Y[j], a.at[j].set(ai)

        q, a = jax.lax.fori_loop(0, m, newest_first, (g, jnp.zeros_like(rho)))
        j = (count - 1) % m
        # The initial matrix gamma I: s.y / y.y of the newest pair; with no pair, `scale`.
        gamma = jnp.where(count > 0, 1.0 / (rho[j] * (Y[j] @ Y[j])), scale)

        def oldest_first(i, r):
            j = (count - held + i) % m
            b = rho[j] * (Y[j] @ r)
            return r + jnp.where(i < held, a[j] - b, 0.0) * S[j]

        return _descending(g, -jax.lax.fori_loop(0, m, oldest_first, gamma * q))

    def step(self, fun, params, state, hparams, args):
        flat, unravel = ravel_pytree(params)
        g = ravel_pytree(state.grad)[0]
        d = self._direction(g, state.inner)
        slope = g @ d
        f0 = state.value
        value_and_grad = jax.value_and_grad(lambda x: fun(unravel(x), hparams, args))

        def trial(search):
            # The first trial is t = 1, each later one `_backtrack`'s.
            t, value, _, _, trials = search
            t = jnp.where(trials == 0, t, _backtrack(value, f0, t, slope))
            value, grad = value_and_grad(flat + t * d)
            return t, value, grad, _armijo(value, f0, t, slope), trials + 1

        def searching(search):
            return ~search[3] & (search[4] < self.MAX_TRIALS)

        start = (jnp.ones((), flat.dtype), f0, g, jnp.zeros((), bool), jnp.zeros((), jnp.int32))
        t, value, grad, ok, _ = jax.lax.while_loop(searching, trial, start)
        s, y = t * d, grad - g
        sy = s @ y
        S, Y, rho, count, scale = state.inner
        # Cautious update: only pairs of positive curvature enter. Along a direction of
        # negative curvature Armijo's rule holds for every t, and the step with no pair
        # held doubles (an unbounded objective is found diverging in a few steps, not
        # after hundreds of unit steps); `scale` is read only while no pair is held. A
        # failed search empties the memory and restarts from the first step's scale.
        enter = ok & (sy > jnp.finfo(flat.dtype).eps * (y @ y))
        j = count % self.memory_size
        memory = (
            jnp.where(enter, S.at[j].set(s), S),
            jnp.where(enter, Y.at[j].set(y), Y),
            jnp.where(enter, rho.at[j].set(1.0 / jnp.where(enter, sy, 1.0)), rho),
            jnp.where(ok, count + enter, 0),
            jnp.where(ok, jnp.where(enter, scale, 2 * t * scale), _first_scale(g)),
        )
        flat, value, grad = jax.tree.map(
            lambda new, old: jnp.where(ok, new, old), (flat + s, value, grad), (flat, f0, g)
        )
        return unravel(flat), advance(state, memory, value, unravel(grad))

    def __repr__(self):
        return f"LBFGS(max_steps={self.max_steps}, tol={self.tol}, memory_size={self.memory_size})"


# The pieces of a backtracking (Armijo) line search on flat vectors, shared by `LBFGS`
# (a loop of trials within a step) and `BatchedLBFGS` (one trial per step).


def _first_scale(g):
    """The first step's `gamma`: a step of length `min(1, |g|)` along `-g` (optax's)."""
    return 1.0 / jnp.maximum(1.0, jnp.sqrt(g @ g))


def _descending(g, d):
    """`d` when it is a descent direction (`g.d < 0`), else `-gamma g` at the first
    step's scale."""
    return jnp.where(g @ d < 0, d, -_first_scale(g) * g)


def _armijo(value, f0, t, slope):
    """Whether `value = f(x + t d)` is finite and meets Armijo's rule
    `f(x + t d) <= f(x) + 1e-4 t g.d` (`slope = g.d`, `f0 = f(x)`). Near the minimum a
    decrease falls below rounding: a trial within `8 eps |f(x)|` of `f(x)` counts as not
    worse, or the search would shrink `t` for nothing."""
    roundoff = 8 * jnp.finfo(slope.dtype).eps * jnp.abs(f0)
    return jnp.isfinite(value) & (value <= f0 + 1e-4 * t * slope + roundoff)


def _backtrack(value, f0, t, slope):
    """The next step size after a rejected `t`: the minimizer of the quadratic through
    `f(x)`, `g.d` and `f(x + t d) = value`, kept in `[t/10, t/2]`; `t/2` when the value
    is not finite."""
    curvature = value - f0 - t * slope
    shrunk = jnp.where(curvature > 0, -slope * t**2 / (2 * curvature), 0.5 * t)
    return jnp.clip(jnp.nan_to_num(shrunk, nan=0.5 * t), 0.1 * t, 0.5 * t)
