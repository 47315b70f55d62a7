"""The result of an inner solve: `Solution(params, state, stats, status)`.

Invariant: `status` is one of the integer codes in `Status`; a solve never raises because
its iteration went badly. It reports, and `throw=True` turns a bad status into an error
(see `check_status`).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array, Params


class Status:
    """Integer status codes carried by a `Solution` (arrays, so they work under `jit`)."""

    CONVERGED = 0
    MAX_STEPS = 1
    DIVERGED = 2
    NONFINITE = 3
    STEPS_DONE = 4
    NOT_STATIONARY = 5

    NAMES = ("converged", "max_steps", "diverged", "nonfinite", "steps_done", "not_stationary")
    MESSAGES = (
        "converged",
        "the inner solver stopped at max_steps before reaching its tolerance",
        "the inner solve diverged (gradient norm grew past the divergence threshold); "
        "lower the step size or use a line-search solver",
        "the inner solve produced a non-finite value or gradient (NaN or inf)",
        "the inner solver ran its fixed number of steps (no tolerance); its result is "
        "not checked for stationarity",
        "method=Implicit differentiated a fixed-step run whose optimality residual is "
        "above Implicit's residual_tol (relative to the residual at the start): the "
        "implicit hypergradient assumes a stationary point and may be wrong, even in "
        "sign. Give the solver a tolerance, more steps, or use method=Unrolled()",
    )
    # A solve that ends in one of these is usable: `check_status` passes it and the
    # outer loops do not count it as a failure.
    OK = (CONVERGED, STEPS_DONE)

    @classmethod
    def name(cls, code) -> str:
        return cls.NAMES[int(code)]

    @classmethod
    def ok(cls, status):
        """Whether `status` (an array of codes, traced or not) is one of `Status.OK`."""
        first, *rest = cls.OK
        ok = status == first
        for code in rest:
            ok = ok | (status == code)
        return ok


class Solution(NamedTuple):
    """What an inner solve returns.

    Attributes:
      params: the inner parameters found.
      state: the solver's final state (for inspection or warm starts).
      stats: a dict of scalars: `num_steps`, `value` (objective at `params`) and
        `grad_norm` (norm of the optimality residual at `params`).
      status: an integer array, one of the `Status` codes.
    """

    params: Params
    state: Any
    stats: dict[str, Array]
    status: Array


def _raise_status(status, where):
    status = np.asarray(status)
    bad = ~Status.ok(status)
    if np.any(bad):
        code = int(status[bad].flat[0]) if status.ndim else int(status)
        raise RuntimeError(
            f"{where}: status {Status.NAMES[code]!r}: {Status.MESSAGES[code]} "
            f"({int(np.sum(bad))} of {status.size} solves not converged)"
        )


def check_status(solution: Solution, where: str = "solve") -> Solution:
    """Raise if `solution.status` is not one of `Status.OK` (`converged`, or
    `steps_done` for a fixed-step run without a tolerance); works eagerly and under `jit`.

    Eagerly the error is a `RuntimeError` naming the status. Under `jit` or `vmap` the
    check runs on the host when the program runs, and the same message arrives wrapped in
    JAX's runtime error.
    """
    status = solution.status
    if isinstance(status, jax.core.Tracer):
        jax.debug.callback(lambda s: _raise_status(s, where), status)
    else:
        _raise_status(status, where)
    return solution


def tree_norm(tree) -> Array:
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.abs(x) ** 2) for x in leaves))


def tree_isfinite(tree) -> Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
