"""Online bilevel optimization: inner and outer steps alternate within one training run.

Interface: `online_bilevel(problem, hparams, outer_optimizer=..., num_steps=...) ->
OnlineResult`. Each outer iteration takes `inner_steps` steps of the inner solver with
the current hyperparameters (no derivatives), then the hypergradient of the outer
objective after `lookahead` more differentiated inner steps from the current parameters
(a greedy, short-horizon hypergradient: the training run is never restarted), then one
step of `outer_optimizer` on the hyperparameters in unconstrained coordinates: the outer
solver is `descend`'s optax step (`Descent`), the evaluation is the lookahead's value and
gradient, and `run_outer` runs the whole run as one compiled loop. The history has
`descend`'s format, with the inner status after each iteration's steps (diverged or not
finite counts as a failure; a fixed number of steps, `steps_done`, does not).

Invariant: the inner parameters and the solver state carry over from one outer
iteration to the next, so `num_steps * (inner_steps + lookahead)` inner steps in total
are taken, as in one ordinary training run; the lookahead steps are the ones the
training continues from.

Short horizons are biased toward hyperparameters that help soon (Wu et al., 2018); use
`hypergrad.tune.descend` (full inner solves) where the budget allows.

References:
  Luketina, Berglund, Greff and Raiko, "Scalable Gradient-Based Tuning of Continuous
  Regularization Hyperparameters", 2016, https://arxiv.org/abs/1511.06727
  Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", 2018,
  https://arxiv.org/abs/1703.04782
  Wu, Ren, Liao and Grosse, "Understanding Short-Horizon Bias in Stochastic
  Meta-Optimization", 2018, https://arxiv.org/abs/1803.02021
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._bilevel import BilevelProblem
from .._types import HParams, Params
from ..solvers import AbstractSolver, Status
from ..solvers._base import run_steps
from ..solvers._solution import tree_norm
from ._descent import Descent, DescentSettings
from ._outer import Evaluation, count_statuses, failed_counts, run_outer, status_counts


class OnlineResult(NamedTuple):
    """What `online_bilevel` returns.

    Attributes:
      hparams: the final hyperparameters (natural coordinates).
      params: the inner parameters at the end of the run.
      history: per outer iteration, `"value"` (the outer objective after the
        lookahead, before the outer step) and `"hparams"` (natural coordinates,
        before the outer step), with a leading axis of length `num_steps`; and, as
        `descend`'s, `"grad_norm"`, `"inner_steps"`, `"inner_failures"` and
        `"inner_status"` (the inner state's status after the iteration's steps).
      num_inner_steps: inner steps taken in all.
      inner_failures: iterations after which the inner run had diverged or was not
        finite.
      inner_status: `{status name: iterations}` (`Status.NAMES`).
    """

    hparams: HParams
    params: Params
    history: dict
    num_inner_steps: int = 0
    inner_failures: int = 0
    inner_status: dict | None = None


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {name}={value!r}")


def online_bilevel(
    problem: BilevelProblem,
    hparams: HParams,
    *,
    outer_optimizer: optax.GradientTransformation,
    num_steps: int,
    inner_steps: int = 1,
    lookahead: int = 1,
    solver: AbstractSolver | None = None,
    to_unconstrained: Callable[[HParams], HParams] = lambda h: jax.tree.map(jnp.log, h),
    from_unconstrained: Callable[[HParams], HParams] = lambda u: jax.tree.map(jnp.exp, u),
) -> OnlineResult:
    """Tune `hparams` during one run of the inner solver (see the module docstring).

        for each of num_steps iterations:
          params <- inner_steps solver steps at h                 (no derivatives)
          v(u)    = outer(lookahead solver steps from params at h = from_unconstrained(u))
          u      <- outer_optimizer step along dv/du;  params <- those lookahead steps

    Args:
      problem: the bilevel problem; `problem.solver` (or `solver`) must be
        reverse-differentiable (an `OptaxSolver` with a fixed-step optimizer) with
        `tol=None`, so that every step is taken. For Adam pass `eps_root > 0`
        (`optax.adam(lr, eps_root=1e-12)`): a gradient entry that is exactly zero makes
        the derivative of Adam's square root infinite and the hypergradient NaN.
      hparams: the initial hyperparameters (natural coordinates).
      outer_optimizer: an optax optimizer on the unconstrained hyperparameters.
      num_steps: outer iterations (>= 1).
      inner_steps: undifferentiated inner steps per outer iteration (>= 0).
      lookahead: differentiated inner steps per outer iteration (>= 1).
      solver: overrides `problem.solver`.
      to_unconstrained, from_unconstrained: coordinate maps (default log / exp).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from hypergrad import problems
      >>> from hypergrad.solvers import OptaxSolver
      >>> X, y = problems.synthetic_regression(80, 5, seed=0)
      >>> pb = problems.ridge(X[:40], y[:40], X[40:], y[40:], alpha=1.0)
      >>> out = online_bilevel(pb, pb.hparams, outer_optimizer=optax.adam(0.05),
      ...                      num_steps=50, solver=OptaxSolver(optax.sgd(0.1), 10**6, None))
      >>> out.history["value"].shape
      (50,)
    """
    if not isinstance(problem, BilevelProblem):
        raise TypeError(f"problem must be a BilevelProblem, got problem={problem!r}")
    solver = problem.solver if solver is None else solver
    if not isinstance(solver, AbstractSolver):
        raise TypeError(f"solver must be an AbstractSolver, got solver={solver!r}")
    if not solver.reverse_differentiable:
        raise ValueError(
            f"solver={solver!r} cannot be differentiated step by step (a line search); "
            "online_bilevel needs a fixed-step solver such as OptaxSolver(optax.sgd(...))"
        )
    if solver.tol is not None:
        raise ValueError(
            f"online_bilevel runs a fixed number of inner steps; use a solver with "
            f"tol=None, got tol={solver.tol!r}"
        )
    if not isinstance(outer_optimizer, optax.GradientTransformation):
        raise TypeError(
            f"outer_optimizer must be an optax.GradientTransformation, got {outer_optimizer!r}"
        )
    _check_count("num_steps", num_steps, 1)
    _check_count("inner_steps", inner_steps, 0)
    _check_count("lookahead", lookahead, 1)
    if (inner_steps + lookahead) * num_steps > solver.max_steps:
        raise ValueError(
            f"the run takes (inner_steps + lookahead) * num_steps = "
            f"{(inner_steps + lookahead) * num_steps} inner steps, more than the solver's "
            f"max_steps={solver.max_steps}"
        )

    u0 = to_unconstrained(hparams)
    static = (solver, outer_optimizer, from_unconstrained, num_steps, inner_steps, lookahead)
    state = _online(problem, u0, static)
    h = jax.device_get(state.history)
    history = {k: np.asarray(h[k]) for k in ("value", "grad_norm", "inner_steps", "inner_status")}
    history["hparams"] = h["hparams"]
    history["inner_failures"] = failed_counts(history["inner_status"])
    counts = status_counts(history["inner_status"])
    return OnlineResult(
        hparams=jax.jit(from_unconstrained)(state.theta),
        params=state.warm[0],
        history=history,
        num_inner_steps=int(np.sum(history["inner_steps"])),
        inner_failures=int(np.sum(history["inner_failures"])),
        inner_status=counts,
    )


def _online_evaluation(problem, solver, from_unconstrained, inner_steps, lookahead):
    """`evaluate(theta, warm, tol)` of the online mode: `inner_steps` plain steps, then
    the value after `lookahead` differentiated steps and its gradient in `theta`; the
    training continues from the lookahead's end (the warm start)."""
    fun = problem.inner

    def steps(params, state, h, n):
        return run_steps(solver, fun, params, state, h, problem.train, n, stop_at_tol=False)

    def ahead(theta, params, state):
        h = from_unconstrained(theta)
        # The gradient inside the solver state was computed at the previous h; refresh it
        # so that the first differentiated step sees its dependence on h.
        value, grad = jax.value_and_grad(fun)(params, h, problem.train)
        state = state._replace(value=value, grad=grad, grad_norm=tree_norm(grad))
        params, state = steps(params, state, h, lookahead)
        return problem.outer(params, h, problem.val), (params, state)

    def evaluate(theta, warm, tol):
        del tol  # a fixed number of inner steps
        params, _, state = warm
        h = jax.lax.stop_gradient(from_unconstrained(theta))
        if inner_steps:
            params, state = steps(params, state, h, inner_steps)
        (value, (params, state)), g = jax.value_and_grad(ahead, has_aux=True)(theta, params, state)
        _, status = solver.terminate(fun, params, state, h, problem.train)
        counts = count_statuses(status)
        return Evaluation(
            value,
            g,
            (params, None, state),
            jnp.asarray(inner_steps + lookahead, jnp.int32),
            (~Status.ok(status)).astype(jnp.int32),
            None,
            counts,
        )

    return evaluate


@functools.partial(jax.jit, static_argnums=2)
def _online(problem, u0, static):
    """The whole run: `Descent`'s optax step on the online evaluation, one while loop."""
    solver, optimizer, from_unconstrained, num_steps, inner_steps, lookahead = static
    evaluate = _online_evaluation(problem, solver, from_unconstrained, inner_steps, lookahead)
    outer = Descent(optimizer, from_unconstrained, num_steps)
    dtype = jnp.result_type(float)
    settings = DescentSettings(
        steps=jnp.asarray(num_steps, jnp.int32),
        tols=None,
        grad_tol=jnp.asarray(-jnp.inf, dtype),  # every iteration runs
        min_improvement=jnp.zeros((), dtype),
        patience=jnp.ones((), jnp.int32),
    )
    h0 = from_unconstrained(u0)
    state = solver.init(problem.inner, problem.init_params, h0, problem.train)
    warm = (problem.init_params, None, state)
    return run_outer(outer, evaluate, outer.init(u0, warm, settings, jnp.zeros(())))
