"""Implicit differentiation of an inner solution through its optimality condition.

At a solution `params*(h)` of `F(params, h) = 0`, the implicit function theorem gives

    d params* / d h = -(dF/dparams)^{-1} dF/dh.

Forward mode solves one linear system per tangent direction; reverse mode (which JAX
derives by transposing the forward rule, `jax.lax.custom_linear_solve`) solves one
adjoint system `(dF/dparams)^T v = g` per cotangent. Nothing is stored from the inner
iterations: cost and memory do not depend on how many steps the inner solver took.
"""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ..solvers import Solution, Status
from ..solvers._base import run
from ._base import AbstractMethod, raise_solver_only, solver_only_hparams
from ._linear import CG, AbstractLinearSolver, refine_cg
from ._optimality import OptimalityCondition
from ._tree import flatten_tangents, is_zero, zero_tangents


class Implicit(AbstractMethod):
    """Differentiate the solution by the implicit function theorem.

    Args:
      linear_solver: solves the system with `dF/dparams` (default `CG()`; CG needs a
        symmetric positive definite system, which stationarity of a strongly convex
        objective gives). When the inner solver holds a factorization of its Hessian
        (`Newton`), a Krylov solver is preconditioned by it
        (`AbstractSolver.preconditioner`): on a quadratic inner objective conjugate
        gradients then take one step, on a smooth one a few.
      precondition: use the inner solver's preconditioner when it offers one (default
        True); False runs the linear solver plain (a study of its convergence).
      residual_tol: the stationarity check of a fixed-step run (a solver without a
        tolerance, status `steps_done`): its solution counts as stationary when the
        solver's optimality residual (`Solution.stats["grad_norm"]`) is at most
        `residual_tol * max(1, residual at the start)`; above it the status becomes
        `not_stationary`, which `throw=True` raises and the outer loops count as a
        failure (default 1e-3). A run with a tolerance is checked against that
        tolerance instead (`converged` or `max_steps`).

    Derivatives with respect to hyperparameters that enter only the solver (a learning
    rate) and not the optimality condition are refused with an error: implicit
    differentiation would return zero for them. Use `Unrolled` for those.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from hypergrad import solve, Implicit, CG
      >>> from hypergrad.solvers import Newton
      >>> fun = lambda w, alpha, args: 0.5 * jnp.sum((w - 1.0) ** 2) + 0.5 * alpha * w @ w
      >>> w_star = lambda alpha: solve(fun, jnp.zeros(2), alpha, solver=Newton(),
      ...                              method=Implicit(CG())).params[0]
      >>> round(float(jax.grad(w_star)(1.0)), 6)  # w* = 1/(1+alpha), dw*/dalpha = -1/4
      -0.25

    References:
      Bengio, "Gradient-Based Optimization of Hyperparameters", 2000.
      Pedregosa, "Hyperparameter optimization with approximate gradient", 2016,
      https://arxiv.org/abs/1602.02355
      Blondel et al., "Efficient and Modular Implicit Differentiation", 2022,
      https://arxiv.org/abs/2105.15183
    """

    def __init__(
        self,
        linear_solver: AbstractLinearSolver | None = None,
        residual_tol: float = 1e-3,
        precondition: bool = True,
    ):
        if not isinstance(precondition, bool):
            raise TypeError(f"precondition must be True or False, got {precondition=!r}")
        linear_solver = CG() if linear_solver is None else linear_solver
        if not isinstance(linear_solver, AbstractLinearSolver):
            raise TypeError(
                "linear_solver must be an AbstractLinearSolver (CG, GMRES, BiCGStab, Neumann, "
                f"Dense, Identity), got linear_solver={linear_solver!r}"
            )
        if not (isinstance(residual_tol, (int, float)) and residual_tol > 0):
            raise ValueError(f"residual_tol must be a positive number, got {residual_tol!r}")
        self.linear_solver = linear_solver
        self.residual_tol = float(residual_tol)
        self.precondition = precondition

    def __repr__(self):
        extra = "" if self.residual_tol == 1e-3 else f", residual_tol={self.residual_tol!r}"
        extra += "" if self.precondition else ", precondition=False"
        return f"Implicit({self.linear_solver!r}{extra})"

    def check_stationary(self, solution: Solution) -> Solution:
        """`solution` with status `not_stationary` where a fixed-step run (`steps_done`)
        ended with an optimality residual above `residual_tol` relative to its start."""
        state = solution.state
        start = getattr(state, "grad_norm0", None)
        if start is None:
            return solution
        bound = self.residual_tol * jnp.maximum(1.0, start)
        far = (solution.status == Status.STEPS_DONE) & ~(state.grad_norm <= bound)
        status = jnp.where(far, Status.NOT_STATIONARY, solution.status).astype(jnp.int32)
        return solution._replace(status=status)

    def warm_start(self, solver, fun, params, hparams, args):
        # The adjoint from zero; the solver's state, whose working set and caches a later
        # solve reuses (`AbstractSolver.reinit`).
        adjoint = jax.tree.map(jnp.zeros_like, params)
        return params, adjoint, solver.init(fun, params, hparams, args)

    def keep_warm(self, result):
        # The run's tolerance is not part of the warm start (the next run sets its own).
        return result.solution.params, result.adjoint, result.solution.state._replace(tol=None)

    def _preconditioner(self, solver, state):
        """The inner solver's preconditioner for the system at its solution (a
        factorization it holds in `state`: Newton's Cholesky factor), or None."""
        if not self.precondition or solver is None or state is None:
            return None
        return solver.preconditioner(state)

    def check_optimality(self, optimality: OptimalityCondition) -> None:
        if self.linear_solver.requires_spd and not optimality.symmetric:
            raise ValueError(
                f"linear_solver={self.linear_solver!r} needs a symmetric positive definite "
                "system, but this optimality condition's Jacobian is not symmetric; use "
                "GMRES, BiCGStab or Dense"
            )

    def linear_solve(
        self,
        optimality,
        params,
        hparams,
        args,
        b,
        transpose: bool,
        x0=None,
        *,
        tol=None,
        solver=None,
        state=None,
    ):
        """Solve `(dF/dparams) x = b`, or its transpose, at `params`. `tol` (data)
        replaces the linear solver's tolerance; `solver` and `state` (the inner solve's
        solver and final state) let a support-restricted condition be solved on the
        solver's working set."""
        residual = lambda p: optimality.residual(p, hparams, args)  # noqa: E731
        if transpose and not optimality.symmetric:
            _, vjp = jax.vjp(residual, params)
            matvec = lambda v: vjp(v)[0]  # noqa: E731
        else:
            matvec = lambda v: jax.jvp(residual, (params,), (v,))[1]  # noqa: E731
        # On one flat vector: jax.scipy's Krylov solvers fail under nested vmap when the
        # leaves of a pytree right-hand side carry their batch axes at different places.
        flat_b, unravel = ravel_pytree(b)
        flat_x0 = None if x0 is None else ravel_pytree(x0)[0]

        def flat_matvec(v):
            return ravel_pytree(matvec(unravel(v)))[0]

        x = self._on_working_set(
            optimality, params, hparams, flat_matvec, flat_b, flat_x0, tol, solver, state
        )
        if x is None:
            x = self.linear_solver(
                flat_matvec,
                flat_b,
                x0=flat_x0,
                tol=tol,
                preconditioner=self._preconditioner(solver, state),
            )
        return unravel(x)

    def _on_working_set(self, optimality, params, hparams, matvec, b, x0, tol, solver, state):
        """Solve `J x = b` for a support-restricted condition on the inner solver's
        working set, or None when the solver keeps none.

        `J` is the objective's Hessian on the support and the identity off it, so
        `x = b` off the support and `H_SS x_S = b_S` on it. The solver holds `H` on its
        working set (`restricted_hessian`): the system is solved there by this method's
        linear solver, with products of the working set's size instead of the data's
        (`O(working_set^2)` instead of `O(n p)`). Support coordinates outside the working
        set (a support that outgrew it) are then brought in by conjugate-gradient steps
        on the full system, none when there are none.
        """
        if solver is None or state is None or optimality.support is None:
            return None
        cache = solver.restricted_hessian(state, hparams)
        if cache is None or not hasattr(params, "ndim") or params.ndim != 1:
            return None
        slots, count, hessian = cache
        p, size = params.shape[0], slots.shape[0]
        mask = optimality.support(params, hparams)
        filled = jnp.arange(size) < count
        on = filled & mask[slots]
        k = jnp.sum(on)
        # The support's slots first; the system is solved on the first `B` of them, `B`
        # the smallest of a few static sizes that holds the support: 32, 256, 2048, ...
        # below the working set's size, and that size (a support of 100 in a working set
        # of 1024 costs a 256-square solve, not a 1024-square one). Each size is a branch
        # of the compiled program: every power of two (six branches at 1024 slots) took
        # 0.6 s more to compile on the first call of the lasso at n=1000, p=5000 (4.2 s
        # against 3.6 s, cache off), and a square up to 8 times the support's side costs
        # less per product than the data's (n p) as long as the support is below n.
        order = jnp.nonzero(on, size=size, fill_value=0)[0]
        sizes = sorted({size} | {1 << e for e in range(5, size.bit_length(), 3) if 1 << e < size})

        def solve_first(B):
            def branch(_):
                idx = order[:B]
                valid = jnp.arange(B) < k
                A = hessian[idx[:, None], idx[None, :]]
                A = jnp.where(
                    valid[:, None] & valid[None, :], A, jnp.diag(jnp.where(valid, 0, 1.0))
                )
                rhs = jnp.where(valid, b[slots[idx]], 0.0)
                u0 = None if x0 is None else jnp.where(valid, x0[slots[idx]], 0.0)
                u = self.linear_solver.solve_matrix(A, rhs, x0=u0, tol=tol)
                # Off the support, x = b.
                return b.at[jnp.where(valid, slots[idx], p)].set(u, mode="drop")

            return branch

        which = jnp.minimum(jnp.searchsorted(jnp.asarray(sizes), k), len(sizes) - 1)
        x = jax.lax.switch(which, [solve_first(B) for B in sizes], None)
        in_slots = jnp.zeros(p, bool).at[jnp.where(filled, slots, p)].set(True, mode="drop")
        missing = jnp.any(mask & ~in_slots)
        rel = getattr(self.linear_solver, "tol", 1e-10) if tol is None else tol
        # The system lives on the support (J is the identity off it, where x = b already
        # holds): conjugate gradients end there in at most `nnz` exact steps; twice that
        # allows for round-off. An unbounded cap (JAX's 10 p) ran for minutes when the
        # restricted Hessian is singular (a support larger than the number of rows, as an
        # unconverged lasso's can be), where no number of steps converges.
        nnz = jnp.sum(mask).astype(jnp.int32)
        return refine_cg(matvec, b, x, rel, jnp.where(missing, 2 * nnz, 0))

    def solve(self, solver, fun, init_params, hparams, args, optimality) -> Solution:
        self.check_optimality(optimality)

        @jax.custom_jvp
        def solution(init, h, a):
            return self.check_stationary(run(solver, fun, init, h, a))

        def rule(primals, tangents):
            init, h, a = primals
            _, th, ta = tangents
            sol = solution(init, h, a)  # through the custom_jvp: higher orders work too
            th_leaves, ta_leaves = flatten_tangents(th), flatten_tangents(ta)
            want_h = [not is_zero(t) for t in th_leaves]
            want_a = [not is_zero(t) for t in ta_leaves]
            out_tangent = zero_tangents(sol)
            if not (any(want_h) or any(want_a)):
                return sol, out_tangent
            bad = solver_only_hparams(solver, fun, optimality, sol, h, a, which=want_h)
            if bad:
                raise_solver_only(bad)

            # Differentiate F only along the leaves that carry a tangent.
            h_leaves, h_def = jax.tree.flatten(h)
            a_leaves, a_def = jax.tree.flatten(a)
            idx_h = [i for i, w in enumerate(want_h) if w]
            idx_a = [i for i, w in enumerate(want_a) if w]

            def residual_of(sub_h, sub_a):
                hl, al = list(h_leaves), list(a_leaves)
                for i, x in zip(idx_h, sub_h, strict=True):
                    hl[i] = x
                for i, x in zip(idx_a, sub_a, strict=True):
                    al[i] = x
                hh, aa = jax.tree.unflatten(h_def, hl), jax.tree.unflatten(a_def, al)
                return optimality.residual(sol.params, hh, aa)

            _, rhs = jax.jvp(
                residual_of,
                ([h_leaves[i] for i in idx_h], [a_leaves[i] for i in idx_a]),
                ([th_leaves[i] for i in idx_h], [ta_leaves[i] for i in idx_a]),
            )
            # One flat right-hand side: custom_linear_solve's transpose needs every leaf
            # of it to depend on the tangents, and a block of the residual that the
            # differentiated leaves do not touch (an intercept's) would be a constant.
            flat_rhs, unravel = ravel_pytree(rhs)
            residual = lambda p: optimality.residual(p, h, a)  # noqa: E731

            def matvec(v):
                jv = jax.jvp(residual, (sol.params,), (unravel(v),))[1]
                return ravel_pytree(jv)[0]

            def linear(mv, b):
                x = self._on_working_set(
                    optimality, sol.params, h, mv, b, None, None, solver, sol.state
                )
                if x is None:
                    x = self.linear_solver(
                        mv, b, preconditioner=self._preconditioner(solver, sol.state)
                    )
                return x

            flat_dparams = jax.lax.custom_linear_solve(
                matvec,
                -flat_rhs,
                solve=linear,
                transpose_solve=linear,
                symmetric=optimality.symmetric,
            )
            dparams = unravel(flat_dparams)
            return sol, out_tangent._replace(params=dparams)

        solution.defjvp(rule, symbolic_zeros=True)
        return solution(init_params, hparams, args)
