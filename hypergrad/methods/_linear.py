"""Linear solvers for the implicit-function-theorem system `A x = b`.

Interface: `linear_solver(matvec, b, x0=None, tol=None, preconditioner=None) -> x`, where
`matvec(v) = A v` on pytrees shaped like the inner parameters, `b` is such a pytree, `x0`
an optional initial guess (a warm start from the previous outer step), `tol` an optional
tolerance for this call, as data (an outer loop's schedule), in place of the solver's
own, and `preconditioner(v)` an optional approximation of `A^{-1} v` (symmetric positive
definite), which the Krylov solvers (CG, GMRES, BiCGStab) use and the others ignore: an
inner solver that factored its Hessian offers one (`AbstractSolver.preconditioner`).
Solvers that need `A` symmetric positive definite say so with `requires_spd = True`.

For stationarity of a convex inner objective, `A` is the Hessian: symmetric, and positive
definite when the objective is strongly convex.

Tolerances follow the dtype (`dtype_tol`): an iterative solver never aims below
`DTYPE_TOL_EPS * eps` of the right-hand side's dtype (1000 ulps: 2.2e-13 in float64,
below every default, 1.2e-4 in float32), since rounding stalls the residual there and a
tighter target only runs `maxiter` iterations for nothing. The defaults (1e-10) hold
unchanged in float64.
"""

import abc

import jax
import jax.numpy as jnp
import jax.scipy.sparse.linalg as jsp
from jax.flatten_util import ravel_pytree

from .._config import ConfigEquality

# The floor of a relative tolerance, in units of the dtype's machine epsilon.
DTYPE_TOL_EPS = 1000.0


def dtype_tol(tol, dtype):
    """`max(tol, DTYPE_TOL_EPS * eps(dtype))`: a tolerance the dtype can reach (`tol` a
    number or a traced array; `dtype` a floating dtype).

    >>> import numpy as np
    >>> round(float(dtype_tol(1e-10, np.float32)), 7), float(dtype_tol(0.5, np.float32))
    (0.0001192, 0.5)
    """
    floor = DTYPE_TOL_EPS * float(jnp.finfo(dtype).eps)
    if isinstance(tol, (int, float)):  # stays a Python number: a static configuration
        return max(float(tol), floor)
    return jnp.maximum(tol, floor)


def _rhs_dtype(b):
    leaves = jax.tree.leaves(b)
    return jnp.result_type(*leaves) if leaves else jnp.result_type(float)


def _check_tol(name, value):
    if not (isinstance(value, (int, float)) and value >= 0):
        raise ValueError(f"{name} must be a non-negative number, got {name}={value!r}")


def _check_maxiter(maxiter):
    if maxiter is not None and (
        isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1
    ):
        raise ValueError(f"maxiter must be a positive int or None, got maxiter={maxiter!r}")


def _from_guess(solve, matvec, b, x0):
    """`solve` warm-started at `x0`, as `x0 + solve(A, b - A x0)`.

    Equivalent to passing `x0` to the jax.scipy solver, whose own `x0` argument fails
    under nested `vmap` when `b` and `x0` are batched along different axes.
    """
    if x0 is None:
        return solve(b)
    residual = jax.tree.map(jnp.subtract, b, matvec(x0))
    return jax.tree.map(jnp.add, x0, solve(residual))


class AbstractLinearSolver(ConfigEquality, abc.ABC):
    """Solves `A x = b` given `matvec(v) = A v`."""

    requires_spd: bool = False

    @abc.abstractmethod
    def __call__(self, matvec, b, x0=None, tol=None, preconditioner=None):
        """The solution `x`, a pytree shaped like `b`; `tol` (iterative solvers) replaces
        the relative tolerance for this call; `preconditioner(v)` approximates `A^{-1} v`
        (Krylov solvers use it; the tolerance still applies to the residual `b - A x`)."""

    def solve_matrix(self, a, b, x0=None, tol=None):
        """`A x = b` for an explicit matrix `a` and a vector `b` (a system small enough
        to hold, such as an inner solver's working set): by default through `a @ v`."""
        return self(lambda v: a @ v, b, x0=x0, tol=tol)


class CG(AbstractLinearSolver):
    """Conjugate gradient (`jax.scipy.sparse.linalg.cg`); `A` symmetric positive definite.

    Stops when `||A x - b|| <= max(tol * ||b||, atol)`.

    Args:
      tol: relative tolerance on the residual (raised to `dtype_tol(tol, b.dtype)`:
        1000 ulps, 1.2e-4 in float32).
      atol: absolute tolerance on the residual.
      maxiter: the largest number of iterations (`None`: 10 times the dimension, JAX's
        default).

    Reference: Hestenes and Stiefel, "Methods of conjugate gradients for solving linear
    systems", 1952.
    """

    requires_spd = True

    def __init__(self, tol: float = 1e-10, atol: float = 0.0, maxiter: int | None = None):
        _check_tol("tol", tol)
        _check_tol("atol", atol)
        _check_maxiter(maxiter)
        self.tol, self.atol, self.maxiter = tol, atol, maxiter

    def __call__(self, matvec, b, x0=None, tol=None, preconditioner=None):
        tol = dtype_tol(self.tol if tol is None else tol, _rhs_dtype(b))

        def solve(rhs):
            return jsp.cg(
                matvec, rhs, tol=tol, atol=self.atol, maxiter=self.maxiter, M=preconditioner
            )[0]

        return _from_guess(solve, matvec, b, x0)

    def __repr__(self):
        return f"CG(tol={self.tol}, atol={self.atol}, maxiter={self.maxiter})"


class GMRES(AbstractLinearSolver):
    """Restarted GMRES (`jax.scipy.sparse.linalg.gmres`); any non-singular `A`.

    Reference: Saad and Schultz, "GMRES: a generalized minimal residual algorithm for
    solving nonsymmetric linear systems", 1986.
    """

    def __init__(
        self, tol: float = 1e-10, atol: float = 0.0, restart: int = 20, maxiter: int | None = None
    ):
        _check_tol("tol", tol)
        _check_tol("atol", atol)
        _check_maxiter(maxiter)
        if isinstance(restart, bool) or not isinstance(restart, int) or restart < 1:
            raise ValueError(f"restart must be a positive int, got restart={restart!r}")
        self.tol, self.atol, self.restart, self.maxiter = tol, atol, restart, maxiter

    def __call__(self, matvec, b, x0=None, tol=None, preconditioner=None):
        tol = dtype_tol(self.tol if tol is None else tol, _rhs_dtype(b))

        def solve(rhs):
            return jsp.gmres(
                matvec,
                rhs,
                tol=tol,
                atol=self.atol,
                restart=self.restart,
                maxiter=self.maxiter,
                M=preconditioner,
                solve_method="batched",
            )[0]

        return _from_guess(solve, matvec, b, x0)

    def __repr__(self):
        return f"GMRES(tol={self.tol}, restart={self.restart}, maxiter={self.maxiter})"


class BiCGStab(AbstractLinearSolver):
    """Stabilized bi-conjugate gradient (`jax.scipy.sparse.linalg.bicgstab`); any
    non-singular `A`.

    Reference: van der Vorst, "Bi-CGSTAB: a fast and smoothly converging variant of Bi-CG
    for the solution of nonsymmetric linear systems", 1992.
    """

    def __init__(self, tol: float = 1e-10, atol: float = 0.0, maxiter: int | None = None):
        _check_tol("tol", tol)
        _check_tol("atol", atol)
        _check_maxiter(maxiter)
        self.tol, self.atol, self.maxiter = tol, atol, maxiter

    def __call__(self, matvec, b, x0=None, tol=None, preconditioner=None):
        tol = dtype_tol(self.tol if tol is None else tol, _rhs_dtype(b))

        def solve(rhs):
            return jsp.bicgstab(
                matvec, rhs, tol=tol, atol=self.atol, maxiter=self.maxiter, M=preconditioner
            )[0]

        return _from_guess(solve, matvec, b, x0)

    def __repr__(self):
        return f"BiCGStab(tol={self.tol}, maxiter={self.maxiter})"


class Neumann(AbstractLinearSolver):
    """Truncated Neumann series `x = eta * sum_{i=0}^{k} (I - eta A)^i b`.

    Converges to `A^{-1} b` when the eigenvalues of `A` lie in `(0, 2 / eta)`; `k` terms
    cost `k` matrix-vector products and approximate `k` steps of gradient descent on the
    inner problem (Lorraine et al.).

    Args:
      num_terms: `k`, the number of terms after the first.
      step_size: `eta`; choose below `2 / L` for `L` the largest eigenvalue of `A`.

    Reference: Lorraine, Vicente and Duvenaud, "Optimizing Millions of Hyperparameters by
    Implicit Differentiation", 2020, https://arxiv.org/abs/1911.02590
    """

    def __init__(self, num_terms: int = 50, step_size: float = 1.0):
        if isinstance(num_terms, bool) or not isinstance(num_terms, int) or num_terms < 0:
            raise ValueError(f"num_terms must be a non-negative int, got num_terms={num_terms!r}")
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got step_size={step_size!r}")
        self.num_terms, self.step_size = num_terms, step_size

    def __call__(self, matvec, b, x0=None, tol=None, preconditioner=None):
        # x0 is not used: the series is a fixed linear map of b (that makes it unbiased
        # as a truncation of A^{-1} b, and transposable); nor is tol (a fixed length),
        # nor a preconditioner (the series is the method's approximation).
        del x0, tol, preconditioner
        eta = self.step_size

        def body(_, carry):
            term, total = carry
            term = jax.tree.map(lambda t, at: t - eta * at, term, matvec(term))
            return term, jax.tree.map(jnp.add, total, term)

        _, total = jax.lax.fori_loop(0, self.num_terms, body, (b, b))
        return jax.tree.map(lambda t: eta * t, total)

    def __repr__(self):
        return f"Neumann(num_terms={self.num_terms}, step_size={self.step_size})"


class Dense(AbstractLinearSolver):
    """Materialize `A` (one `matvec` per dimension) and solve directly: Cholesky when
    `symmetric=True` (SPD `A`), LU otherwise. Exact up to rounding; `O(p^3)`.
    """

    def __init__(self, symmetric: bool = False):
        self.symmetric = bool(symmetric)

    def __call__(self, matvec, b, x0=None, tol=None, preconditioner=None):
        del x0, tol, preconditioner
        flat_b, unravel = ravel_pytree(b)
        flat_matvec = lambda v: ravel_pytree(matvec(unravel(v)))[0]  # noqa: E731
        a = jax.vmap(flat_matvec, out_axes=1)(jnp.eye(flat_b.size, dtype=flat_b.dtype))
        if self.symmetric:
            x = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a), flat_b)
        else:
            x = jnp.linalg.solve(a, flat_b)
        return unravel(x)

    def solve_matrix(self, a, b, x0=None, tol=None):
        del x0, tol
        if self.symmetric:
            return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a), b)
        return jnp.linalg.solve(a, b)

    def __repr__(self):
        return f"Dense(symmetric={self.symmetric})"


class Identity(AbstractLinearSolver):
    """`x = scale * b`: replaces `A^{-1}` by a multiple of the identity.

    With `scale` the inner learning rate this is the one-step approximation of Luketina
    et al. (differentiating only the last inner gradient step).

    Reference: Luketina, Berglund, Greff and Raiko, "Scalable Gradient-Based Tuning of
    Continuous Regularization Hyperparameters", 2016, https://arxiv.org/abs/1511.06727
    """

    def __init__(self, scale: float = 1.0):
        if not scale > 0:
            raise ValueError(f"scale must be positive, got scale={scale!r}")
        self.scale = scale

    def __call__(self, matvec, b, x0=None, tol=None, preconditioner=None):
        del matvec, x0, tol, preconditioner
        return jax.tree.map(lambda t: self.scale * t, b)

    def __repr__(self):
        return f"Identity(scale={self.scale})"


def refine_cg(matvec, b, x, tol, maxiter):
    """Conjugate-gradient iterations on `A x = b` (flat vectors) from `x`, at most
    `maxiter` of them, where `maxiter` may be traced: zero iterations cost nothing (not
    even the starting residual, a product with `A`), which is how the working-set solve
    below falls back to the full system only when it must (jax.scipy's `cg` takes a
    static cap, which under `vmap` would run for every member)."""

    def iterate(x):
        r = b - matvec(x)
        target = jnp.maximum(tol, 0.0) ** 2 * jnp.vdot(b, b)

        def cond(c):
            _, r, _, rr, k = c
            return (k < maxiter) & (rr > target)

        def body(c):
            x, r, d, rr, k = c
            ad = matvec(d)
            step = rr / jnp.vdot(d, ad)
            x, r = x + step * d, r - step * ad
            rr_new = jnp.vdot(r, r)
            return x, r, r + (rr_new / rr) * d, rr_new, k + 1

        rr = jnp.vdot(r, r)
        return jax.lax.while_loop(cond, body, (x, r, r, rr, jnp.zeros((), jnp.int32)))[0]

    return jax.lax.cond(maxiter > 0, iterate, lambda x: x, x)
