"""Hypergradient descent on continuous hyperparameters, for one configuration or a
population of configurations times seeds in one compiled program.

Interface: `descend(problem, hparams, ...) -> DescentResult`. `Descent` is the outer
solver (`init / step / terminate`, see `hypergrad.tune._outer`): each outer step
computes the hypergradient (`hypergrad.hypergradient`, any method) at the current
hyperparameters, maps it to unconstrained coordinates (log for positive scales by
default) and takes one step of an optax optimizer there. The warm start of the next
step (the inner solution; for implicit methods the adjoint and the solver state) is the
method's (`AbstractMethod.warm_start`, `keep_warm`).

Invariant: one program per population shape serves every outer step, every inner
tolerance of a schedule (`inner_tol`: data, indexed by the step) and every number of
steps up to the history's length; later calls with equal settings reuse it (no
retrace). Without a callback the whole loop is one compiled `lax.while_loop`; with one,
one compiled step at a time from Python. With `batch_hparams=True` the leading axis of
every `hparams` leaf indexes K configurations; with `batch_problem=True` the leading
axis of every data leaf of `problem` indexes S seeds (stack problems of equal shapes
with `stack_problems`); values then have shape `(K, S)`. By default each seed descends
on its own; with `pool_seeds=True` the seeds share one set of hyperparameters per
configuration and the outer objective is the mean over seeds, so a configuration is
judged by its seed-aggregated value rather than by a lucky seed. The population stops
when every member has met a stopping test (or at `steps`).

With `key`, the map from unconstrained coordinates may be stochastic (a Gumbel-softmax
relaxation of a discrete choice): step `t` calls `from_unconstrained(u, key=k_t)` with
the `t`-th split of `key`, the same for every member (common random numbers), and the
reported hyperparameters are `from_unconstrained(u)`, the map's deterministic form.

Inner solves that do not converge are counted by status (`DescentResult.inner_status`,
and per step in the history); `throw=True` raises after the run if there was any.
"""

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _exported
from .._bilevel import BilevelProblem
from .._contracts import check_keys
from .._threads import serial_lapack
from .._types import Array, HParams, Params
from ..methods import hypergradient, problem_method
from ..methods._base import AbstractMethod
from ..solvers import AbstractSolver, Status
from ..solvers._base import batch_apply
from ..solvers._batched import population_solver
from ._outer import (
    AbstractOuterSolver,
    Evaluation,
    count_statuses,
    failed_counts,
    inner_failure_message,
    iterate_outer,
    over_members,
    run_members,
    shard_members,
    status_counts,
    step_members,
    strong_types,
)

REASONS = ("running", "max_steps", "gradient", "stall")


class DescentSettings(NamedTuple):
    """The numbers of a descent, as data (one compiled program for all of them)."""

    steps: Array  # outer steps of this run, at most the history's length
    tols: Array | None  # the inner tolerance of each step, or None: the solver's own
    grad_tol: Array  # stop when the hypergradient norm is at most this
    min_improvement: Array  # stop when the best value improved by at most this (relative)
    patience: Array  # ... over this many steps (min_improvement > 0 only)
    # The optimizer's learning rate, written into its state at the start of a run: an
    # optimizer made by `optax.inject_hyperparams` only. None keeps the optimizer's own.
    learning_rate: Array | None = None


class DescentState(NamedTuple):
    """The outer state of one member (every leaf batched for a population).

    `u`, `params`, `adjoint`, `best_u` and `best_per_seed` name the fields of earlier
    versions.
    """

    theta: HParams  # hyperparameters in unconstrained coordinates
    warm: Any  # the warm start of the next evaluation: (params, adjoint, solver state)
    opt_state: Any
    best_theta: HParams
    best_value: Array  # the objective at best_theta (the seed mean with pool_seeds)
    best_parts: Array  # each seed's value at best_theta (equal to best_value unless pooled)
    key: Array | None  # the next step's noise for a stochastic from_unconstrained
    k: Array  # steps taken in this run
    settings: DescentSettings
    history: dict
    reason: Array  # an index into REASONS; 0 while running

    @property
    def u(self) -> HParams:
        return self.theta

    @property
    def best_u(self) -> HParams:
        return self.best_theta

    @property
    def best_per_seed(self) -> Array:
        return self.best_parts

    @property
    def params(self) -> Params:
        return self.warm[0]

    @property
    def adjoint(self) -> Params | None:
        return self.warm[1]


class DescentResult(NamedTuple):
    """What `descend` returns.

    Attributes:
      hparams: the best hyperparameters each member visited (natural coordinates).
      value: the outer objective there (the mean over seeds with `pool_seeds`).
      per_seed: each seed's value there, shape `(*batch, S)` with `pool_seeds`, else
        the shape of `value`.
      history: per outer step, arrays of shape `(steps, *batch, ...)`: `"value"` (each
        seed's value), `"grad_norm"` (hypergradient norm in unconstrained coordinates),
        `"hparams"` (the point evaluated, natural coordinates), `"tol"` (the inner
        tolerance, NaN for the solver's own), `"inner_steps"`, `"inner_failures"` and
        `"inner_status"` (solves by status, indexed like `Status.NAMES`).
      num_steps: outer steps taken.
      num_inner_solves: inner solves run, all members together.
      state: the final `DescentState` (resume with `descend(..., state=...)`).
      num_inner_steps: inner iterations in all.
      inner_failures: inner solves that did not converge.
      inner_status: `{status name: solves}` over the run (`Status.NAMES`).
      stop_reason: why the population stopped: "max_steps", "gradient" or "stall" (with
        `+` between them when members stopped for different reasons).
      solver: the inner solver the run used (`repr`): a population's default is
        `population_solver(problem.solver, ...)`, see `descend`.
    """

    hparams: HParams
    value: Array
    per_seed: Array
    history: dict[str, Array]
    num_steps: int
    num_inner_solves: int
    state: DescentState
    num_inner_steps: int = 0
    inner_failures: int = 0
    inner_status: dict | None = None
    stop_reason: str = "max_steps"
    solver: str = ""


def _log(h):
    return jax.tree.map(jnp.log, h)


def _exp(u):
    return jax.tree.map(jnp.exp, u)


def _tree_where(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def stack_problems(problems: list[BilevelProblem]) -> BilevelProblem:
    """Stack problems that differ only in their data (seeds, folds) along a new axis."""
    if not problems:
        raise ValueError("problems must be a non-empty list, got []")
    structures = {jax.tree.structure(p) for p in problems}
    if len(structures) != 1:
        raise ValueError("problems must share functions, solver and data structure to stack")
    return jax.tree.map(_stack, *problems)


def _stack(*xs):
    """`jnp.stack(xs)`, by NumPy for concrete strongly-typed arrays: an eager JAX stack
    compiles a program per shape, about 10 ms each in a fresh process."""
    if any(isinstance(x, jax.core.Tracer) or getattr(x, "weak_type", False) for x in xs):
        return jnp.stack(xs)
    return jax.device_put(np.stack([np.asarray(x) for x in xs]))


def decades(start: float, end: float, steps: int) -> Callable[[int], float]:
    """An inner-tolerance schedule for `descend(inner_tol=...)`: from `start` down to
    `end` one power of ten at a time, evenly over `steps` outer steps, then `end`.

    The tolerance is data: any schedule `step -> tolerance` runs in one compiled program;
    this one changes it a decade at a time so that each level gets several steps.
    """
    if not (0 < end <= start):
        raise ValueError(f"need 0 < end <= start, got start={start!r}, end={end!r}")
    n = max(1, round(math.log10(start / end)))
    every = max(1, steps // (n + 1))
    return lambda t: max(end, start * 10.0 ** (-(t // every)))


def _with_learning_rate(opt_state, learning_rate):
    """`opt_state` with `learning_rate` in its injected hyperparameters (if not None)."""
    if learning_rate is None:
        return opt_state
    hyper = getattr(opt_state, "hyperparams", None)
    if not isinstance(hyper, dict) or "learning_rate" not in hyper:
        raise TypeError(
            "a learning rate given as data needs an optimizer made by "
            f"optax.inject_hyperparams(...)(learning_rate=...), got state {type(opt_state)}"
        )
    rate = jnp.asarray(learning_rate, jnp.result_type(hyper["learning_rate"]))
    return opt_state._replace(hyperparams={**hyper, "learning_rate": rate})


class Descent(AbstractOuterSolver):
    """An optax step in unconstrained coordinates, keeping the best point visited.

    Static configuration only (`optimizer`, the deterministic coordinate map `to_hparams`
    for the history, `max_steps`: the history's length); the numbers are the state's
    `settings`. Stops (per member) when the hypergradient norm is at most `grad_tol`,
    when the best value improved by at most `min_improvement` (relative) over `patience`
    steps, or after `settings.steps` steps. With a tolerance schedule, the best point is
    taken among the steps at the current tolerance only (a looser solve's value may be
    optimistic).
    """

    def __init__(self, optimizer, to_hparams: Callable, max_steps: int):
        self.optimizer, self.to_hparams, self.max_steps = optimizer, to_hparams, max_steps

    def init(self, theta, warm, settings: DescentSettings, parts, key=None) -> DescentState:
        inf = jnp.full_like(jnp.asarray(parts, jnp.result_type(float)), jnp.inf)
        h = jax.eval_shape(self.to_hparams, theta)  # shapes only: nothing computed
        n = self.max_steps
        zeros = lambda shape, dtype: jnp.zeros((n, *shape), dtype)  # noqa: E731
        history = {
            "value": jnp.full((n, *inf.shape), jnp.nan, inf.dtype),
            "grad_norm": jnp.full(n, jnp.nan, inf.dtype),
            "best": jnp.full(n, jnp.inf, inf.dtype),
            "hparams": jax.tree.map(lambda x: zeros(x.shape, x.dtype), h),
            "tol": jnp.full(n, jnp.nan, inf.dtype),
            "inner_steps": zeros((), jnp.int32),
            "inner_status": zeros((len(Status.NAMES),), jnp.int32),
        }
        return DescentState(
            theta=theta,
            warm=warm,
            opt_state=_with_learning_rate(self.optimizer.init(theta), settings.learning_rate),
            best_theta=theta,
            best_value=jnp.max(inf),
            best_parts=inf,
            key=key,
            k=jnp.zeros((), jnp.int32),
            settings=settings,
            history=history,
            reason=jnp.zeros((), jnp.int32),
        )

    def restart(self, state: DescentState, settings: DescentSettings) -> DescentState:
        """Continue from `state` (its point, warm start, optimizer state and best) for a
        new run of `settings`: an empty history, step 0."""
        fresh = self.init(state.theta, state.warm, settings, state.best_parts, state.key)
        return fresh._replace(
            opt_state=_with_learning_rate(state.opt_state, settings.learning_rate),
            best_theta=state.best_theta,
            best_value=state.best_value,
            best_parts=state.best_parts,
        )

    def tolerance(self, state):
        tols = state.settings.tols
        return None if tols is None else tols[state.k]

    def step(self, state: DescentState, ev: Evaluation) -> DescentState:
        s, k = state.settings, state.k
        best_value, best_parts = state.best_value, state.best_parts
        if s.tols is not None:  # the best is kept among the steps at the current tolerance
            reset = (k == 0) | (s.tols[k] != s.tols[jnp.maximum(k - 1, 0)])
            best_value = jnp.where(reset, jnp.inf, best_value)
            best_parts = jnp.where(reset, jnp.inf, best_parts)
        parts = ev.value if ev.parts is None else ev.parts
        better = ev.value < best_value
        updates, opt_state = self.optimizer.update(ev.grad, state.opt_state, state.theta)
        best_value = jnp.where(better, ev.value, best_value)
        best_parts = jnp.where(better, parts, best_parts)
        grad_norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(ev.grad)))
        tol = self.tolerance(state)
        if ev.inner_status is None:
            raise ValueError("Descent needs evaluations that count inner solves by status")
        h, hist = state.history, dict(state.history)
        hist.update(
            value=h["value"].at[k].set(parts),
            grad_norm=h["grad_norm"].at[k].set(grad_norm),
            best=h["best"].at[k].set(best_value),
            hparams=jax.tree.map(
                lambda a, x: a.at[k].set(x), h["hparams"], self.to_hparams(state.theta)
            ),
            tol=h["tol"] if tol is None else h["tol"].at[k].set(tol),
            inner_steps=h["inner_steps"].at[k].set(ev.inner_steps),
            inner_status=h["inner_status"].at[k].set(ev.inner_status),
        )
        old = hist["best"][jnp.maximum(k - s.patience, 0)]
        stalled = (
            (s.min_improvement > 0)
            & (k + 1 > s.patience)
            & (old - best_value <= s.min_improvement * jnp.abs(old))
        )
        reason = jnp.select(
            [grad_norm <= s.grad_tol, stalled, k + 1 >= s.steps],
            [REASONS.index("gradient"), REASONS.index("stall"), REASONS.index("max_steps")],
            0,
        ).astype(jnp.int32)
        return state._replace(
            theta=optax.apply_updates(state.theta, updates),
            warm=ev.warm,
            opt_state=opt_state,
            best_theta=_tree_where(better, state.theta, state.best_theta),
            best_value=best_value,
            best_parts=best_parts,
            k=k + 1,
            history=hist,
            reason=reason,
        )

    def terminate(self, state):
        return state.reason != 0, state.reason


# -- the hypergradient evaluation ----------------------------------------------------------


class _Static(NamedTuple):
    """What a compiled descent depends on besides shapes (hashable: the jit cache key)."""

    optimizer: Any
    method: AbstractMethod
    solver: AbstractSolver | None
    to_unconstrained: Callable
    from_unconstrained: Callable
    batch_problem: bool
    batch_hparams: bool
    pool_seeds: bool
    stochastic: bool
    max_steps: int

    def outer(self) -> Descent:
        return Descent(self.optimizer, self.from_unconstrained, self.max_steps)

    def inner_solver(self, problem) -> AbstractSolver:
        """The solver the inner problems run: `solver`, else the problem's."""
        return problem.solver if self.solver is None else self.solver

    def levels(self, init=False):
        """The member axes, outermost first: configurations, then separate seeds."""
        out = []
        if self.batch_hparams:  # (problem, hparams) at init, (problem, state) after
            out.append((None, 0, None, None) if init else (None, 0))
        if self.batch_problem and not self.pool_seeds:
            out.append((0, None, None, None) if init else (0, 0))
        return out


def _evaluate(static: _Static, pb, theta, warm, tol, noise) -> Evaluation:
    """The objective and its gradient in unconstrained coordinates at `theta` (the seed
    mean with `pool_seeds`), warm-started from `warm`."""
    to_hparams = static.from_unconstrained
    if noise is not None:
        to_hparams = functools.partial(static.from_unconstrained, key=noise)
    h, to_theta = jax.vjp(to_hparams, theta)
    method = static.method

    def one(pb, warm):
        params, adjoint, state = warm
        hg = hypergradient(
            pb,
            h,
            solver=static.solver,
            method=method,
            init_params=params,
            init_adjoint=adjoint,
            init_state=state,
            tol=tol,
        )
        steps = hg.solution.stats["num_steps"]
        return hg.value, hg.grad, method.keep_warm(hg), steps, hg.solution.status

    if static.pool_seeds:
        values, grad, warm, steps, status = batch_apply(static.inner_solver(pb), one, pb, warm)
        value, grad = jnp.mean(values), jax.tree.map(lambda g: jnp.mean(g, axis=0), grad)
    else:
        value, grad, warm, steps, status = one(pb, warm)
        values = value
    (g_theta,) = to_theta(grad)
    counts = count_statuses(status)
    failures = failed_counts(counts)
    return Evaluation(
        value, g_theta, warm, jnp.sum(steps).astype(jnp.int32), failures, values, counts
    )


def _member_step(static: _Static, pb, state: DescentState) -> DescentState:
    key, noise = state.key, None
    if static.stochastic:
        key, noise = jax.random.split(state.key)
    outer = static.outer()
    ev = _evaluate(static, pb, state.theta, state.warm, outer.tolerance(state), noise)
    return outer.step(state._replace(key=key), ev)


def _init_member(static: _Static, pb, h, key, settings) -> DescentState:
    theta = static.to_unconstrained(h)
    solver = static.inner_solver(pb)

    def warm_start(pb):
        return static.method.warm_start(solver, pb.inner, pb.init_params, h, pb.train)

    if static.pool_seeds:
        warm = jax.vmap(warm_start)(pb)
        parts = jnp.zeros(jax.tree.leaves(pb.val)[0].shape[:1])
    else:
        warm, parts = warm_start(pb), jnp.zeros(())
    return static.outer().init(theta, warm, settings, parts, key)


def _init(static, problem, hparams, key, settings):
    init = functools.partial(_init_member, static)
    state = over_members(init, static.levels(init=True))(problem, hparams, key, settings)
    return strong_types(state)


def _restart(static, problem, state, settings):
    del problem
    restart = lambda s: static.outer().restart(s, settings)  # noqa: E731
    levels = [(0,)] * len(static.levels())
    return strong_types(over_members(restart, levels)(state))


def _run(static, problem, state):
    step = functools.partial(_member_step, static)
    # Members run one after another (lax.map) where the solver's batches do.
    levels, sequential = static.levels(), static.inner_solver(problem).sequential_batches
    return run_members(static.outer(), step, problem, state, levels, sequential)


def _step(static, problem, state):
    step = functools.partial(_member_step, static)
    # Members run one after another (lax.map) where the solver's batches do.
    levels, sequential = static.levels(), static.inner_solver(problem).sequential_batches
    state, done = step_members(static.outer(), step, problem, state, levels, sequential)
    k = jnp.max(state.k) - 1
    h = state.history
    stats = {"value": jnp.take(h["value"], k, axis=len(static.levels()))}
    stats["grad_norm"] = jnp.take(h["grad_norm"], k, axis=-1)
    return state, done, stats


_PROGRAMS = {"init": _init, "restart": _restart, "run": _run, "step": _step}
_COMPILED = {name: jax.jit(fn, static_argnums=0) for name, fn in _PROGRAMS.items()}


def _compiled(name, static, *args):
    """The compiled program `name` (cached by jit on `static` when it hashes; exported
    within `hypergrad._exported.enabled()`, whose callers build `static` and the problem
    from the library's own parts)."""
    try:
        hash(static)
    except TypeError:  # an unhashable setting: compile without the cache
        return jax.jit(functools.partial(_PROGRAMS[name], static))(*args)
    if _exported.active():
        fn = jax.jit(functools.partial(_PROGRAMS[name], static))
        return _exported.call(f"descent-{name}", fn, *args)
    return _COMPILED[name](static, *args)


# -- the entry point -----------------------------------------------------------------------


@functools.cache
def _default_optimizer() -> optax.GradientTransformation:
    """`optax.adam(0.1)`, one object: calls that take the default share compiled steps."""
    return optax.adam(0.1)


def _check(problem, hparams, steps, optimizer, method, solver):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got steps={steps!r}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {optimizer!r}")
    if not isinstance(method, AbstractMethod):
        raise TypeError(f"method must be a hypergrad method, got method={method!r}")
    if solver is not None and not isinstance(solver, AbstractSolver):
        raise TypeError(f"solver must be an AbstractSolver or None, got solver={solver!r}")
    if isinstance(hparams, dict) and isinstance(problem.hparams, dict):
        check_keys(hparams, problem.hparams)  # misspelled, missing, extra keys named
    if jax.tree.structure(hparams) != jax.tree.structure(problem.hparams):
        raise ValueError(
            "hparams must have the structure of problem.hparams "
            f"{jax.tree.structure(problem.hparams)}, got {jax.tree.structure(hparams)}"
        )


def _check_options(problem, hparams, min_improvement, patience, flags, key):
    batch_hparams, batch_problem, pool_seeds = flags
    if not (isinstance(min_improvement, float | int) and min_improvement >= 0):
        raise ValueError(f"min_improvement must be >= 0, got min_improvement={min_improvement!r}")
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"patience must be a positive int, got patience={patience!r}")
    for flag, tree, name in (
        (batch_hparams, hparams, "hparams"),
        (batch_problem, problem, "problem"),
    ):
        sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(tree)}
        if flag and (None in sizes or len(sizes) != 1 or 0 in sizes):
            raise ValueError(
                f"batch_{name}=True needs every leaf of {name} to share a non-empty leading "
                f"axis (the population), got leading sizes {sorted(sizes, key=str)}"
            )
    if pool_seeds and not batch_problem:
        raise ValueError("pool_seeds=True needs batch_problem=True (a problem per seed)")
    if key is not None and not (
        isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    ):
        raise TypeError(f"key must be a PRNG key from jax.random.key or None, got key={key!r}")


def _tolerances(inner_tol, solver, max_steps, dtype):
    if inner_tol is None:
        return None
    if getattr(solver, "tol", None) is None:
        raise ValueError(f"inner_tol needs an inner solver with a tolerance, got {solver!r}")
    tols = [inner_tol(t) for t in range(max_steps)]
    for tol in tols:
        if not (isinstance(tol, float | int) and not isinstance(tol, bool) and tol > 0):
            raise ValueError(f"inner_tol(step) must be a positive number, got {tol!r}")
    return np.asarray(tols, dtype)


def descend(
    problem: BilevelProblem,
    hparams: HParams | None = None,
    *,
    steps: int = 50,
    optimizer: optax.GradientTransformation | None = None,
    method: AbstractMethod | None = None,
    solver: AbstractSolver | None = None,
    to_unconstrained: Callable[[HParams], HParams] = _log,
    from_unconstrained: Callable[[HParams], HParams] = _exp,
    tol: float = 0.0,
    min_improvement: float = 0.0,
    inner_tol: Callable[[int], float] | None = None,
    patience: int = 5,
    batch_hparams: bool = False,
    batch_problem: bool = False,
    pool_seeds: bool = False,
    state: DescentState | None = None,
    key: Array | None = None,
    callback: Callable[[int, dict], None] | None = None,
    throw: bool = False,
) -> DescentResult:
    """Tune continuous hyperparameters by hypergradient descent.

    Args:
      problem: the bilevel problem (a batch of S seeds if `batch_problem`).
      hparams: the starting hyperparameters (default `problem.hparams`; K starting
        points stacked on a leading axis if `batch_hparams`).
      steps: the largest number of outer steps.
      optimizer: the outer optax optimizer, acting in unconstrained coordinates (default
        `optax.adam(0.1)`: steps of about 10% in a log-scale hyperparameter).
      method: how hypergradients are computed (default: the problem's, else `Implicit()`).
      solver: the inner solver (default `problem.solver`; for a population, with
        `batch_hparams` or `batch_problem`, `hypergrad.solvers.population_solver` of it:
        a solver whose steps do not branch on the member, recorded in the result).
      to_unconstrained, from_unconstrained: the coordinate maps (default log / exp, for
        positive hyperparameters).
      tol: a member is done when its hypergradient norm (unconstrained) is at most `tol`.
      min_improvement, patience: a member is done when its best value improved by at
        most `min_improvement` (relative) over the last `patience` steps; 0 never.
      inner_tol: a schedule `step -> tolerance` of the inner solver (inexact solves early,
        tight ones late; see `decades`), data of one compiled program; `None` keeps the
        solver's own tolerance. The best visited point is taken among the steps at the
        last tolerance reached, since a looser solve's value may be optimistic.
      batch_hparams, batch_problem, pool_seeds: see the module docstring. With
        `batch_hparams` on several devices, the configurations are split over
        `jax.devices()` (`shard_members`: a mesh over the population axis) when their
        number is a multiple of the devices'; the result is the one-device result.
      state: resume from a previous result's `state` instead of `hparams`.
      key: a PRNG key for a stochastic `from_unconstrained` (see the module docstring);
        `None` (default) calls `from_unconstrained(u)`.
      callback: called after each outer step as `callback(step, {"value", "grad_norm"})`
        with host arrays (a progress bar, a recorder); the loop then runs one compiled
        step at a time. Raising stops the run.
      throw: raise a `RuntimeError` naming the status if any inner solve did not converge.

    Returns:
      A `DescentResult`.

    Example:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> from hypergrad import problems
      >>> from hypergrad.tune import descend
      >>> X, y = problems.synthetic_regression(120, 5, seed=0)
      >>> pb = problems.ridge(X[:60], y[:60], X[60:], y[60:], alpha=1.0)
      >>> res = descend(pb, steps=100)
      >>> bool(res.value < descend(pb, steps=1).value), res.inner_failures
      (True, 0)
    """
    if not isinstance(problem, BilevelProblem):
        raise TypeError(f"problem must be a BilevelProblem, got problem={problem!r}")
    optimizer = _default_optimizer() if optimizer is None else optimizer
    method = problem_method(problem, method)
    hparams = problem.hparams if hparams is None else hparams
    _check(problem, hparams, steps, optimizer, method, solver)
    flags = (batch_hparams, batch_problem, pool_seeds)
    _check_options(problem, hparams, min_improvement, patience, flags, key)
    if solver is None and (batch_hparams or batch_problem):
        params = problem.init_params
        if batch_problem:
            params = jax.tree.map(lambda x: x[0], params)
        solver = population_solver(problem.solver, params)
    static = _Static(
        optimizer=optimizer,
        method=method,
        solver=solver,
        to_unconstrained=to_unconstrained,
        from_unconstrained=from_unconstrained,
        batch_problem=batch_problem,
        batch_hparams=batch_hparams,
        pool_seeds=pool_seeds,
        stochastic=key is not None,
        max_steps=steps,
    )
    options = dict(tol=tol, min_improvement=min_improvement, patience=patience)
    with serial_lapack():  # small factorizations in every step (hypergrad._threads)
        res = run_descent(static, problem, hparams, state, key, steps, inner_tol, options, callback)
    if throw:
        message = inner_failure_message(res.inner_status, "descend")
        if message:
            raise RuntimeError(message)
    return res


def run_descent(static, problem, hparams, state, key, steps, inner_tol, options, callback=None):
    """`descend` after its checks: `steps` (at most `static.max_steps`) outer steps from
    `hparams`, or from `state`, with the schedule `inner_tol` and `options` (`tol`,
    `min_improvement`, `patience`, and optionally `learning_rate`: data written into an
    `optax.inject_hyperparams` optimizer's state)."""
    dtype = jnp.result_type(float)
    rate = options.get("learning_rate")
    base_solver = static.inner_solver(problem)
    # NumPy numbers, put on the device at once: an eager conversion each would compile a
    # program of its own in a fresh process.
    settings = jax.device_put(
        DescentSettings(
            steps=np.asarray(steps, np.int32),
            tols=_tolerances(inner_tol, base_solver, static.max_steps, dtype),
            grad_tol=np.asarray(options["tol"], dtype),
            min_improvement=np.asarray(options["min_improvement"], dtype),
            patience=np.asarray(options["patience"], np.int32),
            learning_rate=None if rate is None else np.asarray(rate, dtype),
        )
    )
    if state is None:
        if static.batch_hparams:  # the configurations split over the devices, if several
            hparams = shard_members(hparams)
        s = _compiled("init", static, problem, hparams, key, settings)
    else:
        s = _compiled("restart", static, problem, state, settings)
    if callback is None:
        s = _compiled("run", static, problem, s)
    else:
        count = [0]

        def one(s):
            s, done, stats = _compiled("step", static, problem, s)
            callback(count[0], jax.device_get(stats))
            count[0] += 1
            return s, done

        s, _ = iterate_outer(one, s)
    return _result(static, s, base_solver)


def _result(static: _Static, s: DescentState, solver: AbstractSolver) -> DescentResult:
    axes = len(static.levels())
    num_steps = int(np.max(np.asarray(s.k)))
    h = jax.device_get(s.history)
    history = jax.tree.map(lambda x: np.moveaxis(np.asarray(x), axes, 0)[:num_steps], h)
    history.pop("best")
    counts = history["inner_status"]
    history["inner_failures"] = failed_counts(counts)
    inner_status = status_counts(counts)
    reasons = sorted({REASONS[int(r)] for r in np.ravel(np.asarray(s.reason))} - {"running"})
    to_hparams = jax.jit(static.from_unconstrained)
    if _exported.active():  # see `_compiled`
        hparams = _exported.call("descent-hparams", to_hparams, s.best_theta)
    else:
        hparams = to_hparams(s.best_theta)
    return DescentResult(
        hparams=hparams,
        value=s.best_value,
        per_seed=s.best_parts,
        history=history,
        num_steps=num_steps,
        num_inner_solves=sum(inner_status.values()),
        state=s,
        num_inner_steps=int(np.sum(history["inner_steps"])),
        inner_failures=int(np.sum(history["inner_failures"])),
        inner_status=inner_status,
        stop_reason="+".join(reasons) or "max_steps",
        solver=repr(solver),
    )
