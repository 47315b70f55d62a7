"""Type aliases shared across hypergrad.

Every public function takes the inner parameters, the hyperparameters and the data as
separate pytree arguments. Hyperparameters are never captured in closures: they are the
thing that gets differentiated.
"""

from typing import Any

import jax

Array = jax.Array
PyTree = Any
Params = PyTree  # the inner model's parameters (what the inner solver optimizes)
HParams = PyTree  # the hyperparameters (what the hypergradient is taken with respect to)
Args = PyTree  # data and other constants the objective needs
Aux = PyTree
