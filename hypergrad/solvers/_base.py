"""Inner solvers as pure `init / step / terminate` objects, and the loop that runs them.

Interface: for an objective `fun(params, hparams, args) -> scalar`,

    state = solver.init(fun, params, hparams, args)
    params, state = solver.step(fun, params, state, hparams, args)
    done, status = solver.terminate(fun, params, state, hparams, args)

Invariant: every solver state carries the common fields of `SolverState` (`num_steps`,
`value`, `grad`, `grad_norm`, `value0`, `grad_norm0`) evaluated at the *current* params,
so termination, statistics and the differentiation methods read them the same way for
every solver. `run` is a `lax.while_loop` over `step` (not reverse-differentiable; the
differentiation methods in `hypergrad.methods` decide how derivatives are taken).
"""

import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .._compile import EagerProgram, runs_compiled
from .._config import Configurable
from .._types import Args, Array, HParams, Params
from ._solution import Solution, Status, tree_isfinite, tree_norm

Objective = Callable[[Params, HParams, Args], Array]


class SolverState(NamedTuple):
    """State common to all solvers; `inner` holds the solver's own state."""

    inner: Any
    num_steps: Array
    value: Array
    grad: Params
    grad_norm: Array
    value0: Array
    grad_norm0: Array
    # The tolerance of this run when given as data (`run(..., tol=...)`): an array read by
    # `terminate` in place of the solver's static `tol`, so that one compiled program
    # serves every tolerance of a schedule. None: the solver's own `tol`.
    tol: Array | None = None


def _check_steps(max_steps, tol, divergence):
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 0:
        raise ValueError(f"max_steps must be a non-negative int, got max_steps={max_steps!r}")
    if tol is not None and not (tol >= 0):
        raise ValueError(f"tol must be non-negative or None, got tol={tol!r}")
    if not divergence > 1:
        raise ValueError(f"divergence must be > 1, got divergence={divergence!r}")


class AbstractSolver(Configurable, abc.ABC):
    """An inner solver: `init`, `step`, and the shared `terminate`.

    A solver is written to and rebuilt from JSON by its public fields
    (`solver.to_config()`, `AbstractSolver.from_config(config)`; see `hypergrad._config`).

    Attributes every solver has:
      max_steps: the largest number of steps.
      tol: stop when the gradient norm is at most `tol`; `None` runs exactly `max_steps`
        steps and reports `steps_done` when they are done (a fixed training budget; not a
        claim of convergence, see `Status.STEPS_DONE`).
      divergence: report `diverged` when the gradient norm exceeds
        `divergence * (1 + grad_norm0)` or the objective exceeds
        `value0 + divergence * (1 + |value0|)`.
    """

    max_steps: int
    tol: float | None
    divergence: float
    # Whether `step` can be reverse-differentiated (no while loop inside, such as a line
    # search): unrolled reverse-mode methods need it.
    reverse_differentiable: bool = True
    # Whether independent solves (K folds, a population) run faster one after another
    # (`lax.map`) than as one batched program (`vmap`): true for solvers that index the
    # data at member-dependent positions (coordinate descent), which `vmap` turns into
    # gathers and scatters and runs for as long as the slowest member. See `batch_apply`.
    sequential_batches: bool = False

    # Solvers are static parts of problems and jitted functions: two solvers with the same
    # configuration must compare (and hash) equal, or JAX would recompile for each copy.
    def _config(self):
        return tuple(sorted((k, v) for k, v in vars(self).items() if not k.startswith("_")))

    def __eq__(self, other):
        return type(self) is type(other) and self._config() == other._config()

    def __hash__(self):
        return hash((type(self), self._config()))

    @abc.abstractmethod
    def init(self, fun: Objective, params: Params, hparams: HParams, args: Args) -> SolverState:
        """The state at `params` (value and gradient evaluated there)."""

    @abc.abstractmethod
    def step(
        self, fun: Objective, params: Params, state: SolverState, hparams: HParams, args: Args
    ) -> tuple[Params, SolverState]:
        """One iteration; the returned state describes the returned params."""

    def _converged(self, state: SolverState) -> Array:
        """Whether `state` meets the tolerance (the run's `state.tol`, else `self.tol`);
        with no tolerance, whether its steps are done (reported as `steps_done`)."""
        tol = self.tol if state.tol is None else state.tol
        if tol is None:
            return state.num_steps >= self.max_steps
        return state.grad_norm <= tol

    def reinit(
        self, fun: Objective, params: Params, state: SolverState, hparams: HParams, args: Args
    ) -> SolverState:
        """The state at `params` for new `hparams`, reusing what `state` (a previous run's
        final state at `params`) holds that does not depend on them (a working set, a
        cache). By default nothing: `init`."""
        del state
        return self.init(fun, params, hparams, args)

    def restricted_hessian(self, state: SolverState, hparams: HParams):
        """`(slots, count, hessian)` when the solver keeps the Hessian of its objective on
        a working set (the first `count` entries of `slots`): `hessian` is that matrix,
        over the slots. Implicit differentiation of a support-restricted condition then
        solves on the working set. None (the default): it keeps none."""
        del state, hparams
        return None

    def preconditioner(self, state: SolverState):
        """A function `v -> M v`, `M` symmetric positive definite and close to the inverse
        Hessian of the objective at the end of the run, when the solver's final `state`
        holds one (a factorization it computed anyway); implicit differentiation
        preconditions its Krylov solve with it. None (the default): it holds none."""
        del state
        return None

    def extra_stats(self, state: SolverState) -> dict[str, Array]:
        """Solver-specific entries of `Solution.stats` (a duality gap, epochs)."""
        del state
        return {}

    def terminate(
        self, fun: Objective, params: Params, state: SolverState, hparams: HParams, args: Args
    ) -> tuple[Array, Array]:
        """`(done, status)` for the current state; `status` is a `Status` code."""
        del fun, hparams, args
        finite = jnp.isfinite(state.value) & jnp.isfinite(state.grad_norm) & tree_isfinite(params)
        blown = (state.grad_norm > self.divergence * (1 + state.grad_norm0)) | (
            state.value > state.value0 + self.divergence * (1 + jnp.abs(state.value0))
        )
        out_of_steps = state.num_steps >= self.max_steps
        converged = self._converged(state)
        # Without a tolerance (static and of this run) the run ends when its steps are
        # done, which says nothing about stationarity: `steps_done`, not `converged`.
        fixed = self.tol is None and state.tol is None
        status = jnp.select(
            [~finite, blown, converged, out_of_steps],
            [
                Status.NONFINITE,
                Status.DIVERGED,
                Status.STEPS_DONE if fixed else Status.CONVERGED,
                Status.MAX_STEPS,
            ],
            # Not done yet (a run of fewer steps than the solver's limit, as the online
            # mode's): for a fixed-step run, the steps it was given are done.
            Status.STEPS_DONE if fixed else Status.CONVERGED,
        ).astype(jnp.int32)
        done = ~finite | blown | converged | out_of_steps
        return done, status


def batch_apply(solver: AbstractSolver, fn, *batched):
    """`fn` over the leading axis of `batched` (pytrees): `jax.lax.map` when `solver`
    runs its batches one after another (`sequential_batches`), else `jax.vmap`."""
    if solver.sequential_batches:
        return jax.lax.map(lambda args: fn(*args), batched)
    return jax.vmap(fn)(*batched)


def common_state(inner, value, grad, num_steps=0) -> SolverState:
    grad_norm = tree_norm(grad)
    return SolverState(
        inner=inner,
        num_steps=jnp.asarray(num_steps, jnp.int32),
        value=value,
        grad=grad,
        grad_norm=grad_norm,
        value0=value,
        grad_norm0=grad_norm,
    )


def advance(state: SolverState, inner, value, grad) -> SolverState:
    """The state after one step: new inner state, value and gradient; keeps the initial ones."""
    return state._replace(
        inner=inner,
        num_steps=state.num_steps + 1,
        value=value,
        grad=grad,
        grad_norm=tree_norm(grad),
    )


def make_solution(solver, fun, params, state, hparams, args) -> Solution:
    _, status = solver.terminate(fun, params, state, hparams, args)
    stats = {"num_steps": state.num_steps, "value": state.value, "grad_norm": state.grad_norm}
    stats.update(solver.extra_stats(state))
    return Solution(params=params, state=state, stats=stats, status=status)


def run(
    solver: AbstractSolver,
    fun: Objective,
    params: Params,
    hparams: HParams,
    args: Args = None,
    state: SolverState | None = None,
    max_steps: int | None = None,
    tol: Array | float | None = None,
) -> Solution:
    """Run `solver` from `params` until it terminates (a `lax.while_loop`).

    Forward-differentiable, not reverse-differentiable; use `hypergrad.solve` with a
    method for derivatives. `state` resumes from a previous state instead of calling
    `init`; `max_steps` stops the loop once the state has taken that many steps in all,
    below the solver's own limit (the status then reads as for an unfinished run). `tol`
    replaces the solver's tolerance for this run as data (a traced value: one compiled
    program for every tolerance).

    Called with concrete arrays (not under a transformation), the run is one compiled
    program, cached by the solver, `fun`, `max_steps` and the shapes: other values reuse
    it (`hypergrad._compile.runs_compiled`; small data compiled for compile time).
    """
    if runs_compiled((params, args, state), (hparams, tol)):
        compiled = _run_compiled.for_data(args)
        return compiled(solver, fun, params, hparams, args, state, max_steps, tol)
    return _run(solver, fun, params, hparams, args, state, max_steps, tol)


def _run(solver, fun, params, hparams, args, state, max_steps, tol) -> Solution:
    if state is None:
        state = solver.init(fun, params, hparams, args)
    if tol is not None:
        state = state._replace(tol=jnp.asarray(tol, jnp.result_type(state.grad_norm)))

    def cond(carry):
        done, _ = solver.terminate(fun, *carry, hparams, args)
        if max_steps is not None:
            done = done | (carry[1].num_steps >= max_steps)
        return ~done

    def body(carry):
        return solver.step(fun, *carry, hparams, args)

    params, state = jax.lax.while_loop(cond, body, (params, state))
    return make_solution(solver, fun, params, state, hparams, args)


_run_compiled = EagerProgram(_run, ("solver", "fun", "max_steps"))


def run_steps(
    solver: AbstractSolver,
    fun: Objective,
    params: Params,
    state: SolverState,
    hparams: HParams,
    args: Args,
    num_steps: int,
    checkpoints: int | None = None,
    stop_at_tol: bool = True,
) -> tuple[Params, SolverState]:
    """Up to `num_steps` steps as a `lax.scan` (reverse-differentiable); steps after the
    solver terminates leave the state unchanged. With `stop_at_tol=False` only a failure
    (divergence, non-finite values) stops it: exactly `num_steps` steps otherwise.

    `checkpoints=k` splits the scan into `k` segments and rematerializes each segment in
    the backward pass (`jax.checkpoint`), so reverse mode stores `k` segment boundaries
    plus one segment's states: memory about `k + num_steps / k` states instead of
    `num_steps`, smallest at `k = sqrt(num_steps)`, for one extra forward pass.
    """

    def one(carry, i):
        p, s = carry
        done, status = solver.terminate(fun, p, s, hparams, args)
        if not stop_at_tol:
            done = (status == Status.DIVERGED) | (status == Status.NONFINITE)
        done = done | (i >= num_steps)
        # The step is taken and then discarded where `done`, not skipped with `lax.cond`:
        # reverse mode saves a cond's residuals (the training data among them) once per
        # iteration, while a plain step's loop-invariant residuals are hoisted out of the
        # scan. After a divergence the discarded steps may still put NaN into the
        # derivative; the solution's status says so.
        new = solver.step(fun, p, s, hparams, args)
        carry = jax.tree.map(lambda a, b: jnp.where(done, a, b), (p, s), new)
        return carry, None

    if checkpoints is None or checkpoints <= 1 or checkpoints >= num_steps:
        (params, state), _ = jax.lax.scan(one, (params, state), jnp.arange(num_steps))
        return params, state

    segment = -(-num_steps // checkpoints)  # ceil: the last segment is padded, then masked
    index = jnp.arange(checkpoints * segment).reshape(checkpoints, segment)

    @jax.checkpoint
    def run_segment(carry, idx):
        carry, _ = jax.lax.scan(one, carry, idx)
        return carry, None

    (params, state), _ = jax.lax.scan(run_segment, (params, state), index)
    return params, state
