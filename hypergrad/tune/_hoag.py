"""HOAG: a fast outer loop for regularization strengths by approximate hypergradients.

Interface: `hoag(problem, hparams) -> HoagResult(hparams, value, params, history, ...)`
for a `BilevelProblem` (or K fold problems stacked by `hypergrad.problems.kfold`, whose
mean validation loss is then the criterion) whose hyperparameters are all positive
scales (penalties). `HOAG` is the outer solver (`init / step / terminate`, see
`hypergrad.tune._outer`); `hoag` runs it, as one compiled loop or, with a callback, one
compiled step at a time.

Each outer step k, at `theta = log(h)`:

1. solve the inner problem to tolerance `eps_k`, warm-started from the last accepted
   inner solution (and the solver's working set, when it keeps one);
2. compute the hypergradient by the differentiation method (`Implicit` solves the adjoint
   system to relative tolerance `eps_k`, warm-started from the last adjoint), in log
   coordinates `g = (d criterion / d h) * h`;
3. accept the point if the criterion did not increase by more than `eps_k` relative (the
   inexactness HOAG allows), growing the step by a Barzilai-Borwein estimate; otherwise
   return to the last accepted point and halve the step (the safeguard);
4. step `theta <- clip(theta_accepted - eta g_accepted)`, each coordinate moved by at most
   `max_move` (a trust region). With one hyperparameter, once the minimum is bracketed
   (the derivative changed sign between two evaluated points, or a step was rejected),
   the next point is instead the minimizer of the cubic through the bracket's ends
   (values and derivatives), kept inside it: a secant method on the derivative that
   cannot overshoot. The lasso's cross-validation criterion has kinks where the support
   changes, around which the gradient steps circled for several steps.

The tolerance decreases geometrically, `eps_k = max(tol * decrease^k, min_tol)`: early
steps are cheap and imprecise, late ones precise, which HOAG shows still converges when
the tolerances are summable. The loop stops on convergence (the projected hypergradient
below `grad_tol` times its first value once `eps_k <= grad_tol`; an accepted step that
moves every `log h` by at most `step_tol` and the criterion by at most `value_tol`
relative, a bracket narrower than `step_tol` once `eps_k <= grad_tol`, or a step at
`eps_k = min_tol` whose inner solves all met it at their warm starts, a move too small
for that tolerance to resolve; or `patience` steps in a row without improving the best
criterion by more than `value_tol` relative, which is how it ends at a kink of a
lasso-type criterion, where the support changes and the hypergradient does not vanish),
at `max_iter` steps, or when the criterion is not finite at the start.

Invariant: every number of the run (tolerances, bounds, step sizes) is data: one compiled
program serves every call on the same shapes, method and `max_iter`.

Reference: Pedregosa, "Hyperparameter optimization with approximate gradient", 2016,
https://arxiv.org/abs/1602.02355
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _exported
from .._bilevel import BilevelProblem
from .._contracts import check_keys
from .._threads import serial_lapack
from .._types import Array
from ..methods import hypergradient, problem_method
from ..methods._base import AbstractMethod
from ..solvers import Status
from ..solvers._base import batch_apply
from ._outer import AbstractOuterSolver, Evaluation, iterate_outer, run_outer

REASONS = ("running", "max_iter", "gradient", "step", "stall", "nonfinite")


class HoagSettings(NamedTuple):
    """HOAG's numbers, as data. Bounds are on `log h`, per hyperparameter."""

    lower: dict
    upper: dict
    tol: Array
    decrease: Array
    min_tol: Array
    max_move: Array
    grad_tol: Array
    step_tol: Array
    value_tol: Array
    patience: Array


class HoagState(NamedTuple):
    """HOAG's outer state (all arrays)."""

    theta: dict  # the next point to evaluate
    warm: Any  # the warm start of the next evaluation (from the accepted point)
    k: Array  # evaluations done
    settings: HoagSettings
    anchor_value: Array  # the last accepted point (NaN before the first)
    anchor_theta: dict
    anchor_grad: dict
    step_moved: Array  # largest |change of log h| of the last accepted step
    value_moved: Array  # relative change of the criterion over it
    eta: Array  # the step size (NaN until the first accepted point sets it)
    retry: Array  # the last point was rejected
    grad0: Array  # the first projected hypergradient's largest entry
    best_value: Array
    best_theta: dict
    best_params: Any
    stall: Array  # steps since the best value last improved by more than value_tol
    # One hyperparameter: the evaluated point on the far side of the minimum from the
    # anchor (value NaN until the gradient changes sign or a step is rejected).
    other_value: Array
    other_theta: dict
    other_grad: dict
    opt_state: Any  # the optax state when an optimizer takes the steps
    reason: Array
    inner_steps: Array
    inner_failures: Array
    history: dict


class HoagResult(NamedTuple):
    """What `hoag` returns.

    Attributes:
      hparams: the best hyperparameters found (natural scale).
      value: the criterion there (at the inexact inner solution of that step).
      params: the inner solution there (per fold for stacked problems).
      history: one dict per outer step: `hparams`, `value`, `accepted`, `tol`,
        `inner_steps` (that step's inner iterations, summed over folds),
        `inner_failures` (inner solves that did not converge), and `time_s` (since the
        call; None when the loop ran compiled as a whole, without a callback).
      num_solves: inner solves in all (outer steps times folds).
      num_inner_steps: inner iterations in all.
      stop_reason: why the loop stopped: "gradient", "step" or "stall" (converged),
        "max_iter", "nonfinite" (the criterion was not finite at the start).
      inner_failures: inner solves in all that stopped before their tolerance.
    """

    hparams: dict
    value: float
    params: Any
    history: list
    num_solves: int
    num_inner_steps: int
    stop_reason: str = "max_iter"
    inner_failures: int = 0


def _tree_max_abs(tree):
    return jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(tree)]))


def _flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def _barzilai_borwein(s_vec, y_vec, eta):
    """The step `s.s / s.y` from a move `s_vec` and its change of gradient `y_vec`,
    within a factor 4 of `eta`; `2 eta` where the curvature `s.y` is not positive."""
    sy = s_vec @ y_vec
    bb = jnp.clip((s_vec @ s_vec) / jnp.where(sy > 0, sy, 1.0), eta / 4, 4 * eta)
    return jnp.where(sy > 0, bb, 2 * eta)


def _bracket_point(a, fa, ga, b, fb, gb):
    """The next point inside the bracket `[a, b]` of one hyperparameter (derivatives of
    opposite signs, or `b` rejected): the minimizer of the cubic matching the values and
    derivatives at both ends (Nocedal and Wright, eq. 3.59), the secant root of the
    derivative where the cubic has none, kept at least a tenth of the width from either
    end so that every step shrinks the bracket."""
    d1 = ga + gb - 3 * (fa - fb) / (a - b)
    disc = d1**2 - ga * gb
    d2 = jnp.sign(b - a) * jnp.sqrt(jnp.maximum(disc, 0.0))
    cubic = b - (b - a) * (gb + d2 - d1) / (gb - ga + 2 * d2)
    secant = a - ga * (b - a) / (gb - ga)
    t = jnp.where((disc >= 0) & jnp.isfinite(cubic), cubic, secant)
    t = jnp.where(jnp.isfinite(t), t, 0.5 * (a + b))
    lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
    margin = 0.1 * (hi - lo)
    return jnp.clip(t, lo + margin, hi - margin)


def _reason(**conditions):
    """The index in `REASONS` of the first true condition (keyword order is precedence),
    0 ("running") if none."""
    names = list(conditions)
    return jnp.select(
        [conditions[name] for name in names], [REASONS.index(name) for name in names], 0
    ).astype(jnp.int32)


class HOAG(AbstractOuterSolver):
    """HOAG's safeguarded step, or an optax optimizer's steps (always accepted), with
    the decreasing tolerance schedule and the convergence tests of the module docstring.

    Static configuration only (`max_steps`, `optimizer`); the numbers are in the state's
    `settings`, so that one compiled loop serves them all.
    """

    def __init__(self, max_steps: int, optimizer=None):
        self.max_steps, self.optimizer = max_steps, optimizer

    def init(self, theta, warm, settings: HoagSettings, params) -> HoagState:
        nan = jnp.asarray(jnp.nan, settings.tol.dtype)
        zeros = lambda t: jax.tree.map(jnp.zeros_like, t)  # noqa: E731
        history = {
            "theta": jax.tree.map(lambda t: jnp.zeros((self.max_steps, *t.shape), t.dtype), theta),
            "value": jnp.full(self.max_steps, nan),
            "accepted": jnp.zeros(self.max_steps, bool),
            "tol": jnp.full(self.max_steps, nan),
            "inner_steps": jnp.zeros(self.max_steps, jnp.int32),
            "inner_failures": jnp.zeros(self.max_steps, jnp.int32),
        }
        opt_state = None if self.optimizer is None else self.optimizer.init(theta)
        zero = jnp.zeros((), jnp.int32)
        return HoagState(
            theta=theta,
            warm=warm,
            k=zero,
            settings=settings,
            anchor_value=nan,
            anchor_theta=theta,
            anchor_grad=zeros(theta),
            step_moved=nan,
            value_moved=nan,
            eta=nan,
            retry=jnp.zeros((), bool),
            grad0=nan,
            best_value=jnp.asarray(jnp.inf, settings.tol.dtype),
            best_theta=theta,
            best_params=params,
            stall=zero,
            other_value=nan,
            other_theta=theta,
            other_grad=zeros(theta),
            opt_state=opt_state,
            reason=zero,
            inner_steps=zero,
            inner_failures=zero,
            history=history,
        )

    def tolerance(self, state):
        s = state.settings
        return jnp.maximum(s.tol * s.decrease ** state.k.astype(s.tol.dtype), s.min_tol)

    def _projected(self, theta, grad, settings):
        """The gradient without the components that push against a bound."""
        return jax.tree.map(
            lambda t, g, lo, hi: jnp.where(((t <= lo) & (g > 0)) | ((t >= hi) & (g < 0)), 0.0, g),
            theta,
            grad,
            settings.lower,
            settings.upper,
        )

    def _accepted(self, state, value, finite, eps):
        """Whether the point just evaluated becomes the anchor: any finite point for an
        optax optimizer or the first point; else a value at most `eps` (relative) above
        the anchor's."""
        if self.optimizer is not None:
            return finite
        # After a rejection, a step within 1% of the anchor is taken whatever its value:
        # the anchor's value was measured at a looser tolerance and may be optimistic, so
        # a strict comparison could reject every later step.
        near = _tree_max_abs(jax.tree.map(jnp.subtract, state.theta, state.anchor_theta)) <= 1e-2
        slack = eps * jnp.maximum(jnp.abs(state.anchor_value), 1e-12)
        first = ~jnp.isfinite(state.anchor_value)
        return finite & (first | (state.retry & near) | (value <= state.anchor_value + slack))

    def step(self, state: HoagState, ev: Evaluation) -> HoagState:
        s = state.settings
        eps = self.tolerance(state)
        theta, value, grad = state.theta, ev.value, ev.grad
        finite = jnp.isfinite(value) & jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grad)])
        )
        has_anchor = jnp.isfinite(state.anchor_value)
        accepted = self._accepted(state, value, finite, eps)
        better = finite & (value < state.best_value)
        improved = finite & (
            value
            < state.best_value - s.value_tol * jnp.abs(jnp.where(better, value, state.best_value))
        )
        stall = jnp.where(improved, 0, state.stall + 1)
        pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(better, a, b), new, old)  # noqa: E731
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(accepted, a, b), new, old)  # noqa: E731

        # The step size: Barzilai-Borwein between consecutive accepted points, kept within
        # a factor 4 of the last one; halved after a rejection.
        s_vec = _flat(theta) - _flat(state.anchor_theta)
        bb = _barzilai_borwein(s_vec, _flat(grad) - _flat(state.anchor_grad), state.eta)
        eta = jnp.where(accepted, jnp.where(has_anchor, bb, state.eta), 0.5 * state.eta)
        step_moved = jnp.where(accepted & has_anchor, jnp.max(jnp.abs(s_vec)), state.step_moved)
        value_moved = jnp.where(
            accepted & has_anchor,
            jnp.abs(value - state.anchor_value) / jnp.maximum(jnp.abs(value), 1e-300),
            state.value_moved,
        )
        anchor_value = jnp.where(accepted, value, state.anchor_value)
        anchor_theta = keep(theta, state.anchor_theta)
        anchor_grad = keep(grad, state.anchor_grad)
        projected = self._projected(anchor_theta, anchor_grad, s)
        g_inf = _tree_max_abs(projected)
        grad0 = jnp.where(jnp.isnan(state.grad0) & accepted, g_inf, state.grad0)
        # The first step moves the steepest coordinate by max_move.
        eta = jnp.where(jnp.isnan(eta), s.max_move / jnp.maximum(g_inf, 1e-300), eta)

        opt_state = state.opt_state
        if self.optimizer is None:
            move = jax.tree.map(lambda g: jnp.clip(-eta * g, -s.max_move, s.max_move), anchor_grad)
        else:
            updates, new_opt = self.optimizer.update(grad, opt_state, theta)
            opt_state = keep(new_opt, opt_state)
            move = jax.tree.map(lambda u: jnp.clip(u, -s.max_move, s.max_move), updates)
        nxt = jax.tree.map(
            lambda t, m, lo, hi: jnp.clip(t + m, lo, hi), anchor_theta, move, s.lower, s.upper
        )
        other = (state.other_value, state.other_theta, state.other_grad)
        if self.optimizer is None and _flat(theta).size == 1:
            anchor = (has_anchor, anchor_value, anchor_theta, anchor_grad)
            nxt, other, bracket_width = self._bracket(
                state, accepted, finite, value, theta, grad, anchor, nxt
            )
        else:
            bracket_width = jnp.asarray(jnp.inf, value.dtype)

        k = state.k
        entry = {
            "theta": theta,
            "value": value,
            "accepted": accepted,
            "tol": eps,
            "inner_steps": ev.inner_steps,
            "inner_failures": ev.inner_failures,
        }
        history = jax.tree.map(lambda h, e: h.at[k].set(e), state.history, entry)
        # Why to stop (checked by terminate): in order of precedence.
        grad_small = (g_inf <= s.grad_tol * grad0) & (eps <= s.grad_tol)
        # A bracket is as good as the signs of the gradients that made it: it ends the run
        # once they are as precise as the gradient test asks (eps <= grad_tol).
        narrow = (bracket_width <= s.step_tol) & (eps <= s.grad_tol)
        # A step whose inner solves all met the schedule's last tolerance at their warm
        # starts (no inner step on any fold) moved the hyperparameters by less than that
        # tolerance resolves: the criterion is the anchor's to within it, and the steps
        # after it would be as invisible.
        unresolved = has_anchor & (ev.inner_steps == 0) & (eps <= s.min_tol)
        still = (step_moved <= s.step_tol) & (value_moved <= s.value_tol)
        step_small = still | narrow | unresolved
        stuck = ~has_anchor & ~accepted  # not finite at the start: nothing to step from
        reason = _reason(
            nonfinite=stuck,
            gradient=(g_inf == 0) | grad_small,
            step=step_small & accepted,
            stall=stall >= s.patience,
            max_iter=k + 1 >= self.max_steps,
        )
        return state._replace(
            theta=nxt,
            warm=keep(ev.warm, state.warm),
            k=k + 1,
            anchor_value=anchor_value,
            anchor_theta=anchor_theta,
            anchor_grad=anchor_grad,
            step_moved=step_moved,
            value_moved=value_moved,
            eta=eta,
            retry=finite & ~accepted,
            grad0=grad0,
            best_value=jnp.where(better, value, state.best_value),
            best_theta=pick(theta, state.best_theta),
            best_params=pick(ev.warm[0], state.best_params),
            stall=stall,
            opt_state=opt_state,
            other_value=other[0],
            other_theta=other[1],
            other_grad=other[2],
            reason=reason,
            inner_steps=state.inner_steps + ev.inner_steps,
            inner_failures=state.inner_failures + ev.inner_failures,
            history=history,
        )

    def _bracket(self, state, accepted, finite, value, theta, grad, anchor, nxt):
        """One hyperparameter: keep a bracket of the minimum and step inside it.

        The bracket is the anchor and the `other` point: an evaluated point whose
        derivative has the opposite sign, or a rejected one (the criterion rose from the
        anchor towards it, so a minimum lies between). Once there is one, the next point
        is `_bracket_point`'s instead of the gradient step: the steps of a secant method
        on the derivative that cannot overshoot, which on a lasso-type criterion (whose
        derivative jumps where the support changes) would otherwise circle the minimum.
        `anchor`: whether there was one before this point, and the new one (value, point,
        gradient). Returns the next point, the new `other` and the bracket's width (inf
        if none)."""
        has_anchor, anchor_value, anchor_theta, anchor_grad = anchor
        flips = finite & has_anchor & (_flat(grad)[0] * _flat(state.anchor_grad)[0] < 0)
        # Accepted: the new anchor; the old one becomes the far end when the sign flipped.
        # Rejected: the point itself is the far end.
        take_point = finite & has_anchor & ~accepted
        take_anchor = accepted & flips
        other_value = jnp.where(
            take_point, value, jnp.where(take_anchor, state.anchor_value, state.other_value)
        )
        pick = lambda p, q, r: jax.tree.map(  # noqa: E731
            lambda x, y, z: jnp.where(take_point, x, jnp.where(take_anchor, y, z)), p, q, r
        )
        other_theta = pick(theta, state.anchor_theta, state.other_theta)
        other_grad = pick(grad, state.anchor_grad, state.other_grad)
        a, ga = _flat(anchor_theta)[0], _flat(anchor_grad)[0]
        b, gb = _flat(other_theta)[0], _flat(other_grad)[0]
        bracketed = jnp.isfinite(other_value) & jnp.isfinite(anchor_value) & (a != b)
        inside = _bracket_point(a, anchor_value, ga, b, other_value, gb)
        nxt = jax.tree.map(lambda x: jnp.where(bracketed, inside.reshape(x.shape), x), nxt)
        width = jnp.where(bracketed, jnp.abs(b - a), jnp.inf)
        return nxt, (other_value, other_theta, other_grad), width

    def terminate(self, state):
        return state.reason != 0, state.reason


def _evaluate(problem, theta, warm, tol, method, stacked):
    """The criterion and its log-space hypergradient at `exp(theta)` (mean over folds for
    stacked problems), warm-started from `warm`."""

    def one(pr, warm):
        h = jax.tree.map(jnp.exp, theta)
        params, adjoint, state = warm
        hg = hypergradient(
            pr,
            h,
            method=method,
            init_params=params,
            init_adjoint=adjoint,
            init_state=state,
            tol=tol,
        )
        grad = jax.tree.map(jnp.multiply, hg.grad, h)
        status = hg.solution.status
        return hg.value, grad, method.keep_warm(hg), hg.solution.stats["num_steps"], status

    if not stacked:
        value, grad, warm, steps, status = one(problem, warm)
    else:
        value, grad, warm, steps, status = batch_apply(problem.solver, one, problem, warm)
        value, grad = jnp.mean(value), jax.tree.map(lambda t: jnp.mean(t, axis=0), grad)
    failures = jnp.sum(~Status.ok(status)).astype(jnp.int32)
    return Evaluation(value, grad, warm, jnp.sum(steps).astype(jnp.int32), failures)


def _warm_start(problem, theta, method, stacked):
    def one(pr):
        h = jax.tree.map(jnp.exp, theta)
        return method.warm_start(pr.solver, pr.inner, pr.init_params, h, pr.train)

    return batch_apply(problem.solver, one, problem) if stacked else one(problem)


@functools.partial(jax.jit, static_argnames=("method", "max_steps", "optimizer", "stacked"))
def _start(problem, theta, settings, *, method, max_steps, optimizer, stacked):
    warm = _warm_start(problem, theta, method, stacked)
    return HOAG(max_steps, optimizer).init(theta, warm, settings, warm[0])


@functools.partial(jax.jit, static_argnames=("method", "max_steps", "optimizer", "stacked"))
def _run(problem, state, *, method, max_steps, optimizer, stacked):
    def evaluate(theta, warm, tol):
        return _evaluate(problem, theta, warm, tol, method, stacked)

    return run_outer(HOAG(max_steps, optimizer), evaluate, state)


class HoagOutcome(NamedTuple):
    """What `_result` reads of the final `HoagState` (the output of the compiled loop, a
    structure `jax.export` can carry)."""

    k: Array
    best_value: Array
    best_theta: dict
    best_params: Any
    reason: Array
    inner_steps: Array
    inner_failures: Array
    history: dict


_exported.register(HoagOutcome, "hypergrad.tune.HoagOutcome")


def _outcome(state: HoagState) -> HoagOutcome:
    return HoagOutcome(*(getattr(state, name) for name in HoagOutcome._fields))


@functools.partial(jax.jit, static_argnames=("method", "max_steps", "optimizer", "stacked"))
def _fit(problem, theta, settings, *, method, max_steps, optimizer, stacked):
    """The whole run as one program: the start and the loop."""
    static = dict(method=method, max_steps=max_steps, optimizer=optimizer, stacked=stacked)
    state = _start(problem, theta, settings, **static)
    return _outcome(_run(problem, state, **static))


@functools.partial(jax.jit, static_argnames=("method", "max_steps", "optimizer", "stacked"))
def _step(problem, state, *, method, max_steps, optimizer, stacked):
    outer = HOAG(max_steps, optimizer)
    ev = _evaluate(problem, state.theta, state.warm, outer.tolerance(state), method, stacked)
    state = outer.step(state, ev)
    return state, outer.terminate(state)[0]


def _check_bounds(name, bound, theta, default):
    """`log(bound)` per hparam; a dict names some hparams, the others get `default`."""
    if isinstance(bound, dict) and set(bound) - set(theta):
        raise ValueError(
            f"{name} names no hyperparameter of the problem: {sorted(set(bound) - set(theta))}"
            f" (hparams: {sorted(theta)})"
        )
    out = {}
    for k, t in theta.items():
        b = bound.get(k, default) if isinstance(bound, dict) else bound
        b = np.broadcast_to(np.asarray(b, dtype=np.float64), np.shape(t))
        if np.any(np.isnan(b)) or np.any(b <= 0):
            raise ValueError(
                f"{name} must be positive (penalties are scales), got {name}={bound!r}"
            )
        out[k] = np.log(b)
    return out


def _leading(problem):
    return jax.tree.leaves(problem.train)[0].ndim


def _check_positive_numbers(**values):
    for name, value in values.items():
        if not (isinstance(value, (int, float, np.floating)) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {name}={value!r}")


def _check_arguments(hparams, lower, upper, max_iter, patience, **numbers):
    """`hoag`'s arguments checked before any work: the starting point `h0` (NumPy) and
    the bounds on `log h` by name; `numbers` must be positive (`decrease` in (0, 1])."""
    decrease = numbers["decrease"]
    if not isinstance(hparams, dict):
        raise TypeError(f"hparams must be a dict of positive penalties, got hparams={hparams!r}")
    h0 = {k: np.asarray(v, dtype=np.float64) for k, v in hparams.items()}
    for k, v in h0.items():
        if not (np.all(np.isfinite(v)) and np.all(v > 0)):
            raise ValueError(f"hparams[{k!r}] must be positive and finite, got {v!r}")
    for name, value in (("max_iter", max_iter), ("patience", patience)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {name}={value!r}")
    _check_positive_numbers(**{k: v for k, v in numbers.items() if k != "decrease"})
    if not 0 < decrease <= 1:
        raise ValueError(f"decrease must be in (0, 1], got decrease={decrease!r}")
    lo = _check_bounds("lower", lower, h0, 1e-12)
    hi = _check_bounds("upper", upper, h0, np.inf)  # log(inf) = inf: no upper bound
    if any(np.any(lo[k] >= hi[k]) for k in lo):
        raise ValueError(f"lower must be below upper, got lower={lower!r}, upper={upper!r}")

    return h0, lo, hi


def hoag(
    problem: BilevelProblem,
    hparams: dict | None = None,
    *,
    method: AbstractMethod | None = None,
    lower: float | dict = 1e-12,
    upper: float | dict = np.inf,
    max_iter: int = 30,
    tol: float = 1e-2,
    decrease: float = 0.6,
    min_tol: float = 1e-8,
    max_move: float = 1.0,
    grad_tol: float = 1e-3,
    step_tol: float = 1e-3,
    value_tol: float = 1e-6,
    patience: int = 5,
    optimizer=None,
    callback: Callable[[dict], Any] | None = None,
) -> HoagResult:
    """Tune positive hyperparameters of `problem` by HOAG (see the module docstring).

    Args:
      problem: a `BilevelProblem` with all hparams positive, or K stacked fold problems
        (`hypergrad.problems.kfold`), whose mean validation loss is minimized.
      hparams: the starting point (default `problem.hparams`).
      method: how hypergradients are computed (default: the problem's, else
        `Implicit()`: warm-started inner solves and adjoints; `Unrolled` and the others
        work too).
      lower, upper: bounds on each hparam (a number, or a dict by name, where a missing
        name keeps the default); `0 < lower < upper`, `upper` may be `inf`.
      max_iter: the largest number of outer steps (inner solves per fold).
      tol, decrease, min_tol: the inner and adjoint tolerance schedule
        `eps_k = max(tol * decrease^k, min_tol)` (in the inner solver's own measure, which
        for `CoordinateDescent` is the relative duality gap; `decrease=1` keeps it fixed).
      max_move: the largest change of any `log h` in one step (a trust region).
      grad_tol, step_tol, value_tol, patience: the convergence tests of the module
        docstring.
      optimizer: an optax `GradientTransformation` to take the steps instead of HOAG's
        safeguarded rule (the plain outer loop the benchmark compares with); steps are
        always accepted then.
      callback: called with each step's history entry (then the loop runs one compiled
        step at a time from Python, and the history carries `time_s`).

    Returns:
      A `HoagResult`.

    Example:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> from hypergrad import problems
      >>> from hypergrad.tune import hoag
      >>> X, y = problems.synthetic_regression(60, 10, seed=0)
      >>> pr = problems.lasso(X[:40], y[:40], X[40:], y[40:])
      >>> res = hoag(pr, max_iter=15)
      >>> res.value <= res.history[0]["value"], res.stop_reason in ("gradient", "step", "stall")
      (True, True)
    """
    if not isinstance(problem, BilevelProblem):
        raise TypeError(f"problem must be a BilevelProblem, got problem={problem!r}")
    method = problem_method(problem, method)
    if not isinstance(method, AbstractMethod):
        raise TypeError(f"method must be a hypergrad method, got method={method!r}")
    stacked = _leading(problem) == 3  # Rows.X is (folds, n, p) when stacked
    if hparams is None:
        hparams = problem.hparams
        if stacked:  # the folds share their starting point: take the first's
            hparams = jax.tree.map(lambda x: x[0], hparams)
    elif isinstance(hparams, dict):
        check_keys(hparams, problem.hparams)  # misspelled, missing, extra keys named
    numbers = dict(
        tol=tol,
        decrease=decrease,
        min_tol=min_tol,
        max_move=max_move,
        grad_tol=grad_tol,
        step_tol=step_tol,
        value_tol=value_tol,
    )
    h0, lo, hi = _check_arguments(hparams, lower, upper, max_iter, patience, **numbers)
    dtype = jax.tree.leaves(problem.train)[0].dtype
    arr = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    theta = {k: arr(np.clip(np.log(v), lo[k], hi[k])) for k, v in h0.items()}
    settings = HoagSettings(
        lower=jax.tree.map(arr, lo),
        upper=jax.tree.map(arr, hi),
        patience=jnp.asarray(patience, jnp.int32),
        **{name: arr(value) for name, value in numbers.items()},
    )
    static = dict(method=method, max_steps=max_iter, optimizer=optimizer, stacked=stacked)
    if callback is None:
        # One program, kept exported with the compilation cache (hypergrad._exported): a
        # fresh process neither traces nor lowers it again.
        fit = functools.partial(_fit, **static)
        with serial_lapack():  # the working sets' small factorizations (hypergrad._threads)
            outcome = _exported.call("hoag", fit, problem, theta, settings)
            return _result(outcome, None, stacked, problem)
    seen = [0]

    def on_step(st, seconds):
        callback(_entries(st.history, seen[0], seen[0] + 1, [seconds])[0])
        seen[0] += 1

    with serial_lapack():
        state = _start(problem, theta, settings, **static)
        state, times = iterate_outer(lambda s: _step(problem, s, **static), state, on_step)
        return _result(_outcome(state), times, stacked, problem)


def _entries(history, start, stop, times):
    h = jax.tree.map(np.asarray, history)
    out = []
    for i in range(start, stop):
        out.append(
            {
                "time_s": None if times is None else float(times[i - start]),
                "hparams": {k: np.exp(v[i]) for k, v in h["theta"].items()},
                "value": float(h["value"][i]),
                "accepted": bool(h["accepted"][i]),
                "tol": float(h["tol"][i]),
                "inner_steps": int(h["inner_steps"][i]),
                "inner_failures": int(h["inner_failures"][i]),
            }
        )
    return out


def _result(state: HoagOutcome, times, stacked, problem):
    steps = int(state.k)
    if not np.isfinite(float(state.best_value)):
        raise FloatingPointError("hoag: the criterion was not finite at any step")
    folds = jax.tree.leaves(problem.train)[0].shape[0] if stacked else 1
    return HoagResult(
        hparams={k: np.exp(np.asarray(v)) for k, v in state.best_theta.items()},
        value=float(state.best_value),
        params=state.best_params,
        history=_entries(state.history, 0, steps, times),
        num_solves=steps * folds,
        num_inner_steps=int(state.inner_steps),
        stop_reason=REASONS[int(state.reason)],
        inner_failures=int(state.inner_failures),
    )
