"""L-BFGS whose step has no data-dependent control flow: a solver for populations.

Interface: `BatchedLBFGS(...)` is an `AbstractSolver` (`init / step / terminate`) and
`population_solver(solver, params)` picks the solver a population runs instead of a
problem's own.

Invariant: one `step` is one evaluation of value and gradient at a trial point and no
data-dependent control flow (a rejected trial shrinks the next one, by selects): every
member of a `vmap`-ed population does the same work in every iteration, and the
members' matrix-vector products become matrix-matrix products.

Why: under `vmap` a `while_loop` runs for as long as its slowest member, and every
data-dependent branch becomes a select that evaluates both sides. optax's zoom line
search is such a loop inside each L-BFGS step; under `vmap` over 64 penalties it made the
population 6-12x slower than a Python loop of single solves (`benchmarks/tuning.py`,
population section). JAX batches a `while_loop` by running the body for every member
until all predicates are false and masking finished members with selects (jax-ml/jax
issues 2586 and 20628); line searches written as loops (optax's zoom, jaxopt's and
optimistix's searches) inherit this. Here the line search is spread over steps,
one trial each.
"""

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from ._base import AbstractSolver, _check_steps, advance, common_state
from ._newton import Newton
from ._optax import _armijo, _backtrack, _check_memory_size, _descending


class BatchedLBFGS(AbstractSolver):
    """L-BFGS (optax's two-loop recursion) whose step is one evaluation and no branch.

    Each step evaluates value and gradient at the trial point `x + t d` of the current
    L-BFGS direction `d = -H g` (`optax.scale_by_lbfgs`; steepest descent, scaled like
    L-BFGS's first step, when `d` does not descend) and accepts it when Armijo's rule
    `f(x + t d) <= f(x) + 1e-4 t g.d` holds (up to `8 eps |f(x)|`, rounding): then `x`,
    the curvature memory and `d` move and `t` returns to 1. Otherwise `x`, the memory and
    `d` stay and `t` shrinks to the minimizer of the quadratic through `f(x)`, `g.d` and
    `f(x + t d)`, kept in `[t/10, t/2]`: a backtracking line search spread over steps,
    one trial per step.
    Every step does the same work whatever happens (selects, no `while_loop` or `cond`),
    so a `vmap`-ed population makes one batched evaluation per step, and a rejected
    trial counts as a step.

    Args:
      max_steps: the largest number of steps (trials, accepted or not).
      tol: stop when the gradient norm is at most `tol`.
      memory_size: number of curvature pairs kept.
      divergence: see `AbstractSolver`.

    Example:
      >>> import jax.numpy as jnp
      >>> from hypergrad.solvers import BatchedLBFGS, run
      >>> fun = lambda w, a, args: jnp.sum(jnp.logaddexp(0.0, -w)) + 0.5 * a * jnp.sum(w**2)
      >>> sol = run(BatchedLBFGS(tol=1e-10), fun, jnp.zeros(2), 1.0)
      >>> [round(float(x), 6) for x in sol.params]  # w = sigmoid(-w) / a
      [0.401058, 0.401058]

    Reference: Nocedal, "Updating quasi-Newton matrices with limited storage", 1980;
    Nocedal and Wright, "Numerical Optimization", 2nd ed., 2006, section 3.5 (backtracking
    by quadratic interpolation).
    """

    def __init__(
        self,
        max_steps: int = 500,
        tol: float | None = 1e-8,
        memory_size: int = 10,
        divergence: float = 1e6,
    ):
        _check_steps(max_steps, tol, divergence)
        _check_memory_size(memory_size)
        self.max_steps, self.tol, self.divergence = max_steps, tol, divergence
        self.memory_size = memory_size

    def _direction(self, grad, memory, params):
        """`(d, memory)`: the L-BFGS direction at `params` after adding the pair that
        ends there, steepest descent when it does not descend."""
        direction, memory = optax.scale_by_lbfgs(memory_size=self.memory_size).update(
            grad, memory, params
        )
        return _descending(ravel_pytree(grad)[0], -ravel_pytree(direction)[0]), memory

    def init(self, fun, params, hparams, args):
        value, grad = jax.value_and_grad(fun)(params, hparams, args)
        memory = optax.scale_by_lbfgs(memory_size=self.memory_size).init(params)
        d, memory = self._direction(grad, memory, params)
        return common_state((memory, d, jnp.ones((), d.dtype)), value, grad)

    def step(self, fun, params, state, hparams, args):
        memory, d, t = state.inner
        flat, unravel = ravel_pytree(params)
        slope = ravel_pytree(state.grad)[0] @ d
        trial = unravel(flat + t * d)
        value, grad = jax.value_and_grad(fun)(trial, hparams, args)
        ok = _armijo(value, state.value, t, slope)
        new_d, new_memory = self._direction(grad, memory, trial)
        # Quadratic interpolation of f along d; a non-finite trial halves t.
        shrunk = _backtrack(value, state.value, t, slope)
        pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(ok, x, y), a, b)  # noqa: E731
        params, value, grad = pick((trial, value, grad), (params, state.value, state.grad))
        inner = pick((new_memory, new_d, jnp.ones_like(t)), (memory, d, shrunk))
        return params, advance(state, inner, value, grad)

    def __repr__(self):
        return (
            f"BatchedLBFGS(max_steps={self.max_steps}, tol={self.tol}, "
            f"memory_size={self.memory_size})"
        )


POPULATION_MEMORY = 5


def population_solver(solver: AbstractSolver, params) -> AbstractSolver:
    """The solver a `vmap`-ed population runs in place of `solver` (the problem's).

    Rule: a solver whose step holds a `while_loop` (not `reverse_differentiable`, such as
    `LBFGS` with its backtracking line search) is replaced by one with member-independent
    control flow and the same tolerance and step budget (at most 50 for Newton): dense
    `Newton` with a batched line search when the parameters number at most 64 (a batched
    Cholesky of a small Hessian is cheaper than many first-order steps), `BatchedLBFGS`
    with at most `POPULATION_MEMORY` (5) curvature pairs otherwise. Other solvers
    (Newton, coordinate descent, fixed-step optax loops) are kept, and so is any solver
    that carries a non-smooth penalty (`solver.prox`: ProxNewton, FISTA): the smooth
    replacements would drop the penalty.
    """
    if (
        solver.reverse_differentiable
        or solver.sequential_batches
        or getattr(solver, "prox", None) is not None
    ):
        return solver
    p = ravel_pytree(params)[0].size
    if p <= 64:
        steps = min(solver.max_steps, 50)  # a budget below Newton's 50 steps is kept
        # Two halvings (candidates 1, 1/2, 1/4): each candidate is one more objective
        # evaluation per step for every member; on breast cancer (K=64) 0, 1, 3 and 8
        # halvings took the same steps and cost 0.46, 0.65, 0.76 and 1.17 of the loop.
        return Newton(max_steps=steps, tol=solver.tol, divergence=solver.divergence, line_search=2)
    # At most 5 curvature pairs: the two-loop recursion is 4 * memory_size sequential
    # vector operations per step, latency-bound on a population's small (K, p) arrays.
    # On the synthetic population (p=100, K=64, L2 logistic) memories 5 and 10 both took
    # 17 steps, and 5 took 6% less time (36.7 against 39.0 ms; 3 took 20 steps, 40 ms).
    return BatchedLBFGS(
        max_steps=solver.max_steps,
        tol=solver.tol,
        memory_size=min(getattr(solver, "memory_size", 10), POPULATION_MEMORY),
        divergence=solver.divergence,
    )
