"""Differentiation methods: strategy objects that decide how a solve is differentiated.

Interface: `method.solve(solver, fun, init_params, hparams, args, optimality) -> Solution`
returns the same solution a plain solve would, wired so that `jax.grad` / `jax.jvp` of
anything computed from `Solution.params` uses the method's rule. The user never calls a
method's derivative directly: a hypergradient is an ordinary JAX derivative.
"""

import abc

from .._config import ConfigEquality
from ..solvers import AbstractSolver, Solution
from ._optimality import OptimalityCondition
from ._tree import leaf_paths, leaves_read_by


class AbstractMethod(ConfigEquality, abc.ABC):
    """How the inner solution is differentiated with respect to hyperparameters."""

    @abc.abstractmethod
    def solve(
        self,
        solver: AbstractSolver,
        fun,
        init_params,
        hparams,
        args,
        optimality: OptimalityCondition,
    ) -> Solution:
        """Solve the inner problem; derivatives of the result follow this method."""

    def check_solver(self, solver: AbstractSolver) -> None:
        """Raise if this method cannot differentiate runs of `solver`."""
        del solver

    # Warm starts of an outer loop, owned by the method: what carries from one
    # hypergradient to the next (`hypergradient(init_params=, init_adjoint=, init_state=)`)
    # as a triple `(params, adjoint, solver_state)`, None where the method keeps nothing.

    def warm_start(self, solver: AbstractSolver, fun, params, hparams, args) -> tuple:
        """The warm start of the first hypergradient, from `params`."""
        del solver, fun, hparams, args
        return params, None, None

    def keep_warm(self, result) -> tuple:
        """The warm start of the next hypergradient, from a `Hypergradient` result."""
        return result.solution.params, None, None


def solver_only_hparams(solver, fun, optimality, solution: Solution, hparams, args, which=None):
    """Paths of hyperparameter leaves that the solver reads but the optimality condition
    does not (learning rates, momentum): implicit differentiation gives them a zero
    derivative, which is wrong for any unconverged or trajectory-dependent objective.

    `which` restricts the check to the leaves flagged True (those being differentiated).
    """
    in_condition = leaves_read_by(lambda h: optimality.residual(solution.params, h, args), hparams)
    in_solver = leaves_read_by(
        lambda h: solver.step(fun, solution.params, solution.state, h, args), hparams
    )
    paths = leaf_paths(hparams)
    which = which if which is not None else [True] * len(paths)
    return [
        p
        for p, want, cond, solv in zip(paths, which, in_condition, in_solver, strict=True)
        if want and solv and not cond
    ]


def raise_solver_only(paths):
    names = ", ".join(f"hparams{p}" for p in paths)
    one = len(paths) == 1
    raise ValueError(
        f"{names} {'enters' if one else 'enter'} the inner solver but not its optimality "
        "condition: implicit differentiation would silently return a zero derivative for "
        f"{'it' if one else 'them'}. Use method=Unrolled(...) or Truncated(...) "
        "to differentiate through the solver's steps, or keep solver hyperparameters out "
        "of the differentiated hparams (close over them or apply jax.lax.stop_gradient)."
    )
