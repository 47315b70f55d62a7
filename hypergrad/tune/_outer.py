"""Outer solvers: strategies that move hyperparameters, built like the inner solvers.

Interface: an outer solver is an `init / step / terminate` object over hyperparameters in
unconstrained coordinates `theta` (log for positive scales):

    state = outer.init(theta, evaluation)
    state = outer.step(state, evaluation)       # evaluation: at state.theta
    done, reason = outer.terminate(state)

where an `Evaluation(value, grad, warm, inner_steps, inner_failures)` is the criterion and
its gradient in `theta` at `state.theta`, computed at the inner tolerance
`outer.tolerance(state)`, with the warm start `state.warm` (owned by the differentiation
method: inner solution, adjoint, solver state). `run_outer` alternates evaluations and
steps in one `lax.while_loop` (one compiled program, no Python between steps);
`iterate_outer` does the same from Python, one compiled step at a time, for callbacks,
progress and timing.

Populations: `run_members` / `step_members` run one strategy for every member of a
population at once (configurations, seeds: leading axes of every leaf of the state, one
nested `vmap` per axis, or `lax.map` for a solver that runs batches one after another), one
evaluation of every running member per step, until every member's `terminate` says
done; the strategy decides per member, a member that is done keeps its state, and the
population stops when the last member does.
`shard_members` splits a population over the devices (`jax.sharding`).

Inner statuses: an evaluation may count its inner solves by `Status` code
(`Evaluation.inner_status`, `count_statuses`); `status_counts` and `inner_failure_message`
read the totals on the host, so an outer loop reports (and with `throw=True` raises on)
inner solves that did not converge.

Invariant: every field of an outer state is an array (a pytree of arrays), so the whole
loop compiles once per shape and runs under `vmap`; the history is preallocated for
`max_steps` entries and filled in order. A first state goes through `strong_types`, so
that a compiled step sees the same types at every step and is traced once.
"""

import abc
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array, HParams
from ..solvers import Status


class Evaluation(NamedTuple):
    """The criterion at one point of the outer loop.

    Attributes:
      value: the criterion.
      grad: its gradient in the unconstrained coordinates (a pytree like `theta`).
      warm: what the next evaluation warm-starts from (inner solution, adjoint, solver
        state; per fold for stacked problems).
      inner_steps: inner iterations this evaluation took (all folds).
      inner_failures: inner solves that did not converge (all folds).
      parts: the criterion's parts whose mean is `value` (per seed or fold), or None.
      inner_status: the inner solves by status, an int32 vector indexed like
        `Status.NAMES` (`count_statuses`), or None.
    """

    value: Array
    grad: HParams
    warm: Any
    inner_steps: Array
    inner_failures: Array
    parts: Array | None = None
    inner_status: Array | None = None


class AbstractOuterSolver(abc.ABC):
    """An outer solver: `init`, `step`, `terminate` and the tolerance of the next
    evaluation (see the module docstring)."""

    max_steps: int

    @abc.abstractmethod
    def init(self, theta: HParams, warm: Any) -> Any:
        """The state before the first evaluation, at `theta`, warm-starting from `warm`."""

    @abc.abstractmethod
    def tolerance(self, state) -> Array:
        """The inner (and adjoint) tolerance of the next evaluation."""

    @abc.abstractmethod
    def step(self, state, evaluation: Evaluation):
        """The state after the evaluation at `state.theta`: next point, history, counts."""

    @abc.abstractmethod
    def terminate(self, state) -> tuple[Array, Array]:
        """`(done, reason)`; `reason` indexes the solver's `REASONS`."""


def _one(outer, evaluate, state):
    evaluation = evaluate(state.theta, state.warm, outer.tolerance(state))
    return outer.step(state, evaluation)


def run_outer(outer: AbstractOuterSolver, evaluate: Callable, state):
    """Evaluate and step until `outer.terminate` (a `lax.while_loop`; call under `jit`).

    `evaluate(theta, warm, tol) -> Evaluation` is pure JAX.
    """

    def cond(state):
        done, _ = outer.terminate(state)
        return ~done

    return jax.lax.while_loop(cond, lambda s: _one(outer, evaluate, s), state)


def iterate_outer(step: Callable, state, on_step=None):
    """The same loop from Python: `step(state) -> (state, done)` is one compiled
    evaluation, step and termination test; `on_step(state, seconds)` is called after
    each, with the time since the loop started. Returns the final state and the time of
    each step."""
    start, times = time.perf_counter(), []
    done = False
    while not done:
        state, done = step(state)
        done = bool(done)  # waits for the step
        times.append(time.perf_counter() - start)
        if on_step is not None:
            on_step(state, times[-1])
    return state, times


def strong_types(tree):
    """`tree` with no weak-typed leaf (a Python number's type, which a first state often
    has, from a literal in an `init`): the state after a step has none, and a compiled
    step would be traced again for the second step if the first state's types differed."""

    def strong(x):
        if isinstance(x, jax.Array) and x.weak_type:
            return jax.lax.convert_element_type(x, x.dtype)
        return x

    return jax.tree.map(strong, tree)


# -- populations -------------------------------------------------------------------------


def shard_members(tree, devices=None):
    """`tree` (a population: every leaf's leading axis indexes the members) split over
    `devices` (default `jax.devices()`) along that axis, with `jax.sharding`: a
    one-axis mesh `("members",)`, each device holding a contiguous block of members.
    A compiled program fed the result runs each block on its device (XLA's SPMD
    partitioner; the data the members share is replicated), and a `while_loop` over the
    population stops when every member on every device is done, so the result equals the
    one-device result. Unchanged with one device, or when the devices do not divide the
    members evenly (no padding: uneven blocks would run a padded member's iterations).
    """
    devices = jax.devices() if devices is None else list(devices)
    leaves = jax.tree.leaves(tree)
    if (
        len(devices) <= 1
        or not leaves
        or any(np.ndim(x) == 0 or np.shape(x)[0] % len(devices) for x in leaves)
    ):
        return tree
    mesh = jax.sharding.Mesh(np.asarray(devices), ("members",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("members"))
    return jax.device_put(tree, sharding)


def over_members(fn: Callable, levels, sequential: bool = False) -> Callable:
    """`fn` mapped once per member axis; `levels[i]` is the `in_axes` of the i-th
    (outermost first: 0 or None per argument), so the state's leading axes are the levels
    in order. Mapped by `jax.vmap`, or with `sequential` by `jax.lax.map`, one member
    after another: for a solver whose control flow depends on its data
    (`sequential_batches`, coordinate descent), where a `vmap` would run every member
    through every branch and every member's loop until the slowest is done."""
    for in_axes in reversed(tuple(levels)):
        fn = _map_sequential(fn, in_axes) if sequential else jax.vmap(fn, in_axes=in_axes)
    return fn


def _map_sequential(fn: Callable, in_axes) -> Callable:
    if any(axis not in (0, None) for axis in in_axes):
        raise ValueError(f"a sequential map takes in_axes of 0 or None, got {in_axes!r}")
    mapped = [i for i, axis in enumerate(in_axes) if axis == 0]

    def apply(*args):
        def one(xs):
            full = list(args)
            for i, x in zip(mapped, xs, strict=True):
                full[i] = x
            return fn(*full)

        return jax.lax.map(one, tuple(args[i] for i in mapped))

    return apply


def _all_done(outer, problem, state, levels):
    done = over_members(lambda pb, s: outer.terminate(s)[0], levels)(problem, state)
    return jnp.all(done)


def _until_done(outer: AbstractOuterSolver, member_step: Callable) -> Callable:
    """`member_step` for a member that has not stopped; a stopped member keeps its state
    (its point, best and history stay those of its last step), so a member of a
    population ends where it would have ended alone."""

    def step(problem, state):
        done, _ = outer.terminate(state)
        return jax.lax.cond(done, lambda: state, lambda: member_step(problem, state))

    return step


def run_members(outer, member_step: Callable, problem, state, levels=(), sequential=False):
    """`member_step(problem, state) -> state` (one member's evaluation and step) for
    every member until each member's `outer.terminate` is done (a `lax.while_loop`; call
    under `jit`); a member that is done takes no more steps. `levels` and `sequential`
    lay out and map the members (see `over_members`); the problem is mapped where a
    level's first axis is not None."""
    step = over_members(_until_done(outer, member_step), levels, sequential)

    def cond(s):
        return ~_all_done(outer, problem, s, levels)

    return jax.lax.while_loop(cond, lambda s: step(problem, s), state)


def step_members(outer, member_step: Callable, problem, state, levels=(), sequential=False):
    """One step of `run_members`: `(state, done)`, for `iterate_outer`."""
    state = over_members(_until_done(outer, member_step), levels, sequential)(problem, state)
    return state, _all_done(outer, problem, state, levels)


def evaluate_and_step(outer: AbstractOuterSolver, evaluate: Callable) -> Callable:
    """The member step of a strategy whose evaluation needs only the point, the warm start
    and the tolerance: `evaluate(problem, theta, warm, tol) -> Evaluation`."""

    def member_step(problem, state):
        ev = evaluate(problem, state.theta, state.warm, outer.tolerance(state))
        return outer.step(state, ev)

    return member_step


# -- inner statuses ----------------------------------------------------------------------


def count_statuses(status: Array) -> Array:
    """How many of the solves in `status` (any shape) ended with each `Status` code: an
    int32 vector indexed like `Status.NAMES`."""
    codes = jnp.arange(len(Status.NAMES), dtype=jnp.int32)
    flat = jnp.ravel(jnp.asarray(status, jnp.int32))
    return jnp.sum(flat[:, None] == codes[None, :], axis=0).astype(jnp.int32)


def status_counts(counts) -> dict[str, int]:
    """`{status name: solves}` from counts (`count_statuses`), summed over any leading
    axes (steps, members)."""
    totals = np.asarray(counts).reshape(-1, len(Status.NAMES)).sum(axis=0)
    return {name: int(n) for name, n in zip(Status.NAMES, totals, strict=True)}


def failed_solves(counts: dict[str, int]) -> int:
    """How many of the solves counted by `counts` (`status_counts`) ended in a status
    outside `Status.OK`."""
    return sum(n for name, n in counts.items() if Status.NAMES.index(name) not in Status.OK)


def failed_counts(counts):
    """The solves outside `Status.OK` in count vectors (`count_statuses`, last axis
    indexed like `Status.NAMES`; NumPy or JAX), per leading index."""
    return counts.sum(-1) - counts[..., list(Status.OK)].sum(-1)


def inner_failure_message(counts: dict[str, int], where: str) -> str | None:
    """What went wrong in the inner solves counted by `counts` (`status_counts`), naming
    the most frequent bad status; None when every solve converged."""
    ok = {Status.NAMES[code] for code in Status.OK}
    bad = {k: v for k, v in counts.items() if k not in ok and v}
    if not bad:
        return None
    name = max(bad, key=bad.get)
    total = sum(counts.values())
    return (
        f"{where}: {sum(bad.values())} of {total} inner solves did not converge; "
        f"status {name!r} ({bad[name]} solves): "
        f"{Status.MESSAGES[Status.NAMES.index(name)]}"
    )
