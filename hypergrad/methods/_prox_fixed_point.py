"""The optimality condition of `min_x f(x, h) + g(x, h)` with `g` non-smooth (L1, elastic
net, box), restricted to the support of the solution.

At a minimizer `x*`, let `S` be its support (the coordinates where `g` is
differentiable: nonzero ones for L1, those strictly inside a box). With the mask
`M = diag(1_S)`, fixed at `x*` (no derivative flows through it),

    F(x, h) = M (grad f(z) + grad g(z, h)) + (I - M) (x - c(h)),   z = M x + (I - M) c(h),

where `c(h)` is where the coordinates off the support sit (0 for L1, a bound for a box).
`F(x*, h) = 0`, and `dF/dx = M H M + I - M` (`H` the Hessian of `f`) is symmetric, and
positive definite when `H_SS` is: conjugate gradient applies. Solving it gives
`dx_S/dh = -H_SS^{-1} d_h(grad_S f + grad_S g)` and `dx_Sc/dh = dc/dh`: the derivative of
the lasso path on the pieces where the support is constant (Mairal and Yu, 2012;
Bertrand et al., 2020).

Why the restriction is needed: the non-smooth term has no Hessian at the zeros of an L1
solution, and the derivative there is zero (a zero coordinate stays zero under small
changes of `h`). Treating the problem as smooth on all coordinates (stationarity of
`f + alpha |x|` with `sign(0) = 0`) gives the system `H v = b` on all `p` coordinates;
with more features than rows (`p > n`) `H = X^T X / n` is singular, so CG either stalls or
returns a vector with a component in the null space, and the off-support coordinates get
a non-zero derivative they do not have. The restricted system is well posed whenever the
solution is unique (`H_SS` non-singular, which holds for the lasso in general position).

When the support changes between outer steps: the mask is recomputed from each inner
solution (it is a value, not a shape), so nothing retraces; the hypergradient is that of
the piece on which the new solution lies. At the values of `h` where a coordinate enters
or leaves the support, the solution path has a kink: the criterion is continuous but its
derivative jumps. An outer loop must tolerate this (HOAG's safeguarded step does), and
an inexact inner solve may report a support that is off by the coordinates closest to
their threshold, which costs hypergradient accuracy of the order of the inner tolerance.

Reference: Bertrand, Klopfenstein, Blondel, Vaiter, Gramfort and Salmon, "Implicit
differentiation of Lasso-type models for hyperparameter optimization", 2020,
https://arxiv.org/abs/2002.08943
"""

import functools

import jax
import jax.numpy as jnp

from ..solvers._prox import AbstractProx, _get
from ..solvers._prox import _at as _at_leaf
from ._optimality import OptimalityCondition


def _masks(prox: AbstractProx, params, hparams):
    """A pytree of boolean masks like `params`: the prox's support on its leaf, all True
    on the unpenalized leaves."""
    x = _get(params, prox.leaf)
    mask = jax.lax.stop_gradient(prox.support(jax.lax.stop_gradient(x), hparams))
    if prox.leaf is None:
        return mask
    full = jax.tree.map(lambda p: jnp.ones(jnp.shape(p), bool), params)
    return {**full, prox.leaf: mask}


def prox_fixed_point(smooth, prox: AbstractProx, *, restricted: bool = True):
    """The optimality condition of `min_x smooth(x, h, args) + g(x, h)`, `g` = `prox`.

    Args:
      smooth: the smooth part `f(params, hparams, args)` (what the proximal solver gets).
      prox: the non-smooth part (`hypergrad.solvers.L1`, `ElasticNet`, `Box`).
      restricted: True (default) for the support-restricted condition described in the
        module docstring. False gives the naive stationarity `grad f + grad g` on all
        coordinates, for comparison only: it is ill-posed for L1 problems with more
        features than rows.

    Returns:
      An `OptimalityCondition` with a symmetric Jacobian, for `Implicit(CG(...))`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from hypergrad import solve, Implicit
      >>> from hypergrad.solvers import FISTA, L1
      >>> from hypergrad.methods import prox_fixed_point
      >>> b = jnp.array([2.0, 0.5])
      >>> f = lambda x, h, args: 0.5 * jnp.sum((x - b) ** 2)
      >>> cond = prox_fixed_point(f, L1("alpha"))
      >>> x = lambda a: solve(f, jnp.zeros(2), {"alpha": a}, solver=FISTA(L1(), lipschitz=1.0),
      ...                     optimality=cond).params
      >>> [float(v) for v in jax.jacobian(x)(1.0)]  # x = (2 - alpha, 0)
      [-1.0, 0.0]
    """
    if not isinstance(prox, AbstractProx):
        raise TypeError(f"prox must be an AbstractProx (L1, ElasticNet, Box), got {prox!r}")
    return _condition(smooth, prox, restricted)


# Cached: the condition is a static part of problems and jitted functions, so equal
# arguments must give the same object (or every rebuilt problem would recompile, and K
# fold problems would not stack).
@functools.lru_cache(maxsize=256)
def _condition(smooth, prox, restricted):
    grad_f = jax.grad(smooth)

    if not restricted:

        def naive(params, hparams, args):
            g = grad_f(params, hparams, args)
            gg = prox.grad_on_support(_get(params, prox.leaf), hparams)
            return _at_leaf(g, prox.leaf, lambda v: v + gg)

        return OptimalityCondition(residual=naive, symmetric=True)

    def residual(params, hparams, args):
        mask = _masks(prox, params, hparams)
        x = _get(params, prox.leaf)
        c = prox.fixed_value(jax.lax.stop_gradient(x), hparams)
        m = _get(mask, prox.leaf)
        z = _at_leaf(params, prox.leaf, lambda v: jnp.where(m, v, c))
        g = grad_f(z, hparams, args)
        g = _at_leaf(g, prox.leaf, lambda v: v + prox.grad_on_support(_get(z, prox.leaf), hparams))
        off = _at_leaf(params, prox.leaf, lambda v: v - c)
        return jax.tree.map(jnp.where, mask, g, off)

    support = None
    if prox.leaf is None:  # the working-set solve handles array params only

        def support(params, hparams):
            return jax.lax.stop_gradient(prox.support(jax.lax.stop_gradient(params), hparams))

    return OptimalityCondition(residual=residual, symmetric=True, support=support)


def support_size(prox: AbstractProx, params, hparams=None):
    """The number of free coordinates of `params` under `prox` (nonzeros for L1)."""
    return jnp.sum(prox.support(_get(params, prox.leaf), hparams))
