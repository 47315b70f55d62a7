"""Hypergradient descent on continuous hyperparameters, for one configuration or a
population of configurations times seeds in one compiled program.

Interface: `descend(problem, hparams, ...) -> DescentResult`. Each outer step computes
the hypergradient (`hypergrad.hypergradient`, any method) at the current
hyperparameters, maps it to unconstrained coordinates (log for positive scales by
default) and takes one step of an optax optimizer there. The inner solution and, for
implicit methods, the adjoint vector carry over from step to step as warm starts.

Invariant: the outer step is compiled once per population shape; later steps and other
members reuse it (no retrace). With `batch_hparams=True` the leading axis of every
`hparams` leaf indexes K configurations; with `batch_problem=True` the leading axis of
every data leaf of `problem` indexes S seeds (stack problems of equal shapes with
`stack_problems`); values then have shape `(K, S)`. By default each seed descends on its
own; with `pool_seeds=True` the seeds share one set of hyperparameters per configuration
and the outer objective is the mean over seeds, so a configuration is judged by its
seed-aggregated value rather than by a lucky seed.

With `key`, the map from unconstrained coordinates may be stochastic (a Gumbel-softmax
relaxation of a discrete choice): step `t` calls `from_unconstrained(u, k_t)` with the
`t`-th split of `key`, the same for every member (common random numbers), and the
reported hyperparameters are `from_unconstrained(u)`, the map's deterministic form.
"""

import copy
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._bilevel import BilevelProblem
from .._types import Array, HParams, Params
from ..methods import Implicit, hypergradient
from ..methods._base import AbstractMethod
from ..solvers import AbstractSolver


class DescentState(NamedTuple):
    """The outer loop's state for one member (leaves batched for a population)."""

    u: HParams  # hyperparameters in unconstrained coordinates
    opt_state: Any
    params: Params  # warm start of the inner solve
    adjoint: Params | None  # warm start of the implicit linear solve
    best_u: HParams
    best_value: Array  # the objective at best_u (the seed mean with pool_seeds)
    best_per_seed: Array  # each seed's value at best_u (equal to best_value unless pooled)
    key: Array | None = None  # the next step's noise for a stochastic from_unconstrained


class DescentResult(NamedTuple):
    """What `descend` returns.

    Attributes:
      hparams: the best hyperparameters each member visited (natural coordinates).
      value: the outer objective there (the mean over seeds with `pool_seeds`).
      per_seed: each seed's value there, shape `(*batch, S)` with `pool_seeds`, else
        the shape of `value`.
      history: per outer step, `"value"` and `"grad_norm"` (hypergradient norm in
        unconstrained coordinates), arrays of shape `(steps, *batch)`.
      num_steps: outer steps taken.
      num_inner_solves: inner solves run, all members together.
      state: the final `DescentState` (resume with `descend(..., state=...)`).
    """

    hparams: HParams
    value: Array
    per_seed: Array
    history: dict[str, Array]
    num_steps: int
    num_inner_solves: int
    state: DescentState


def _log(h):
    return jax.tree.map(jnp.log, h)


def _exp(u):
    return jax.tree.map(jnp.exp, u)


def stack_problems(problems: list[BilevelProblem]) -> BilevelProblem:
    """Stack problems that differ only in their data (seeds, folds) along a new axis."""
    if not problems:
        raise ValueError("problems must be a non-empty list, got []")
    structures = {jax.tree.structure(p) for p in problems}
    if len(structures) != 1:
        raise ValueError("problems must share functions, solver and data structure to stack")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *problems)


def _with_tol(solver: AbstractSolver, tol: float) -> AbstractSolver:
    """A copy of `solver` stopping at `tol` (equal copies share their compiled step)."""
    if not (isinstance(tol, float | int) and tol > 0):
        raise ValueError(f"inner_tol(step) must be a positive number, got {tol!r}")
    out = copy.copy(solver)
    out.tol = float(tol)
    return out


def decades(start: float, end: float, steps: int) -> Callable[[int], float]:
    """An inner-tolerance schedule for `descend(inner_tol=...)`: from `start` down to
    `end` one power of ten at a time, evenly over `steps` outer steps, then `end`.

    Each distinct tolerance compiles the outer step once, so the schedule takes whole
    decades: `decades(1e-4, 1e-8, 50)` compiles five programs, not fifty.
    """
    if not (0 < end <= start):
        raise ValueError(f"need 0 < end <= start, got start={start!r}, end={end!r}")
    n = max(1, round(math.log10(start / end)))
    every = max(1, steps // (n + 1))
    return lambda t: max(end, start * 10.0 ** (-(t // every)))


def _check(problem, hparams, steps, optimizer, method, solver):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got steps={steps!r}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {optimizer!r}")
    if not isinstance(method, AbstractMethod):
        raise TypeError(f"method must be a hypergrad method, got method={method!r}")
    if solver is not None and not isinstance(solver, AbstractSolver):
        raise TypeError(f"solver must be an AbstractSolver or None, got solver={solver!r}")
    if jax.tree.structure(hparams) != jax.tree.structure(problem.hparams):
        raise ValueError(
            "hparams must have the structure of problem.hparams "
            f"{jax.tree.structure(problem.hparams)}, got {jax.tree.structure(hparams)}"
        )


@functools.lru_cache(maxsize=16)
def _compiled(
    optimizer,
    method,
    solver,
    to_unconstrained,
    from_unconstrained,
    batch_problem,
    batch_hparams,
    pool_seeds,
    stochastic=False,
):
    """The jitted init and step functions; cached, so that calls with the same settings
    (the rounds and rungs of `tune`) reuse the compiled programs of equal shapes."""
    implicit = isinstance(method, Implicit)
    # With pool_seeds the inner state (params, adjoint) carries the seed axis and the
    # hyperparameters do not; otherwise each seed is a separate member (vmap below).
    seeds_inside = pool_seeds
    solve_one = jax.vmap if seeds_inside else (lambda f: f)

    def init_one(pb, h, key):
        u = to_unconstrained(h)
        adjoint = jax.tree.map(jnp.zeros_like, pb.init_params) if implicit else None
        inf = jnp.asarray(jnp.inf, jnp.result_type(float))
        per_seed = jnp.full(jax.tree.leaves(pb.val)[0].shape[:1], inf) if seeds_inside else inf
        return DescentState(
            u=u,
            opt_state=optimizer.init(u),
            params=pb.init_params,
            adjoint=adjoint,
            best_u=u,
            best_value=inf,
            best_per_seed=per_seed,
            key=key,
        )

    def step_one(pb, s):
        key, to_hparams = s.key, from_unconstrained
        if stochastic:
            key, noise = jax.random.split(s.key)
            to_hparams = functools.partial(from_unconstrained, key=noise)
        h = to_hparams(s.u)

        def hypergrad_at(pb, params, adjoint):
            return hypergradient(
                pb,
                h,
                solver=solver,
                method=method,
                init_params=params,
                init_adjoint=adjoint if implicit else None,
            )

        res = solve_one(hypergrad_at)(pb, s.params, s.adjoint)
        grad, value = res.grad, res.value
        if seeds_inside:
            grad = jax.tree.map(lambda g: jnp.mean(g, axis=0), grad)
            value = jnp.mean(res.value)
        _, to_h = jax.vjp(to_hparams, s.u)
        (g_u,) = to_h(grad)
        updates, opt_state = optimizer.update(g_u, s.opt_state, s.u)
        better = value < s.best_value
        new = DescentState(
            u=optax.apply_updates(s.u, updates),
            opt_state=opt_state,
            params=res.solution.params,
            adjoint=res.adjoint if implicit else None,
            best_u=jax.tree.map(lambda a, b: jnp.where(better, a, b), s.u, s.best_u),
            best_value=jnp.where(better, value, s.best_value),
            best_per_seed=jnp.where(better, res.value, s.best_per_seed),
            key=key,
        )
        grad_norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(g_u)))
        return new, {"value": res.value, "grad_norm": grad_norm}

    init_fn, step_fn = init_one, step_one
    if batch_problem and not seeds_inside:  # the seed axis is innermost: values (K, S)
        init_fn = jax.vmap(init_fn, in_axes=(0, None, None))
        step_fn = jax.vmap(step_fn, in_axes=(0, 0))
    if batch_hparams:
        init_fn = jax.vmap(init_fn, in_axes=(None, 0, None))
        step_fn = jax.vmap(step_fn, in_axes=(None, 0))
    return jax.jit(init_fn), jax.jit(step_fn)


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
) -> DescentResult:
    """Tune continuous hyperparameters by hypergradient descent.

    Args:
      problem: the bilevel problem (a batch of S seeds if `batch_problem`).
      hparams: the starting hyperparameters (default `problem.hparams`; K starting
        points stacked on a leading axis if `batch_hparams`).
      steps: the largest number of outer steps.
      optimizer: the outer optax optimizer, acting in unconstrained coordinates (default
        `optax.adam(0.1)`: steps of about 10% in a log-scale hyperparameter).
      method: how hypergradients are computed (default `Implicit()`).
      solver: the inner solver (default `problem.solver`).
      to_unconstrained, from_unconstrained: the coordinate maps (default log / exp, for
        positive hyperparameters).
      tol: stop when every member's hypergradient norm (unconstrained) is at most `tol`.
      inner_tol: a schedule `step -> tolerance` of the inner solver (inexact solves early,
        tight ones late; see `decades`); `None` keeps the solver's own tolerance. The best
        visited point is taken among the steps at the last tolerance reached, since a
        looser solve's value may be optimistic.
      min_improvement, patience: stop when no member's best value improved by more than
        `min_improvement` (relative) over the last `patience` steps; 0 never stops.
      batch_hparams, batch_problem, pool_seeds: see the module docstring.
      state: resume from a previous result's `state` instead of `hparams`.
      key: a PRNG key for a stochastic `from_unconstrained`, called as
        `from_unconstrained(u, key=k)` with a fresh split `k` at each outer step (see
        the module docstring); `None` (default) calls `from_unconstrained(u)`.
      callback: called after each outer step as `callback(step, {"value", "grad_norm"})`
        with host arrays (a progress bar, a recorder); raising stops the run, and what
        finished before stays in the callback's hands.

    Returns:
      A `DescentResult`.

    Example:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> from hypergrad import problems
      >>> from hypergrad.tune import descend
      >>> X, y = problems.synthetic_regression(120, 5, seed=0)
      >>> pb = problems.ridge(X[:60], y[:60], X[60:], y[60:], alpha=1.0)
      >>> res = descend(pb, steps=100)
      >>> bool(res.value < descend(pb, steps=1).value)
      True
    """
    if not isinstance(problem, BilevelProblem):
        raise TypeError(f"problem must be a BilevelProblem, got problem={problem!r}")
    optimizer = optax.adam(0.1) if optimizer is None else optimizer
    method = Implicit() if method is None else method
    hparams = problem.hparams if hparams is None else hparams
    _check(problem, hparams, steps, optimizer, method, solver)
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

    def compiled(solver):
        settings = (
            optimizer,
            method,
            solver,
            to_unconstrained,
            from_unconstrained,
            batch_problem,
            batch_hparams,
            pool_seeds,
            key is not None,
        )
        try:
            return _compiled(*settings)
        except TypeError:  # an unhashable setting: build without the cache
            return _compiled.__wrapped__(*settings)

    init_fn, step_fn = compiled(solver)
    base_solver = problem.solver if solver is None else solver
    if inner_tol is not None and getattr(base_solver, "tol", None) is None:
        raise ValueError(f"inner_tol needs an inner solver with a tolerance, got {base_solver!r}")

    s = init_fn(problem, hparams, key) if state is None else state
    history, bests = [], []
    current_tol = None
    for t in range(steps):
        if inner_tol is not None and inner_tol(t) != current_tol:
            current_tol = inner_tol(t)
            _, step_fn = compiled(_with_tol(base_solver, current_tol))
            # Values from looser solves may be optimistic: the best is taken among the
            # steps at the current (tightest so far) tolerance only.
            s = s._replace(
                best_value=jnp.full_like(s.best_value, jnp.inf),
                best_per_seed=jnp.full_like(s.best_per_seed, jnp.inf),
            )
        s, stats = step_fn(problem, s)
        stats = jax.device_get(stats)
        history.append(stats)
        if callback is not None:
            callback(t, stats)
        if float(np.max(stats["grad_norm"])) <= tol:
            break
        best = np.asarray(jax.device_get(s.best_value))
        bests.append(best)
        if min_improvement > 0 and len(bests) > patience:
            old = bests[-1 - patience]
            if np.all(old - best <= min_improvement * np.abs(old)):
                break
    # The value at the final iterate is never evaluated by a step; the best visited one is.
    hist = {k: np.stack([h[k] for h in history]) for k in history[0]}
    members = math.prod(np.shape(hist["value"])[1:])  # configurations x seeds
    return DescentResult(
        hparams=jax.jit(from_unconstrained)(s.best_u),
        value=s.best_value,
        per_seed=s.best_per_seed,
        history=hist,
        num_steps=len(history),
        num_inner_solves=len(history) * members,
        state=s,
    )
