"""Optimality conditions: `F(params, hparams, args) = 0` at the inner solution.

Implicit differentiation reads the derivative of the solution off this condition:
`d params / d hparams = -(dF/dparams)^{-1} dF/dhparams`. The problem owns its condition;
the default is stationarity of the inner objective.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax

from .._types import Args, HParams, Params


class OptimalityCondition(NamedTuple):
    """A residual `F(params, hparams, args)` shaped like `params`, zero at the solution.

    Attributes:
      residual: the function `F`.
      symmetric: whether `dF/dparams` is symmetric (true for the gradient of a scalar
        objective, whose Jacobian is the Hessian). Conjugate gradient needs it.
      support: for a condition restricted to a support (`prox_fixed_point`), the mask
        `support(params, hparams)` of the free coordinates: there `dF/dparams` is the
        inner objective's Hessian, elsewhere the identity. Implicit differentiation then
        solves on the inner solver's working set when the solver keeps one. None
        otherwise.
    """

    residual: Callable[[Params, HParams, Args], Params]
    symmetric: bool
    support: Callable[[Params, HParams], Params] | None = None


def stationarity(fun) -> OptimalityCondition:
    """`F = grad_params fun`: the first-order condition of an unconstrained smooth minimum."""
    return OptimalityCondition(residual=jax.grad(fun), symmetric=True)
