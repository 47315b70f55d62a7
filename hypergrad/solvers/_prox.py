"""Proximal gradient and FISTA for `min_x f(x, h) + g(x, h)`: `f` smooth, `g` simple.

Interface: the objective `fun` that the solver receives is the *smooth part* `f` only;
the non-smooth part `g` is carried by the solver as a prox operator (`L1`,
`ElasticNet`, `Box`), which reads its strengths from `hparams` by key. So
`solve(f, x0, hparams, args, solver=FISTA(L1("alpha")), optimality=...)` minimizes
`f + alpha ||x||_1`, and the penalty stays an explicit, differentiable hyperparameter.

Invariant: one step maps `x_k` to `x_{k+1} = prox_{t g}(y_k - t grad f(y_k))` (`y_k = x_k`
for plain proximal gradient, an extrapolated point for FISTA). The common `SolverState`
fields are those of the gradient mapping `G = (y_k - x_{k+1}) / t`: `grad` is `G`,
`grad_norm` its norm (the fixed-point residual, zero exactly at a minimizer, as jaxopt
measures it), `value` is `f + g` at `y_k`. Reading them at `y_k` costs nothing extra
(the gradient there is needed for the step); at a solution `y_k = x_{k+1}`.

The step size is `1 / L` with `L` a Lipschitz constant of `grad f`, given as a number,
as a function `lipschitz(hparams, args)` (ready problems store it with their data), or
estimated by power iteration on Hessian-vector products at the initial point (exact for
quadratic `f`, such as least squares; give it for anything else).
"""

import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .._types import Array, HParams, Params
from ._base import AbstractSolver, SolverState, _check_steps
from ._solution import tree_norm


def _at(params, leaf, fn):
    """Apply `fn` to the penalized part of `params`: all of it, or the dict entry `leaf`."""
    if leaf is None:
        return fn(params)
    return {**params, leaf: fn(params[leaf])}


def _get(params, leaf):
    return params if leaf is None else params[leaf]


class AbstractProx(abc.ABC):
    """A simple non-smooth term `g(x, h)`: its proximal operator and its local shape.

    `leaf` names the dict entry of the params that is penalized (`"w"` for
    `{"w": ..., "b": ...}` with an unpenalized intercept `b`), `None` for array params.
    """

    leaf: str | None

    @abc.abstractmethod
    def prox(self, x: Array, hparams: HParams, step: Array) -> Array:
        """`argmin_z 1/(2 step) ||z - x||^2 + g(z, h)` on the penalized array."""

    @abc.abstractmethod
    def value(self, x: Array, hparams: HParams) -> Array:
        """`g(x, h)` on the penalized array."""

    @abc.abstractmethod
    def support(self, x: Array, hparams: HParams) -> Array:
        """Boolean mask of the coordinates where `g` is differentiable at `x` (the free
        coordinates: nonzero for L1, strictly inside for a box)."""

    @abc.abstractmethod
    def grad_on_support(self, x: Array, hparams: HParams) -> Array:
        """The gradient of `g` at `x`, valid on the support."""

    @abc.abstractmethod
    def fixed_value(self, x: Array, hparams: HParams) -> Array:
        """Where the coordinates off the support sit (0 for L1, the bound for a box)."""

    def strengths(self, hparams: HParams, size: int, dtype) -> tuple[Array, Array]:
        """`(a, b)`, each of shape `(size,)`, when `g(x) = sum_j a_j |x_j| + b_j / 2 x_j^2`
        (what coordinate descent needs); other penalties raise."""
        raise TypeError(
            f"{self!r} is not a sum of |x_j| and x_j^2 terms; coordinate descent supports "
            "L1 and ElasticNet"
        )

    # Prox operators are static parts of solvers: equal configurations compare and hash
    # equal, so that a rebuilt problem does not recompile.
    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def __call__(self, params: Params, hparams: HParams, step) -> Params:
        return _at(params, self.leaf, lambda x: self.prox(x, hparams, step))

    def total(self, params: Params, hparams: HParams) -> Array:
        return self.value(_get(params, self.leaf), hparams)


def _soft(x, threshold):
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - threshold, 0.0)


class L1(AbstractProx):
    """`g(x) = sum_j alpha_j |x_j|` with `alpha = hparams[key]` (a scalar or one penalty
    per coordinate); its prox is soft-thresholding at `step * alpha`."""

    def __init__(self, key: str = "alpha", leaf: str | None = None):
        self.key, self.leaf = key, leaf

    def prox(self, x, hparams, step):
        return _soft(x, step * hparams[self.key])

    def value(self, x, hparams):
        return jnp.sum(hparams[self.key] * jnp.abs(x))

    def support(self, x, hparams):
        return x != 0

    def grad_on_support(self, x, hparams):
        return hparams[self.key] * jnp.sign(x)

    def fixed_value(self, x, hparams):
        return jnp.zeros_like(x)

    def strengths(self, hparams, size, dtype):
        a = jnp.broadcast_to(jnp.asarray(hparams[self.key], dtype), (size,))
        return a, jnp.zeros((size,), dtype)

    def __repr__(self):
        return f"L1({self.key!r}, leaf={self.leaf!r})"


class ElasticNet(AbstractProx):
    """`g(x) = alpha1 ||x||_1 + alpha2 / 2 ||x||^2` with `alpha1 = hparams[l1]`,
    `alpha2 = hparams[l2]`; its prox is soft-thresholding followed by a shrink
    `1 / (1 + step alpha2)`. (scikit-learn's `ElasticNet(alpha, l1_ratio)` is
    `alpha1 = alpha l1_ratio`, `alpha2 = alpha (1 - l1_ratio)`.)"""

    def __init__(self, l1: str = "alpha1", l2: str = "alpha2", leaf: str | None = None):
        self.l1, self.l2, self.leaf = l1, l2, leaf

    def prox(self, x, hparams, step):
        return _soft(x, step * hparams[self.l1]) / (1 + step * hparams[self.l2])

    def value(self, x, hparams):
        return jnp.sum(hparams[self.l1] * jnp.abs(x)) + 0.5 * jnp.sum(hparams[self.l2] * x**2)

    def support(self, x, hparams):
        return x != 0

    def grad_on_support(self, x, hparams):
        return hparams[self.l1] * jnp.sign(x) + hparams[self.l2] * x

    def fixed_value(self, x, hparams):
        return jnp.zeros_like(x)

    def strengths(self, hparams, size, dtype):
        get = lambda k: jnp.broadcast_to(jnp.asarray(hparams[k], dtype), (size,))  # noqa: E731
        return get(self.l1), get(self.l2)

    def __repr__(self):
        return f"ElasticNet({self.l1!r}, {self.l2!r}, leaf={self.leaf!r})"


class Box(AbstractProx):
    """The indicator of `lower <= x <= upper` (`hparams[lower]`, `hparams[upper]`, or
    fixed numbers); its prox is the projection (clipping)."""

    def __init__(self, lower: str | float = 0.0, upper: str | float = jnp.inf, leaf=None):
        self.lower, self.upper, self.leaf = lower, upper, leaf

    def _bounds(self, hparams):
        get = lambda b: hparams[b] if isinstance(b, str) else b  # noqa: E731
        return get(self.lower), get(self.upper)

    def prox(self, x, hparams, step):
        lo, hi = self._bounds(hparams)
        return jnp.clip(x, lo, hi)

    def value(self, x, hparams):
        return jnp.zeros((), x.dtype)

    def support(self, x, hparams):
        lo, hi = self._bounds(hparams)
        return (x > lo) & (x < hi)

    def grad_on_support(self, x, hparams):
        return jnp.zeros_like(x)

    def fixed_value(self, x, hparams):
        lo, hi = self._bounds(hparams)
        return jnp.clip(x, lo, hi)

    def __repr__(self):
        return f"Box({self.lower!r}, {self.upper!r}, leaf={self.leaf!r})"


class ProxState(NamedTuple):
    """FISTA's own state: the extrapolated point, the momentum scalar and the step."""

    y: Params
    t: Array
    step: Array


def _power_lipschitz(fun, params, hparams, args, iters=30):
    """Largest Hessian eigenvalue of `fun` at `params` by power iteration (HVPs)."""
    grad = lambda p: jax.grad(fun)(p, hparams, args)  # noqa: E731
    v = jax.tree.map(lambda x: jnp.ones_like(x) / jnp.sqrt(x.size * 1.0), params)

    def body(_, carry):
        v, _ = carry
        hv = jax.jvp(grad, (params,), (v,))[1]
        lam = tree_norm(hv)
        return jax.tree.map(lambda x: x / jnp.maximum(lam, 1e-30), hv), lam

    _, lam = jax.lax.fori_loop(0, iters, body, (v, jnp.zeros((), jnp.result_type(float))))
    return lam


class _Proximal(AbstractSolver):
    def __init__(
        self,
        prox: AbstractProx,
        max_steps: int = 1000,
        tol: float | None = 1e-8,
        lipschitz: float | Callable[[HParams, Any], Array] | None = None,
        restart: bool = True,
        divergence: float = 1e6,
    ):
        if not isinstance(prox, AbstractProx):
            raise TypeError(f"prox must be an AbstractProx (L1, ElasticNet, Box), got {prox!r}")
        _check_steps(max_steps, tol, divergence)
        if isinstance(lipschitz, (int, float)) and not lipschitz > 0:
            raise ValueError(f"lipschitz must be positive, got lipschitz={lipschitz!r}")
        self.prox, self.max_steps, self.tol = prox, max_steps, tol
        self.lipschitz, self.restart, self.divergence = lipschitz, restart, divergence

    # Solvers are static parts of problems and jitted functions: equal configurations
    # compare and hash equal, so that a rebuilt problem reuses the compiled program.
    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def _step_size(self, fun, params, hparams, args):
        if self.lipschitz is None:
            lip = _power_lipschitz(fun, params, hparams, args)
        elif callable(self.lipschitz):
            lip = self.lipschitz(hparams, args)
        else:
            lip = self.lipschitz
        dtype = jnp.result_type(*jax.tree.leaves(params))
        return (1.0 / jnp.asarray(lip, dtype)).astype(dtype)

    def init(self, fun, params, hparams, args):
        step = self._step_size(fun, params, hparams, args)
        value, grad = jax.value_and_grad(fun)(params, hparams, args)
        x_next = self.prox(jax.tree.map(lambda p, g: p - step * g, params, grad), hparams, step)
        mapping = jax.tree.map(lambda p, q: (p - q) / step, params, x_next)
        value = value + self.prox.total(params, hparams)
        inner = ProxState(y=params, t=jnp.ones((), step.dtype), step=step)
        norm = tree_norm(mapping)
        zero = jnp.zeros((), jnp.int32)
        return SolverState(inner, zero, value, mapping, norm, value, norm)

    def step(self, fun, params, state, hparams, args):
        y, t, step = state.inner
        value, grad = jax.value_and_grad(fun)(y, hparams, args)
        x_next = self.prox(jax.tree.map(lambda p, g: p - step * g, y, grad), hparams, step)
        mapping = jax.tree.map(lambda p, q: (p - q) / step, y, x_next)
        value = value + self.prox.total(y, hparams)
        if self.accelerated:
            t_next = (1 + jnp.sqrt(1 + 4 * t**2)) / 2
            beta = (t - 1) / t_next
            if self.restart:
                # Gradient restart (O'Donoghue and Candes, 2015): drop the momentum when
                # it points against the descent direction.
                dot = sum(
                    jnp.vdot(a - b, c - d)
                    for a, b, c, d in zip(
                        *map(jax.tree.leaves, (y, x_next, x_next, params)), strict=True
                    )
                )
                bad = dot > 0
                t_next = jnp.where(bad, 1.0, t_next).astype(t.dtype)
                beta = jnp.where(bad, 0.0, beta)
            y_next = jax.tree.map(lambda a, b: a + beta * (a - b), x_next, params)
        else:
            t_next, y_next = t, x_next
        inner = ProxState(y=y_next, t=t_next, step=step)
        state = state._replace(
            inner=inner,
            num_steps=state.num_steps + 1,
            value=value,
            grad=mapping,
            grad_norm=tree_norm(mapping),
        )
        return x_next, state

    def __repr__(self):
        return f"{type(self).__name__}({self.prox!r}, max_steps={self.max_steps}, tol={self.tol})"


class ProximalGradient(_Proximal):
    """Proximal gradient descent (ISTA) with step `1 / L`.

    Args:
      prox: the non-smooth term (`L1`, `ElasticNet`, `Box`); the objective passed to the
        solver is the smooth part only.
      max_steps: the largest number of steps.
      tol: stop when the gradient-mapping norm `||x - prox(x - grad f / L)|| L` is at
        most `tol`.
      lipschitz: `L`, a number or `lipschitz(hparams, args)`; None estimates it by power
        iteration at the initial point (exact for quadratic `f` only).
      divergence: see `AbstractSolver`.

    Reference: Combettes and Wajs, "Signal recovery by proximal forward-backward
    splitting", 2005.
    """

    accelerated = False


class FISTA(_Proximal):
    """Accelerated proximal gradient (FISTA) with step `1 / L` and gradient restarts.

    Same arguments as `ProximalGradient`, plus `restart` (default True): reset the
    momentum when it points uphill, which keeps FISTA's rate and removes its
    oscillations on ill-conditioned problems such as correlated lasso designs.

    Example:
      >>> import jax.numpy as jnp
      >>> from hypergrad.solvers import FISTA, L1, run
      >>> f = lambda x, h, args: 0.5 * jnp.sum((x - jnp.array([2.0, 0.5])) ** 2)
      >>> sol = run(FISTA(L1("alpha"), lipschitz=1.0), f, jnp.zeros(2), {"alpha": 1.0})
      >>> [round(float(v), 6) for v in sol.params]  # soft-threshold of (2, 0.5) at 1
      [1.0, 0.0]

    References:
      Beck and Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear
      inverse problems", 2009.
      O'Donoghue and Candes, "Adaptive restart for accelerated gradient schemes", 2015,
      https://arxiv.org/abs/1204.3982
    """

    accelerated = True
