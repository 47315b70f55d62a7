"""Entry points: `solve`, `outer_loss` and `hypergradient`.

`solve(fun, init_params, hparams, args, solver=..., method=...)` returns the inner
`Solution`; the method decides how JAX differentiates it, so

    jax.grad(lambda h: val_loss(solve(fun, p0, h, args, solver=s, method=m).params))(h)

is the hypergradient by method `m`. `hypergradient(problem, hparams, ...)` computes the
same number for a `BilevelProblem` and also returns what an outer loop reuses between
steps (the inner solution, and for implicit methods the adjoint vector) for warm starts.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._bilevel import BilevelProblem
from .._compile import EagerProgram, runs_compiled
from .._contracts import (
    check_float_hparams,
    check_problem_call,
    check_solver_carries_penalty,
    warn_not_stationary,
)
from .._types import Array, HParams, Params
from ..solvers import AbstractSolver, Solution, check_status
from ..solvers._base import run
from ._base import AbstractMethod, raise_solver_only, solver_only_hparams
from ._implicit import Implicit
from ._optimality import OptimalityCondition, stationarity


def _check_finite(name, tree):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.core.Tracer):
            continue
        arr = np.asarray(leaf)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} must be finite, got "
                f"{name}{jax.tree_util.keystr(path)}={arr!r}"
            )


def _check_inputs(fun, init_params, hparams, args, solver, method, optimality):
    if not callable(fun):
        raise TypeError(f"fun must be callable, got fun={fun!r}")
    if not isinstance(solver, AbstractSolver):
        raise TypeError(
            "solver must be a hypergrad.solvers.AbstractSolver (OptaxSolver, LBFGS, Newton, "
            f"...), got solver={solver!r}"
        )
    if not isinstance(method, AbstractMethod):
        raise TypeError(
            "method must be a hypergrad method (Implicit, Unrolled, Truncated, ...), "
            f"got method={method!r}"
        )
    if not isinstance(optimality, OptimalityCondition):
        raise TypeError(
            f"optimality must be an OptimalityCondition or None, got optimality={optimality!r}"
        )
    _check_finite("hparams", hparams)
    _check_finite("init_params", init_params)
    method.check_solver(solver)
    try:
        out = jax.eval_shape(fun, init_params, hparams, args)
    except (TypeError, ValueError) as e:
        shapes = jax.tree.map(jnp.shape, (init_params, hparams))
        raise ValueError(
            "fun(init_params, hparams, args) failed; check that the shapes match. "
            f"Shapes of (init_params, hparams): {shapes}. The error was: {e}"
        ) from e
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()):
        raise ValueError(f"fun must return a scalar, got {out}")


def solve(
    fun,
    init_params: Params,
    hparams: HParams,
    args: Any = None,
    *,
    solver: AbstractSolver,
    method: AbstractMethod | None = None,
    optimality: OptimalityCondition | None = None,
    throw: bool = False,
) -> Solution:
    """Minimize `fun(params, hparams, args)` over `params`, differentiably in `hparams`.

    Args:
      fun: the inner objective, a scalar function of `(params, hparams, args)`.
      init_params: the starting point (a warm start: pass a previous `Solution.params`).
      hparams: the hyperparameters, a pytree; derivatives of the result with respect to
        it follow `method`.
      args: data and other inputs of `fun`; differentiable too where the method allows.
      solver: the inner solver (`OptaxSolver`, `LBFGS`, `Newton`, ...).
      method: how the result is differentiated; default `Implicit(CG())`.
      optimality: the optimality condition implicit methods use; default stationarity of
        `fun` (its gradient is zero at the solution).
      throw: raise if the solve does not converge (see `check_status`) instead of only
        reporting the status.

    Returns:
      A `Solution(params, state, stats, status)`.

    Called with concrete arrays (not under `jit`, `grad` or `vmap`), the solve runs as
    one compiled program, cached by `fun`, the solver, the method, the optimality
    condition and the shapes (`hypergrad._compile.runs_compiled`); under a
    transformation it is traced into the caller's program.
    """
    method = Implicit() if method is None else method
    given = optimality  # None, or the user's: a static setting of the compiled program
    optimality = stationarity(fun) if optimality is None else optimality
    hparams = check_float_hparams(hparams)
    _check_inputs(fun, init_params, hparams, args, solver, method, optimality)
    if runs_compiled((init_params, args), hparams):
        # Called eagerly: one compiled program, reused for other values of the same
        # shapes (an eager loop compiles anew at every call; see `hypergrad._compile`).
        sol = _solve_compiled.for_data(args)(
            fun, init_params, hparams, args, solver=solver, method=method, optimality=given
        )
    else:
        sol = method.solve(solver, fun, init_params, hparams, args, optimality)
    if throw:
        return check_status(sol, "solve")
    warn_not_stationary(sol, "solve")
    return sol


def _solve(fun, init_params, hparams, args, *, solver, method, optimality):
    optimality = stationarity(fun) if optimality is None else optimality
    return method.solve(solver, fun, init_params, hparams, args, optimality)


_solve_compiled = EagerProgram(_solve, ("fun", "solver", "method", "optimality"))


def problem_method(problem: BilevelProblem, method: AbstractMethod | None) -> AbstractMethod:
    """The method to differentiate `problem` with: `method`, else the problem's own
    (`BilevelProblem.method`), else `Implicit()`."""
    if method is not None:
        return method
    return Implicit() if problem.method is None else problem.method


def _problem_parts(problem, solver):
    if not isinstance(problem, BilevelProblem):
        raise TypeError(f"problem must be a BilevelProblem, got problem={problem!r}")
    solver = problem.solver if solver is None else solver
    if solver is None:
        raise ValueError("solver is None and the problem has no default solver; pass solver=")
    check_solver_carries_penalty(problem, solver)
    optimality = stationarity(problem.inner) if problem.optimality is None else problem.optimality
    return solver, optimality


def outer_loss(
    problem: BilevelProblem,
    hparams: HParams,
    *,
    solver: AbstractSolver | None = None,
    method: AbstractMethod | None = None,
    init_params: Params | None = None,
    split: str = "val",
    throw: bool = False,
) -> Array:
    """The outer objective at the inner solution: `outer(params*(hparams), hparams, data)`.

    `jax.grad(outer_loss, argnums=1)(problem, hparams, method=m)` is the hypergradient by
    method `m`. `split` picks the data: `"val"` (default) or `"test"`.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got split={split!r}")
    supplied = solver is not None  # its own hyperparameters may come as extra keys
    solver, _ = _problem_parts(problem, solver)
    method = problem_method(problem, method)
    hparams = check_problem_call(problem, hparams, init_params, allow_extra=supplied)
    init = problem.init_params if init_params is None else init_params
    sol = solve(
        problem.inner,
        init,
        hparams,
        problem.train,
        solver=solver,
        method=method,
        # The problem's own (None: stationarity of its inner objective, built by `solve`),
        # so that an eager call's compiled program is found again (a new closure would not).
        optimality=problem.optimality,
        throw=throw,
    )
    data = problem.val if split == "val" else problem.test
    if data is None:
        raise ValueError(f"problem {problem.name!r} has no {split} data")
    return problem.outer(sol.params, hparams, data)


class Hypergradient(NamedTuple):
    """A hypergradient and what the next outer step can reuse.

    Attributes:
      value: the outer objective at the inner solution.
      grad: its derivative with respect to `hparams` (same structure).
      solution: the inner `Solution` (warm-start the next solve from `solution.params`).
      adjoint: for `Implicit`, the solution `v` of `(dF/dparams)^T v = d outer/d params`
        (warm-start the next linear solve with it); None for other methods.
    """

    value: Array
    grad: HParams
    solution: Solution
    adjoint: Params | None


def hypergradient(
    problem: BilevelProblem,
    hparams: HParams,
    *,
    solver: AbstractSolver | None = None,
    method: AbstractMethod | None = None,
    init_params: Params | None = None,
    init_adjoint: Params | None = None,
    init_state: Any = None,
    tol: Array | float | None = None,
    throw: bool = False,
) -> Hypergradient:
    """The hypergradient `d outer(params*(h), h) / d h` of a `BilevelProblem` at `hparams`.

    For `Implicit` this is the adjoint computation written out (one inner solve, one
    linear solve with `(dF/dparams)^T`, one vector-Jacobian product with `dF/dh`), so
    that the inner solution and the adjoint vector come back for warm starts
    (`init_params`, `init_adjoint`, and `init_state`: a previous solution's solver state
    at `init_params`, whose working set and caches the solver may reuse) as in HOAG;
    `tol` (data: one compiled program for every value) replaces the inner solver's and
    the linear solver's tolerance. For other methods it is `jax.value_and_grad` of
    `outer_loss` (`init_adjoint`, `init_state` and `tol` do not apply).

    Called with concrete values (not under `jit`, `grad` or `vmap`), the whole
    computation runs as one compiled program, cached by the shapes and dtypes of the
    data and by the solver, method and problem functions, so another `tol`, other
    hyperparameters or other data of the same shapes reuse it; under a transformation it
    is traced into the caller's program. On the CPU, a problem whose training and
    validation data hold at most `hypergrad._compile.SMALL_DATA_ELEMENTS` (65536)
    elements gets a program compiled for compile time (about 4x faster to compile, its
    call a millisecond or so slower; `HYPERGRAD_FAST_COMPILE=0` turns this off).

    Reference: Pedregosa, "Hyperparameter optimization with approximate gradient", 2016,
    https://arxiv.org/abs/1602.02355
    """
    supplied = solver is not None  # its own hyperparameters may come as extra keys
    solver, optimality = _problem_parts(problem, solver)
    method = problem_method(problem, method)
    if not isinstance(method, Implicit) and init_adjoint is not None:
        raise ValueError(f"init_adjoint only applies to Implicit methods, got method={method!r}")
    # The contract (keys, dtypes, warm-start shapes, data, domains) before any tracing.
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(hparams))
    hparams = check_problem_call(
        problem, hparams, init_params, init_adjoint, throw and traced, allow_extra=supplied
    )
    init = problem.init_params if init_params is None else init_params
    dynamic = (problem, hparams, init, init_adjoint, init_state, tol)
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(dynamic)):
        return _hypergradient(*dynamic, solver=solver, method=method, throw=throw)
    # Eagerly, JAX would compile each operation apart (122 small programs for L2 logistic
    # regression, 11 s of XLA compilation on 2 cores against 6 s for one program). The
    # checks run here on concrete values, before any compilation; `throw` is checked on
    # the result, since a host callback in the program would keep it out of the
    # persistent cache.
    _check_inputs(problem.inner, init, hparams, problem.train, solver, method, optimality)
    dynamic = (problem, _strong(hparams), init, init_adjoint, init_state, _strong(tol))
    # Small data: a program compiled for compile time (`hypergrad._compile`).
    compiled = _hypergradient_compiled.for_data(problem.train, problem.val)
    out = compiled(*dynamic, solver=solver, method=method, throw=False)
    if throw:
        check_status(out.solution, "hypergradient")
    else:
        warn_not_stationary(out.solution, "hypergradient")
    return out


def _hypergradient(
    problem, hparams, init, init_adjoint, init_state, tol, *, solver, method, throw
) -> Hypergradient:
    """`hypergradient` with its defaults resolved (`init` the starting point)."""
    optimality = _problem_parts(problem, solver)[1]
    if not isinstance(method, Implicit):

        def value(h):
            sol = solve(
                problem.inner,
                init,
                h,
                problem.train,
                solver=solver,
                method=method,
                optimality=optimality,
                throw=throw,
            )
            return problem.outer(sol.params, h, problem.val), sol

        (val, sol), grad = jax.value_and_grad(value, has_aux=True)(hparams)
        return Hypergradient(val, grad, jax.lax.stop_gradient(sol), None)

    _check_inputs(problem.inner, init, hparams, problem.train, solver, method, optimality)
    method.check_optimality(optimality)
    state = None
    if init_state is not None:
        state = solver.reinit(problem.inner, init, init_state, hparams, problem.train)
    sol = run(solver, problem.inner, init, hparams, problem.train, state=state, tol=tol)
    sol = method.check_stationary(sol)
    if throw:
        check_status(sol, "hypergradient")
    bad = solver_only_hparams(solver, problem.inner, optimality, sol, hparams, problem.train)
    if bad:
        raise_solver_only(bad)
    val, (g_params, g_direct) = jax.value_and_grad(problem.outer, argnums=(0, 1))(
        sol.params, hparams, problem.val
    )
    adjoint = method.linear_solve(
        optimality,
        sol.params,
        hparams,
        problem.train,
        g_params,
        transpose=True,
        x0=init_adjoint,
        tol=tol,
        solver=solver,
        state=sol.state,
    )
    _, vjp_h = jax.vjp(lambda h: optimality.residual(sol.params, h, problem.train), hparams)
    (g_indirect,) = vjp_h(adjoint)
    grad = jax.tree.map(jnp.subtract, g_direct, g_indirect)
    return Hypergradient(val, grad, sol, adjoint)


def _strong(tree):
    """Python numbers and weakly typed arrays as NumPy arrays of their (canonical) dtype.

    `jit` keys its programs by dtype and weak type too: `0.3`, `jnp.asarray(0.3)` and
    `jnp.float64(0.3)` would compile three programs for one signature. NumPy, not JAX,
    so that no eager JAX operation (a compilation of its own) runs here."""

    def leaf(x):
        if isinstance(x, (bool, int, float, complex)) or getattr(x, "weak_type", False):
            dtype = x.dtype if hasattr(x, "dtype") else np.result_type(x)
            return np.asarray(x, dtype=jax.dtypes.canonicalize_dtype(dtype))
        return x

    return jax.tree.map(leaf, tree)


# One program per (solver, method, problem functions, shapes): solver and method are
# frozen dataclasses, equal (and so cache hits) when their settings are.
_hypergradient_compiled = EagerProgram(_hypergradient, ("solver", "method", "throw"))
