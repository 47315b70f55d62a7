"""`BilevelProblem`: the inner objective, the outer objective, their data, and the
optimality condition that the inner solution satisfies.

The problem is a pytree: its data (`init_params`, `train`, `val`, `test`, `hparams`) are
leaves, so a problem passes through `jax.jit` as an argument (its arrays are not baked
into the compiled program as constants) and several problems on the same shapes (folds,
seeds) stack under `jax.vmap`; its functions, solver and name are static.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from ._types import Args, Array, HParams, Params


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BilevelProblem:
    """`min_h outer(params*(h), h, val)` where `params*(h) = argmin_p inner(p, h, train)`.

    Attributes:
      inner: the inner objective `inner(params, hparams, train) -> scalar`.
      outer: the outer (validation) objective `outer(params, hparams, val) -> scalar`.
      init_params: where inner solves start by default.
      train: the inner objective's data.
      val: the outer objective's data.
      hparams: default hyperparameters (a starting point, and the structure expected).
      test: held-out data for reporting (`outer(params, hparams, test)`), or None.
      optimality: the optimality condition of the inner problem
        (`hypergrad.methods.OptimalityCondition`), or None for stationarity of `inner`.
      solver: the inner solver the problem is meant to be solved with.
      name: a short name for tables and records.
      method: the differentiation method the problem is best differentiated with, used
        where none is given (None: `Implicit()`); the sparse regressions choose
        `Implicit(Dense(symmetric=True))`, an exact solve on the solver's working set.
    """

    inner: Callable[[Params, HParams, Args], Array] = dataclasses.field(metadata=dict(static=True))
    outer: Callable[[Params, HParams, Args], Array] = dataclasses.field(metadata=dict(static=True))
    init_params: Params
    train: Args
    val: Args
    hparams: HParams
    test: Args = None
    optimality: Any = dataclasses.field(default=None, metadata=dict(static=True))
    solver: Any = dataclasses.field(default=None, metadata=dict(static=True))
    name: str = dataclasses.field(default="problem", metadata=dict(static=True))
    method: Any = dataclasses.field(default=None, metadata=dict(static=True))
