"""Unrolled differentiation: differentiate through the inner solver's iterations.

Unlike implicit differentiation, this reaches hyperparameters of the solver itself
(learning rate, momentum) and gives the exact derivative of what a finite run computes,
converged or not. Reverse mode stores the trajectory (or, with checkpoints, segment
boundaries); forward mode stores nothing but carries one tangent per hyperparameter.
"""

import jax
import jax.numpy as jnp

from ..solvers import Solution
from ..solvers._base import make_solution, run, run_steps
from ..solvers._solution import tree_norm
from ._base import AbstractMethod
from ._tree import flatten_tangents, is_zero, zero_tangents

_MODES = ("reverse", "forward")


class Unrolled(AbstractMethod):
    """Differentiate through all of the inner solver's steps.

    Args:
      mode: `"reverse"` backpropagates through the stored trajectory (cost independent
        of the number of hyperparameters, memory linear in the number of steps);
        `"forward"` propagates the Jacobian with respect to the differentiated inputs
        alongside the iterations (memory independent of the number of steps, cost linear
        in the number of hyperparameters: for a few, such as a learning rate and a weight
        decay). Either mode serves `jax.grad` and `jax.jvp`.
      checkpoints: reverse mode only: split the unroll into this many segments and
        recompute each in the backward pass; memory about `checkpoints + max_steps /
        checkpoints` states instead of `max_steps`, smallest at `sqrt(max_steps)`, for
        one more forward pass. `None` stores every step.

    Reverse mode always runs `solver.max_steps` scan iterations; after the solver
    terminates (tolerance reached) the remaining iterations leave the state unchanged.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from hypergrad import solve, Unrolled
      >>> from hypergrad.solvers import OptaxSolver
      >>> fun = lambda w, h, args: 0.5 * jnp.sum((w - 1.0) ** 2)
      >>> solver = OptaxSolver(lambda h: optax.sgd(h), max_steps=3, tol=None)
      >>> final = lambda lr: solve(fun, 0.0, lr, solver=solver, method=Unrolled()).params
      >>> round(float(jax.grad(final)(0.5)), 6)  # w_3 = 1 - (1-lr)^3, dw_3/dlr = 3(1-lr)^2
      0.75

    References:
      Maclaurin, Duvenaud and Adams, "Gradient-based Hyperparameter Optimization through
      Reversible Learning", 2015, https://arxiv.org/abs/1502.03492
      Franceschi et al., "Forward and Reverse Gradient-Based Hyperparameter
      Optimization", 2017, https://arxiv.org/abs/1703.01785
      Griewank, "Achieving logarithmic growth of temporal and spatial complexity in
      reverse automatic differentiation", 1992 (checkpointing).
    """

    def __init__(self, mode: str = "reverse", checkpoints: int | None = None):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got mode={mode!r}")
        if checkpoints is not None:
            if isinstance(checkpoints, bool) or not isinstance(checkpoints, int) or checkpoints < 1:
                raise ValueError(
                    f"checkpoints must be a positive int or None, got checkpoints={checkpoints!r}"
                )
            if mode == "forward":
                raise ValueError(
                    "checkpoints only apply to mode='reverse' (forward mode stores no "
                    f"trajectory), got mode='forward', checkpoints={checkpoints!r}"
                )
        self.mode, self.checkpoints = mode, checkpoints

    def __repr__(self):
        return f"Unrolled(mode={self.mode!r}, checkpoints={self.checkpoints})"

    def check_solver(self, solver) -> None:
        if self.mode == "reverse":
            _check_reversible(self, solver)

    def solve(self, solver, fun, init_params, hparams, args, optimality) -> Solution:
        del optimality
        self.check_solver(solver)
        if self.mode == "reverse":
            state = solver.init(fun, init_params, hparams, args)
            params, state = run_steps(
                solver, fun, init_params, state, hparams, args, solver.max_steps, self.checkpoints
            )
            return make_solution(solver, fun, params, state, hparams, args)
        return _forward_solve(solver, fun, init_params, hparams, args)


def _check_reversible(method, solver):
    if not solver.reverse_differentiable:
        raise ValueError(
            f"method={method!r} differentiates through the solver's steps in reverse mode, "
            f"but solver={solver!r} has steps that cannot be reverse-differentiated (a line "
            "search loop). Use Unrolled(mode='forward'), Implicit(...), or an OptaxSolver "
            "with a fixed-step optimizer."
        )


def _forward_solve(solver, fun, init_params, hparams, args) -> Solution:
    @jax.custom_jvp
    def solution(init, h, a):
        return run(solver, fun, init, h, a)

    def rule(primals, tangents):
        leaves, treedef = jax.tree.flatten(primals)
        t_leaves = flatten_tangents(tangents)
        active = [i for i, t in enumerate(t_leaves) if not is_zero(t)]
        if not active:
            sol = solution(*primals)
            return sol, zero_tangents(sol)

        def unroll(sub):
            ls = list(leaves)
            for i, x in zip(active, sub, strict=True):
                ls[i] = x
            sol = run(solver, fun, *jax.tree.unflatten(treedef, ls))
            return sol.params, sol

        # The Jacobian with respect to the active inputs, built by forward mode alongside
        # the iterations (jacfwd through the while loop); the tangent is then a linear
        # map of the input tangents, which JAX transposes for reverse mode.
        jac, sol = jax.jacfwd(unroll, has_aux=True)([leaves[i] for i in active])
        t_in = [t_leaves[i] for i in active]

        def contract(jac_leaf):
            return sum(
                jnp.tensordot(j, t, axes=jnp.ndim(t)) for j, t in zip(jac_leaf, t_in, strict=True)
            )

        dparams = jax.tree.map(contract, jac, is_leaf=lambda x: isinstance(x, list))
        return sol, zero_tangents(sol)._replace(params=dparams)

    solution.defjvp(rule, symbolic_zeros=True)
    return solution(init_params, hparams, args)


class Truncated(AbstractMethod):
    """Reverse mode through the last `k` inner steps only.

    The first `max_steps - k` steps (or fewer, if the solver reaches its tolerance
    earlier) run without derivatives; then exactly `k` more steps run, differentiated,
    whether or not the tolerance is already met (so the derivative is always the
    `k`-step truncation, also from a converged point).
    Cheaper in memory than `Unrolled` and biased: the dependence of the starting point
    of the last `k` steps on the hyperparameters is dropped (Shaban et al. bound the
    bias for contracting inner dynamics).

    Args:
      k: the number of differentiated steps; at most the solver's `max_steps`.

    Reference: Shaban, Cheng, Hatch and Boots, "Truncated Back-propagation for Bilevel
    Optimization", 2019, https://arxiv.org/abs/1810.10667
    """

    def __init__(self, k: int):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got k={k!r}")
        self.k = k

    def __repr__(self):
        return f"Truncated(k={self.k})"

    def check_solver(self, solver) -> None:
        _check_reversible(self, solver)
        if self.k > solver.max_steps:
            raise ValueError(
                f"Truncated(k={self.k}) is longer than the unroll: the solver takes at most "
                f"max_steps={solver.max_steps} steps"
            )

    def solve(self, solver, fun, init_params, hparams, args, optimality) -> Solution:
        del optimality
        self.check_solver(solver)
        stop = jax.lax.stop_gradient
        head = run(
            solver,
            fun,
            stop(init_params),
            stop(hparams),
            stop(args),
            max_steps=solver.max_steps - self.k,
        )
        params = head.params
        # The head's value and gradient were computed without derivatives; recompute them
        # with live hyperparameters so the first differentiated step sees the dependence
        # of the gradient on the hyperparameters at the truncation point.
        value, grad = jax.value_and_grad(fun)(params, hparams, args)
        state = head.state._replace(value=value, grad=grad, grad_norm=tree_norm(grad))
        params, state = run_steps(
            solver, fun, params, state, hparams, args, self.k, stop_at_tol=False
        )
        return make_solution(solver, fun, params, state, hparams, args)
