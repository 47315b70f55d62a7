"""HOAG: a fast outer loop for regularization strengths by approximate hypergradients.

Interface: `hoag(problem, hparams) -> HoagResult(hparams, value, params, history, ...)`
for a `BilevelProblem` (or K fold problems stacked by `hypergrad.problems.kfold`, whose
mean validation loss is then the criterion) whose hyperparameters are all positive
scales (penalties). Invariant: one compiled outer step, called with different values
only (tolerances, warm starts, hyperparameters): nothing retraces between outer steps.

Each outer step k, at `theta = log(h)`:

1. solve the inner problem to tolerance `eps_k` (gradient-mapping norm relative to its
   value at zero), warm-started from the previous inner solution;
2. solve the adjoint system `(dF/dparams)^T v = d outer / d params` by CG to relative
   tolerance `eps_k`, warm-started from the previous adjoint;
3. form the approximate hypergradient `g = (d outer/dh - v^T dF/dh) * h` (log space);
4. step `theta <- clip(theta - eta g)`, each coordinate moved by at most `max_move`;
   accept if the criterion did not increase by more than `eps_k` relative (the
   inexactness HOAG allows), growing `eta` by a Barzilai-Borwein estimate; otherwise
   return to the last accepted point and halve `eta` (the safeguard).

The tolerance decreases geometrically, `eps_k = max(tol * decrease^k, min_tol)`: early
steps are cheap and imprecise, late ones precise, which HOAG shows still converges when
the tolerances are summable.

Reference: Pedregosa, "Hyperparameter optimization with approximate gradient", 2016,
https://arxiv.org/abs/1602.02355
"""

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.sparse.linalg import cg

from .._bilevel import BilevelProblem
from ..methods._optimality import stationarity


class HoagResult(NamedTuple):
    """What `hoag` returns.

    Attributes:
      hparams: the best hyperparameters found (natural scale).
      value: the criterion there (at the inexact inner solution of that step).
      params: the inner solution there (per fold for stacked problems).
      history: one dict per outer step: `time_s` (since the call), `hparams`, `value`,
        `inner_steps` (that step's inner iterations, summed over folds), `accepted`, `tol`.
      num_solves: inner solves in all (outer steps times folds).
      num_inner_steps: inner iterations in all.
    """

    hparams: dict
    value: float
    params: Any
    history: list
    num_solves: int
    num_inner_steps: int


def _inner_solve(problem, h, x0, tol):
    solver, fun, args = problem.solver, problem.inner, problem.train
    state = solver.init(fun, x0, h, args)

    def cond(carry):
        _, s = carry
        return (s.grad_norm > tol) & (s.num_steps < solver.max_steps) & jnp.isfinite(s.grad_norm)

    def body(carry):
        return solver.step(fun, *carry, h, args)

    x, state = jax.lax.while_loop(cond, body, (x0, state))
    return x, state.num_steps


def _evaluate_one(problem, theta, x0, v0, eps, scale, max_cg):
    """Criterion and log-space hypergradient of one problem at `exp(theta)`."""
    h = jax.tree.map(jnp.exp, theta)
    optimality = problem.optimality or stationarity(problem.inner)
    x, steps = _inner_solve(problem, h, x0, eps * scale)
    value, (g_x, g_h) = jax.value_and_grad(problem.outer, argnums=(0, 1))(x, h, problem.val)
    residual = lambda p: optimality.residual(p, h, problem.train)  # noqa: E731
    if optimality.symmetric:
        matvec = lambda u: jax.jvp(residual, (x,), (u,))[1]  # noqa: E731
    else:  # pragma: no cover - the ready problems are symmetric
        _, vjp = jax.vjp(residual, x)
        matvec = lambda u: vjp(u)[0]  # noqa: E731
    v, _ = cg(matvec, g_x, x0=v0, tol=eps, maxiter=max_cg)
    _, vjp_h = jax.vjp(lambda hh: optimality.residual(x, hh, problem.train), h)
    (g_ind,) = vjp_h(v)
    grad_h = jax.tree.map(jnp.subtract, g_h, g_ind)
    grad_theta = jax.tree.map(jnp.multiply, grad_h, h)
    return value, grad_theta, x, v, steps


def _scale(problem, x0):
    """The inner residual's size at the start: tolerances are relative to it."""
    g = jax.grad(problem.inner)(x0, problem.hparams, problem.train)
    leaves = jax.tree.leaves(g)
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in leaves))


def _leading(problem):
    return jax.tree.leaves(problem.train)[0].ndim


@jax.jit
def _evaluate_stacked(problem, theta, x0, v0, eps, scale, max_cg):
    one = lambda pr, x, v, s: _evaluate_one(pr, theta, x, v, eps, s, max_cg)  # noqa: E731
    vals, grads, xs, vs, steps = jax.vmap(one)(problem, x0, v0, scale)
    mean = lambda t: jnp.mean(t, axis=0)  # noqa: E731
    return mean(vals), jax.tree.map(mean, grads), xs, vs, jnp.sum(steps)


_evaluate_single = jax.jit(_evaluate_one)


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


def hoag(
    problem: BilevelProblem,
    hparams: dict | None = None,
    *,
    lower: float | dict = 1e-12,
    upper: float | dict = np.inf,
    max_iter: int = 30,
    tol: float = 1e-2,
    decrease: float = 0.6,
    min_tol: float = 1e-8,
    max_move: float = 1.0,
    warm_start: bool = True,
    optimizer=None,
    max_cg: int = 200,
    callback: Callable[[dict], Any] | None = None,
) -> HoagResult:
    """Tune positive hyperparameters of `problem` by HOAG (see the module docstring).

    Args:
      problem: a `BilevelProblem` with all hparams positive, or K stacked fold problems
        (`hypergrad.problems.kfold`), whose mean validation loss is minimized.
      hparams: the starting point (default `problem.hparams`).
      lower, upper: bounds on each hparam (a number, or a dict by name, where a missing
        name keeps the default); `0 < lower < upper`, `upper` may be `inf`.
      max_iter: the number of outer steps (inner solves per fold).
      tol, decrease, min_tol: the inner and adjoint tolerance schedule
        `eps_k = max(tol * decrease^k, min_tol)` (relative; `decrease=1` keeps it fixed).
      max_move: the largest change of any `log h` in one step (a trust region).
      warm_start: warm-start the inner solve and the adjoint from the previous step.
      optimizer: an optax `GradientTransformation` to take the steps instead of HOAG's
        safeguarded rule (the plain outer loop the benchmark compares with); steps are
        always accepted then.
      max_cg: the largest number of CG iterations per adjoint solve.
      callback: called with each step's history entry.

    Returns:
      A `HoagResult`.

    Example:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> from hypergrad import problems
      >>> from hypergrad.tune import hoag
      >>> X, y = problems.synthetic_regression(60, 10, seed=0)
      >>> pr = problems.lasso(X[:40], y[:40], X[40:], y[40:])
      >>> res = hoag(pr, max_iter=15)
      >>> res.value <= res.history[0]["value"]
      True
    """
    if not isinstance(problem, BilevelProblem):
        raise TypeError(f"problem must be a BilevelProblem, got problem={problem!r}")
    stacked = _leading(problem) == 3  # Rows.X is (folds, n, p) when stacked
    if hparams is None:
        hparams = problem.hparams
        if stacked:  # the folds share their starting point: take the first's
            hparams = jax.tree.map(lambda x: x[0], hparams)
    if not isinstance(hparams, dict):
        raise TypeError(f"hparams must be a dict of positive penalties, got hparams={hparams!r}")
    h0 = {k: np.asarray(v, dtype=np.float64) for k, v in hparams.items()}
    for k, v in h0.items():
        if not (np.all(np.isfinite(v)) and np.all(v > 0)):
            raise ValueError(f"hparams[{k!r}] must be positive and finite, got {v!r}")
    for name, value in (("max_iter", max_iter), ("max_cg", max_cg)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {name}={value!r}")
    if not (0 < tol and 0 < min_tol and 0 < decrease <= 1 and max_move > 0):
        raise ValueError(
            f"need tol > 0, min_tol > 0, 0 < decrease <= 1 and max_move > 0, got {tol=}, "
            f"{min_tol=}, {decrease=}, {max_move=}"
        )
    lo = _check_bounds("lower", lower, h0, 1e-12)
    hi = _check_bounds("upper", upper, h0, np.inf)  # log(inf) = inf: no upper bound
    if any(np.any(lo[k] >= hi[k]) for k in lo):
        raise ValueError(f"lower must be below upper, got lower={lower!r}, upper={upper!r}")

    dtype = jax.tree.leaves(problem.train)[0].dtype
    clip = lambda t: {  # noqa: E731
        k: np.clip(v, lo[k], hi[k]) for k, v in t.items()
    }
    theta = clip({k: np.log(v) for k, v in h0.items()})
    start = time.perf_counter()
    if stacked:
        evaluate = _evaluate_stacked
        scale = jax.vmap(_scale)(problem, problem.init_params)
    else:
        evaluate = _evaluate_single
        scale = _scale(problem, problem.init_params)
    x0 = problem.init_params
    v0 = jax.tree.map(jnp.zeros_like, problem.init_params)
    x, v = x0, v0
    opt_state = optimizer.init(theta) if optimizer is not None else None
    history = []
    best = None  # (value, theta, x)
    anchor = None  # last accepted (value, theta, grad)
    eta = None
    retry = False
    num_steps_total = 0
    folds = jax.tree.leaves(problem.train)[0].shape[0] if stacked else 1

    for k in range(max_iter):
        eps = max(tol * decrease**k, min_tol)
        th_j = {kk: jnp.asarray(vv, dtype) for kk, vv in theta.items()}
        value, grad, x_new, v_new, steps = evaluate(
            problem,
            th_j,
            x if warm_start else x0,
            v if warm_start else v0,
            jnp.asarray(eps, dtype),
            scale,
            max_cg,
        )
        value = float(value)
        grad = {kk: np.asarray(g, dtype=np.float64) for kk, g in grad.items()}
        steps = int(steps)
        num_steps_total += steps
        finite = np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grad.values())
        if optimizer is not None:
            accepted = finite
        else:
            # After a rejection, a step within 1% of the anchor is taken whatever its value:
            # the anchor's value was measured at a looser tolerance and may be optimistic,
            # so a strict comparison could reject every later step.
            near = anchor is not None and all(
                np.max(np.abs(theta[kk] - anchor[1][kk]), initial=0.0) <= 1e-2 for kk in theta
            )
            accepted = finite and (
                anchor is None
                or (retry and near)
                or value <= anchor[0] + eps * max(abs(anchor[0]), 1e-12)
            )
        retry = finite and not accepted
        entry = {
            "time_s": time.perf_counter() - start,
            "hparams": {kk: np.exp(vv) for kk, vv in theta.items()},
            "value": value,
            "inner_steps": steps,
            "accepted": bool(accepted),
            "tol": eps,
        }
        history.append(entry)
        if callback is not None:
            callback(entry)
        if finite and (best is None or value < best[0]):
            best = (value, dict(theta), x_new)
        if accepted:
            x, v = x_new, v_new
            if optimizer is None:
                if anchor is not None and eta is not None:
                    s = np.concatenate([np.ravel(theta[kk] - anchor[1][kk]) for kk in theta])
                    yv = np.concatenate([np.ravel(grad[kk] - anchor[2][kk]) for kk in theta])
                    sy = float(s @ yv)
                    # Barzilai-Borwein step, kept within a factor 4 of the last one.
                    eta = min(max(float(s @ s) / sy, eta / 4), 4 * eta) if sy > 0 else 2 * eta
                anchor = (value, dict(theta), grad)
        elif optimizer is None:
            eta = 0.5 * eta if eta is not None else None
        if optimizer is None:
            if anchor is None:  # not finite at the start: nothing to step from
                break
            g_inf = max(float(np.max(np.abs(g))) for g in anchor[2].values())
            if g_inf == 0:
                break
            if eta is None:
                eta = max_move / g_inf  # the first step moves the steepest coordinate by max_move
            base, g = anchor[1], anchor[2]
            theta = {kk: base[kk] + np.clip(-eta * g[kk], -max_move, max_move) for kk in base}
        else:
            import optax

            updates, opt_state = optimizer.update(grad, opt_state, theta)
            updates = {kk: np.clip(np.asarray(u), -max_move, max_move) for kk, u in updates.items()}
            theta = optax.apply_updates(theta, updates)
            theta = {kk: np.asarray(vv) for kk, vv in theta.items()}
        theta = clip(theta)

    if best is None:
        raise FloatingPointError("hoag: the criterion was not finite at any step")
    value, theta_best, x_best = best
    return HoagResult(
        hparams={kk: np.exp(vv) for kk, vv in theta_best.items()},
        value=value,
        params=x_best,
        history=history,
        num_solves=len(history) * folds,
        num_inner_steps=num_steps_total,
    )
