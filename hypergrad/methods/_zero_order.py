"""Zero-order hypergradient estimators: evolution strategies (ES) and persistent ES.

They need no derivative of the inner solver, only runs of it, so they reach what
derivatives do not: hyperparameters the solver alone reads, non-differentiable outer
objectives (accuracy), chaotic long unrolls.

- `ES(num_samples, sigma, key)` is a differentiation method (`method=ES(...)`): the
  derivative of `solve(...).params` with respect to the hyperparameters is an antithetic
  ES estimate of the solution's Jacobian, so `jax.grad(lambda h: val(solve(..., h,
  method=ES(...)).params))` is ES applied to the solution, chained with the exact
  gradient of `val`. Invariant: the tangent is linear in the input tangents, so JAX
  transposes it for reverse mode; the same key gives the same estimate.
- `es_value_and_grad(f, hparams, key, ...)` is the direct scalar form: it estimates the
  gradient of the Gaussian smoothing of any scalar `f` (which may be non-differentiable,
  e.g. the validation accuracy of a solve).
- `PES(...)` is an estimator object with `init` / `step` over the truncations of a long
  unroll, not a `solve` method: its unbiasedness comes from perturbation state that
  persists across truncations, which one `solve` call cannot hold.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._types import Array, HParams
from ..solvers import Solution
from ..solvers._base import run
from ._base import AbstractMethod
from ._tree import flatten_tangents, is_zero, zero_tangents


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {name}={value!r}")


def _check_sigma(sigma):
    if isinstance(sigma, jax.core.Tracer):
        return
    s = np.asarray(sigma)
    if s.shape != () or s.dtype.kind not in "fiu" or not (np.isfinite(s) and s > 0):
        raise ValueError(f"sigma must be a positive finite scalar, got sigma={sigma!r}")


def _check_key(key):
    if key is None:
        raise ValueError(
            "key must be a PRNG key (jax.random.key(seed)); zero-order estimates are random "
            "and the key makes them reproducible, got key=None"
        )


def _directions(key, num_samples, dim, dtype):
    return jax.random.normal(key, (num_samples, dim), dtype)


def es_value_and_grad(
    fun: Callable[[HParams], Array],
    hparams: HParams,
    key: Array,
    *,
    num_samples: int,
    sigma=1e-2,
    antithetic: bool = True,
) -> tuple[Array, HParams]:
    """`fun(hparams)` and an ES estimate of its gradient.

        g = 1 / (2 sigma N) sum_i (f(h + sigma e_i) - f(h - sigma e_i)) e_i,  e_i ~ N(0, I)

    (antithetic; otherwise `1 / (sigma N) sum_i (f(h + sigma e_i) - f(h)) e_i`). This is
    an unbiased estimate of the gradient of the smoothed objective `E f(h + sigma e)`,
    and of `grad f(h)` up to `O(sigma^2)` where `f` is smooth; its variance per entry
    is about `(||g||^2 + g_j^2) / N` for an antithetic estimate of a smooth `f`. The
    `2N` (or `N + 1`) evaluations run as one `jax.vmap`.

    Args:
      fun: a scalar function of `hparams`, differentiable or not.
      hparams: where to estimate (a pytree of floating arrays).
      key: a PRNG key; the same key gives the same estimate.
      num_samples: `N`, the number of directions (positive).
      sigma: the smoothing scale, in the units of `hparams` (optimize in log
        coordinates so that one sigma fits all).
      antithetic: pair each direction with its opposite.

    Returns:
      `(fun(hparams), grad)`, `grad` with the structure of `hparams`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> f = lambda h: jnp.sum(h ** 2)  # gradient 2h
      >>> v, g = es_value_and_grad(f, jnp.array([1.0, -1.0]), jax.random.key(0),
      ...                          num_samples=4000, sigma=1e-3)
      >>> bool(jnp.allclose(g, jnp.array([2.0, -2.0]), atol=0.2))
      True

    Reference: Salimans, Ho, Chen, Sidor and Sutskever, "Evolution Strategies as a
    Scalable Alternative to Reinforcement Learning", 2017, https://arxiv.org/abs/1703.03864
    """
    _check_positive_int("num_samples", num_samples)
    _check_sigma(sigma)
    _check_key(key)
    flat, unravel = ravel_pytree(hparams)
    eps = _directions(key, num_samples, flat.size, flat.dtype)
    f_flat = jax.vmap(lambda z: fun(unravel(z)))
    value = fun(hparams)
    if antithetic:
        both = f_flat(jnp.concatenate([flat + sigma * eps, flat - sigma * eps]))
        diffs = (both[:num_samples] - both[num_samples:]) / (2 * sigma)
    else:
        diffs = (f_flat(flat + sigma * eps) - value) / sigma
    return value, unravel(diffs @ eps / num_samples)


class ES(AbstractMethod):
    """Differentiate the inner solution by an evolution-strategies estimate.

    The tangent of `params*(h)` along `dh` is `J_hat dh` with

        J_hat = 1 / (2 sigma N) sum_i (params*(h + sigma e_i) - params*(h - sigma e_i)) e_i^T

    over the differentiated leaves of `hparams` and `args` (those carrying a tangent),
    flattened. `jax.grad` of `val(params*)` then gives `J_hat^T grad val`, i.e. ES on
    the solution chained with the exact gradient of the outer objective. For an outer
    objective that is itself not differentiable, use `es_value_and_grad` on
    `h -> val(solve(..., h).params)` instead.

    Each derivative costs `2N` extra inner solves (`N + 1` without antithetic pairs),
    run as one `jax.vmap`; nothing is differentiated through the solver, so every solver
    and every hyperparameter (learning rates included) works.

    Args:
      num_samples: `N`, the number of perturbation directions (positive).
      sigma: the perturbation scale, in the units of the hyperparameters.
      key: the PRNG key of the directions. It is a field of the method, not captured
        anywhere else: build the method where the key lives, e.g. inside a jitted outer
        step `ES(64, 1e-2, key)` with a traced key (vmap over keys works the same way),
        and pass a fresh key at every outer step. The same key gives the same estimate.
      antithetic: pair each direction with its opposite (removes the even-order terms
        of the error).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from hypergrad import solve
      >>> from hypergrad.solvers import Newton
      >>> fun = lambda w, alpha, args: 0.5 * jnp.sum((w - 1.0) ** 2) + 0.5 * alpha * w @ w
      >>> m = ES(num_samples=2000, sigma=1e-3, key=jax.random.key(0))
      >>> w0 = lambda alpha: solve(fun, jnp.zeros(1), alpha, solver=Newton(), method=m).params[0]
      >>> bool(abs(jax.grad(w0)(1.0) + 0.25) < 0.03)  # exact: -1/4, sd about 0.25*sqrt(2/N)
      True

    Reference: Salimans et al., "Evolution Strategies as a Scalable Alternative to
    Reinforcement Learning", 2017, https://arxiv.org/abs/1703.03864
    """

    def __init__(self, num_samples: int, sigma=1e-2, key: Array | None = None, *, antithetic=True):
        _check_positive_int("num_samples", num_samples)
        _check_sigma(sigma)
        _check_key(key)
        self.num_samples, self.sigma, self.key = int(num_samples), sigma, key
        self.antithetic = bool(antithetic)

    def __repr__(self):
        return (
            f"ES(num_samples={self.num_samples}, sigma={self.sigma}, antithetic={self.antithetic})"
        )

    def solve(self, solver, fun, init_params, hparams, args, optimality) -> Solution:
        del optimality
        n, sigma, antithetic = self.num_samples, self.sigma, self.antithetic

        # The key is an explicit input of the custom_jvp function (not closed over), so
        # it may be traced: jit and vmap over keys work.
        @jax.custom_jvp
        def solution(init, h, a, key):
            del key
            return run(solver, fun, init, h, a)

        def rule(primals, tangents):
            init, h, a, key = primals
            sol = solution(*primals)
            leaves, treedef = jax.tree.flatten((h, a))
            t_leaves = flatten_tangents(tangents[1:3])
            active = [i for i, t in enumerate(t_leaves) if not is_zero(t)]
            if not active:
                return sol, zero_tangents(sol)
            z, unravel = ravel_pytree([leaves[i] for i in active])
            t, _ = ravel_pytree([t_leaves[i] for i in active])
            p_flat, unravel_params = ravel_pytree(sol.params)

            def params_at(zz):
                ls = list(leaves)
                for i, x in zip(active, unravel(zz), strict=True):
                    ls[i] = x
                hh, aa = jax.tree.unflatten(treedef, ls)
                return ravel_pytree(run(solver, fun, init, hh, aa).params)[0]

            eps = _directions(key, n, z.size, z.dtype)
            many = jax.vmap(params_at)
            if antithetic:
                # One batch of 2N solves (not two batches of N that XLA may run at once).
                both = many(jnp.concatenate([z + sigma * eps, z - sigma * eps]))
                delta = (both[:n] - both[n:]) / (2 * sigma)
            else:
                delta = (many(z + sigma * eps) - p_flat) / sigma
            # (N, P)^T (N,) : linear in the tangent t, which JAX transposes for grad.
            dparams = unravel_params(delta.T @ (eps @ t.astype(eps.dtype)) / n)
            return sol, zero_tangents(sol)._replace(params=dparams)

        solution.defjvp(rule, symbolic_zeros=True)
        return solution(init_params, hparams, args, self.key)


class PESState(NamedTuple):
    """The persistent state of `PES`.

    Attributes:
      inner: the particles' unroll states, a pytree with a leading axis of size
        `2 * num_particles` (antithetic pairs: particle `i` and `i + num_particles`).
      xi: the perturbations accumulated since the episode began, `(2 N, d)`.
      step: the unroll step at which the next truncation starts.
      key: the PRNG key for the next truncation's perturbations.
      init_inner: the unroll state episodes restart from.
    """

    inner: Any
    xi: Array
    step: Array
    key: Array
    init_inner: Any


class PES:
    """Persistent evolution strategies: unbiased gradients from truncated unrolls.

    A long unroll of `total_steps` steps (an inner training run) is processed in
    truncations of `truncation` steps; each truncation yields a loss `L_j` and a gradient
    estimate for the hyperparameters `theta`. Truncated backpropagation and truncated ES
    differentiate only the last truncation and are biased. PES keeps, for each particle,
    its own unroll state and the sum `xi` of all perturbations it has received since the
    episode began, and estimates

        g_j = 1 / (2 N sigma^2) sum_{i=1}^{2N} xi_i L_j(i),    xi_i = sum_{k <= j} eps_{i,k}

    with antithetic pairs `eps_{i+N,k} = -eps_{i,k}`. `g_j` is an unbiased estimate of
    the gradient of `E L_j` under Gaussian smoothing of `theta` (exactly the gradient
    where `L_j` is quadratic in `theta`), so summing `g_j` over an episode estimates the
    gradient of the full unroll's total loss.

    `unroll(state, theta, step, num_steps) -> (state, loss)` runs `num_steps` steps of
    the inner computation from `state` (the unroll's step index is `step`, e.g. for a
    learning-rate schedule) with hyperparameters `theta`, and returns the new state and
    the truncation's loss. It is vmapped over particles; `num_steps` is a Python int.

    With `persistent=False` the same object is truncated ES (`xi = eps_j`), for
    comparison.

    Args:
      num_particles: `N`, the number of antithetic pairs (positive).
      sigma: the perturbation scale.
      truncation: `K`, steps per truncation; at most `total_steps` and dividing it.
      total_steps: `T`, the length of an episode; particles restart from the initial
        state after `T / K` truncations (all of them at once).
      persistent: PES (True) or truncated ES (False).

    Example (jit the step with the unroll closed over; it is static):
      >>> import jax, jax.numpy as jnp
      >>> def unroll(x, theta, step, num_steps):
      ...     x = jax.lax.fori_loop(0, num_steps, lambda _, x: 0.9 * x + theta, x)
      ...     return x, (x - 1.0) ** 2
      >>> pes = PES(num_particles=8, sigma=0.1, truncation=5, total_steps=20)
      >>> state = pes.init(jax.random.key(0), jnp.array(0.0), jnp.array(0.0))
      >>> step = jax.jit(lambda s, th: pes.step(s, th, unroll))
      >>> g, loss, state = step(state, jnp.array(0.0))
      >>> g.shape, int(state.step)
      ((), 5)

    Reference: Vicol, Metz and Sohl-Dickstein, "Unbiased Gradient Estimation in Unrolled
    Computation Graphs with Persistent Evolution Strategies", 2021,
    https://arxiv.org/abs/2112.13835
    """

    def __init__(
        self,
        num_particles: int,
        sigma,
        truncation: int,
        total_steps: int,
        *,
        persistent: bool = True,
    ):
        _check_positive_int("num_particles", num_particles)
        _check_sigma(sigma)
        _check_positive_int("truncation", truncation)
        _check_positive_int("total_steps", total_steps)
        if truncation > total_steps:
            raise ValueError(
                f"truncation={truncation} is longer than the unroll (total_steps="
                f"{total_steps}): a truncation must fit in one episode"
            )
        if total_steps % truncation:
            raise ValueError(
                f"truncation={truncation} must divide total_steps={total_steps} so that "
                "every truncation has the same length (one compiled step)"
            )
        self.num_particles, self.sigma = int(num_particles), sigma
        self.truncation, self.total_steps = int(truncation), int(total_steps)
        self.persistent = bool(persistent)

    def __repr__(self):
        name = "PES" if self.persistent else "TruncatedES"
        return (
            f"{name}(num_particles={self.num_particles}, sigma={self.sigma}, "
            f"truncation={self.truncation}, total_steps={self.total_steps})"
        )

    def init(self, key: Array, theta: HParams, init_inner) -> PESState:
        """Particles at the start of an episode, all at `init_inner`, with `xi = 0`."""
        _check_key(key)
        flat, _ = ravel_pytree(theta)
        m = 2 * self.num_particles
        inner = jax.tree.map(lambda x: jnp.broadcast_to(x, (m, *jnp.shape(x))), init_inner)
        return PESState(
            inner=inner,
            xi=jnp.zeros((m, flat.size), flat.dtype),
            step=jnp.zeros((), jnp.int32),
            key=key,
            init_inner=init_inner,
        )

    def step(self, state: PESState, theta: HParams, unroll) -> tuple[HParams, Array, PESState]:
        """One truncation: `(gradient estimate, mean loss over particles, next state)`."""
        n, sigma = self.num_particles, self.sigma
        flat, unravel = ravel_pytree(theta)
        key, sub = jax.random.split(state.key)
        eps = sigma * _directions(sub, n, flat.size, flat.dtype)
        eps = jnp.concatenate([eps, -eps])
        thetas = jax.vmap(unravel)(flat + eps)
        inner, losses = jax.vmap(unroll, in_axes=(0, 0, None, None))(
            state.inner, thetas, state.step, self.truncation
        )
        xi = state.xi + eps if self.persistent else eps
        grad = unravel(xi.T @ losses.astype(xi.dtype) / (2 * n * sigma**2))
        step = state.step + self.truncation
        done = step >= self.total_steps
        restart = lambda fresh, x: jnp.where(done, jnp.broadcast_to(fresh, x.shape), x)  # noqa: E731
        inner = jax.tree.map(restart, state.init_inner, inner)
        new = PESState(
            inner=inner,
            xi=jnp.where(done, 0.0, xi),
            step=jnp.where(done, 0, step).astype(jnp.int32),
            key=key,
            init_inner=state.init_inner,
        )
        return grad, jnp.mean(losses), new
