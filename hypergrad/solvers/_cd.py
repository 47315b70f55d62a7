"""Working-set coordinate descent for penalized least squares: the lasso, the elastic net
and the weighted lasso at the speed of the best CPU solvers.

Interface: `CoordinateDescent(prox)` is an inner solver (`init / step / terminate`) for

    min_w  1/(2 W) sum_i s_i (y_i - x_i^T w)^2 + sum_j (a_j |w_j| + b_j / 2 w_j^2),

`W = sum_i s_i`, on data with fields `X` (n, p), `y` (n,) and `weight` (the row weights
`s`: 0 for the rows that pad a fold, so that K folds share shapes); `a`, `b` are the prox's
per-coordinate strengths (`L1`: `a = alpha`, `b = 0`; `ElasticNet`: `a = alpha1`,
`b = alpha2`). The objective `fun` the solver receives must be `least_squares` (the data
term it stands for); the solver reads the data, not `fun`.

Invariant: one `step` is one working-set round and keeps `state.inner.residual == y - X w`
and `state.inner.grad == -X^T (s * residual) / W` for the returned `w`; the round solves
the penalized problem restricted to a working set of at most `working_set` coordinates
(the current support first, then the largest violations of the optimality conditions),
with the others held fixed, so every round decreases the objective (block coordinate
descent) whatever the support size. The run stops on the duality gap:
`gap <= tol * sum_i s_i y_i^2 / W` (scikit-learn's `tol`).

How a round works (after skglm and celer): the Gram matrix of the working set is formed
once (`X_B^T diag(s) X_B / W`, a `working_set`-square matrix, so an epoch of coordinate
updates costs `O(working_set^2)` instead of `O(n working_set)`), then epochs of cyclic
coordinate descent run on it, every `anderson + 1` epochs extrapolated by Anderson
acceleration (kept only when it lowers the objective), until the working set's largest
violation is below `subproblem_tol` times the largest violation over all features at the
start of the round (the progress every round makes) and, when the working set holds the
support, either below what the run's gap target asks of the violations or with the
restricted problem's duality gap (exact in `O(working_set)` from the tracked gradient)
below half that target: a warm start whose working set is right then ends in one round.
Shapes are static (the working set's size is fixed, the number of coordinates updated in
it is data), so the solver runs under `jit` and `vmap` (folds) and does not retrace
across penalties or tolerances.

References:
  Massias, Gramfort and Salmon, "Celer: a fast solver for the Lasso with dual
  extrapolation", 2018, https://arxiv.org/abs/1802.07481
  Bertrand, Klopfenstein, Massias, Blondel, Vaiter, Gramfort and Salmon, "Beyond L1:
  Faster and better sparse models with skglm", 2022, https://arxiv.org/abs/2204.07826
  Fercoq and Richtarik, "Accelerated, parallel and proximal coordinate descent", 2015.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._types import Array
from ._base import AbstractSolver, SolverState, _check_steps
from ._prox import AbstractProx


def least_squares(w, hparams, data) -> Array:
    """`1/(2 W) sum_i s_i (x_i^T w - y_i)^2`, `s` the row weights: the data term of the
    lasso-type problems (what `CoordinateDescent` minimizes, plus its prox)."""
    del hparams
    r = data.X @ w - data.y
    return 0.5 * jnp.sum(data.weight * r**2) / jnp.sum(data.weight)


class CDState(NamedTuple):
    """`CoordinateDescent`'s own state, for the current `w`.

    Attributes:
      residual: `y - X w`.
      grad: the data term's gradient `-X^T (s * residual) / W`.
      gap: the duality gap.
      floor: the gap's round-off error (a tolerance below it is met at it).
      scale: `sum_i s_i y_i^2 / W`, what `tol` is relative to.
      epochs: coordinate-descent epochs run so far (all rounds).
      slots: the feature held in each slot; the first `count` slots are filled.
      count: how many slots are filled.
      rows: `X[:, slots].T` on the filled slots.
      gram: `rows diag(s) rows^T / W` on the filled slots.

    The slots are a cache: a feature keeps its slot (and its Gram row) while it is in the
    working set, entering features are appended after the filled slots, and when they no
    longer fit they take the slots of features that left the working set. A round thus
    computes the Gram rows of entering features only, and a warm start
    (`CoordinateDescent.reinit`) keeps the whole cache across hyperparameters.
    """

    residual: Array
    grad: Array
    gap: Array
    floor: Array
    scale: Array
    epochs: Array
    slots: Array
    count: Array
    rows: Array
    gram: Array


def _soft(x, t):
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - t, 0.0)


def _violation(w, grad, a, b):
    """Distance of `-grad` to the penalty's subdifferential at `w`, per coordinate (zero
    exactly at a minimizer)."""
    on = jnp.abs(grad + a * jnp.sign(w) + b * w)
    off = jnp.maximum(jnp.abs(grad) - a, 0.0)
    return jnp.where(w != 0, on, off)


def _gap(w, residual, grad, data, a, b):
    """Primal value, duality gap and the gap's round-off floor at `w` (see `_gap_terms`)."""
    W = jnp.sum(data.weight)
    return _gap_terms(jnp.sum(data.weight * residual**2) / (2 * W), w, grad, a, b)


def _gap_terms(fit, w, grad, a, b, mask=None):
    """Primal value, duality gap and its round-off floor of the problem in the coordinates
    of `mask` (all by default; the others held fixed), from the data term's value `fit`
    and gradient `grad` at `w`. The dual point is the weighted residual
    `theta = t s * residual / W`, scaled by `t <= 1` so that `|X_j^T theta| <= a_j` where
    `b_j = 0`.

    The gap is summed from its Fenchel-Young terms, each nonnegative and computed without
    cancellation: `(1 - t)^2` times the data term, and per coordinate
    `g_j(w_j) + g_j^*(u_j) - u_j w_j` with `u = -t grad`. Taken as the difference of the
    primal and dual values it could not go below about `eps * primal`, which would cap a
    solution's accuracy near `sqrt(eps)`. On a working set (`mask`) it is the gap of the
    restricted problem, which is the whole problem's gap when no feature outside the set
    violates its optimality condition and the solution's support is inside it."""
    mask = jnp.ones(w.shape, bool) if mask is None else mask
    primal = fit + jnp.sum(jnp.where(mask, a * jnp.abs(w) + 0.5 * b * w**2, 0.0))
    lasso = b == 0
    g = jnp.abs(grad)
    ratio = jnp.where(mask & lasso & (g > a) & (a > 0), a / jnp.maximum(g, 1e-300), 1.0)
    t = jnp.minimum(1.0, jnp.min(ratio, initial=1.0))
    u = -t * grad
    sign = jnp.sign(w)
    absw = jnp.abs(w)
    e = sign * u - a  # how far u sits past the L1 threshold, along w's sign
    b_safe = jnp.where(lasso, 1.0, b)
    excess = jnp.maximum(jnp.abs(u) - a, 0.0)
    # b_j = 0 (feasible u): |w_j| (a_j - sign(w_j) u_j). b_j > 0: (e - b |w|)^2 / (2 b) when
    # u is past the threshold along sign(w), else |w| (a - s u) + b w^2 / 2 + excess^2 / (2b).
    ridge_past = (e - b * absw) ** 2 / (2 * b_safe)
    ridge_short = absw * (-e) + 0.5 * b * w**2 + excess**2 / (2 * b_safe)
    per = jnp.where(
        lasso,
        absw * jnp.maximum(-e, 0.0),
        jnp.where(
            (w != 0) & (e >= 0),
            ridge_past,
            jnp.where(w == 0, excess**2 / (2 * b_safe), ridge_short),
        ),
    )
    # What round-off leaves of the gap: the L1 terms carry an error of eps * a_j |w_j| each
    # (the ridge terms are squares of small numbers, accurate far below that).
    eps = jnp.finfo(w.dtype).eps
    floor = 4 * eps * jnp.sum(jnp.where(mask & lasso, a * absw, 0.0)) + eps**2 * primal
    return primal, (1.0 - t) ** 2 * fit + jnp.sum(jnp.where(mask, per, 0.0)), floor


def _block_cd(
    G, table, active, v0, g0, ab, bb, anderson, tol_in, epochs, budget, fit0, target, progress
):
    """Cyclic coordinate descent on the working set's quadratic, `anderson + 1` epochs at a
    time with Anderson extrapolation, until the largest violation of the `k` active slots
    (mask `active`) is at most `tol_in`, or the restricted problem's duality gap is at most
    `target` and that violation at most `progress` (so that every round makes progress
    even when the features outside the block still violate), or `budget` epochs are
    spent. Returns `(v, epochs)`.

    The block's gradient `g = G (v - v0) + g0` is carried along with `v` and updated by
    one Gram row per coordinate move, so no epoch needs a product with G; the data term's
    value follows from it exactly (`fit0` at `v0`), so the restricted gap costs `O(size)`."""
    size, dtype = v0.shape[0], v0.dtype
    order = jnp.nonzero(active, size=size, fill_value=0)[0]
    k = jnp.sum(active)

    eye = jnp.eye(2, dtype=dtype)

    def update(i, carry):
        v, g = carry
        j = order[i]
        old, t = v[j], table[j]
        new = _soft(old - g[j] * t[0], t[1]) * t[2]
        # The new value and the move through a product with the identity, which XLA does
        # not fuse: both updates then read these two numbers instead of each recomputing
        # them from v and g, so both happen in place (otherwise XLA copied v and g at
        # every coordinate, 30% of the update's time).
        new, move = eye @ jnp.stack([new, new - old])
        return v.at[j].set(new), g + move * G[j]

    def epoch(carry):
        return jax.lax.fori_loop(0, k, update, carry)

    def objective(v, g):
        # Exact for a quadratic: f(v) - f(v0) = (v - v0) . (grad f(v) + grad f(v0)) / 2.
        return 0.5 * (v - v0) @ (g + g0) + ab @ jnp.abs(v) + 0.5 * bb @ v**2

    def done(v, g):
        crit = jnp.max(jnp.where(active, _violation(v, g, ab, bb), 0.0))
        fit = fit0 + 0.5 * (v - v0) @ (g + g0)
        gap = _gap_terms(fit, v, g, ab, bb, active)[1]
        return (crit <= tol_in) | ((gap <= target) & (crit <= progress))

    K = anderson

    def block(carry):
        v, g, epochs, _ = carry
        if K:
            # K + 1 epochs, keeping each iterate and its gradient (one loop, so the
            # epoch is compiled once).
            def snap(e, c):
                v, g, S, Sg = c
                v, g = epoch((v, g))
                return v, g, S.at[e].set(v), Sg.at[e].set(g)

            empty = jnp.zeros((K + 1, size), dtype)
            v, g, S, Sg = jax.lax.fori_loop(0, K + 1, snap, (v, g, empty, empty))
            U = S[1:] - S[:-1]  # K differences
            M = U @ U.T
            M = M + 1e-12 * jnp.trace(M) * jnp.eye(K, dtype=dtype) / K
            z = jnp.linalg.solve(M, jnp.ones(K, dtype))
            coef = z / jnp.sum(z)
            # Gradients are affine in v: the extrapolated point's is the same combination.
            v_x, g_x = coef @ S[1:], coef @ Sg[1:]
            better = jnp.all(jnp.isfinite(v_x)) & (objective(v_x, g_x) < objective(v, g))
            v, g = jnp.where(better, v_x, v), jnp.where(better, g_x, g)
            epochs = epochs + K + 1
        else:
            v, g = epoch((v, g))
            epochs = epochs + 1
        return v, g, epochs, done(v, g)

    def cond(carry):
        return ~carry[3] & (carry[2] < budget)

    # No epoch at all when the working set already meets the round's target.
    v, _, epochs, _ = jax.lax.while_loop(cond, block, (v0, g0, epochs, done(v0, g0)))
    return v, epochs


class CoordinateDescent(AbstractSolver):
    """Working-set coordinate descent with Anderson acceleration (see the module docstring).

    Args:
      prox: the penalty, `L1` or `ElasticNet` (scalar or per-feature strengths).
      tol: stop when the duality gap is at most `tol * sum_i s_i y_i^2 / W`
        (scikit-learn's `tol`; `run(..., tol=...)` passes it as data).
      max_steps: the largest number of working-set rounds.
      working_set: the working set's size (capped at the number of features): the most
        coordinates one round updates. Larger sets cost `O(n working_set^2)` per round;
        a support larger than it is still solved (by more rounds).
      max_epochs: the largest number of epochs in one round.
      anderson: iterates combined by Anderson extrapolation (0 turns it off).
      start_size: the working set's size in the first round from zero (later rounds use
        twice the support, as skglm).
      subproblem_tol: a round ends when the working set's largest violation is below this
        fraction of the largest violation over all features at the round's start.
      divergence: see `AbstractSolver`.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from hypergrad.solvers import CoordinateDescent, L1, run, least_squares
      >>> from hypergrad.problems import Rows
      >>> rng = np.random.default_rng(0)
      >>> X = jnp.asarray(rng.standard_normal((50, 20)))
      >>> y = X[:, 0] - 2 * X[:, 1]
      >>> data = Rows(X, y, jnp.ones(50))
      >>> sol = run(CoordinateDescent(L1("alpha"), tol=1e-10), least_squares, jnp.zeros(20),
      ...           {"alpha": 0.1}, data)
      >>> [int(j) for j in jnp.flatnonzero(sol.params)]
      [0, 1]
      >>> bool(sol.stats["gap"] <= 1e-10 * float(y @ y) / 50)
      True
    """

    reverse_differentiable = False
    sequential_batches = True

    def __init__(
        self,
        prox: AbstractProx,
        tol: float = 1e-8,
        max_steps: int = 100,
        working_set: int = 256,
        max_epochs: int = 10000,
        anderson: int = 5,
        start_size: int = 10,
        subproblem_tol: float = 0.1,
        divergence: float = 1e6,
    ):
        if not isinstance(prox, AbstractProx):
            raise TypeError(f"prox must be an AbstractProx (L1, ElasticNet), got prox={prox!r}")
        _check_steps(max_steps, tol, divergence)
        if tol is None:
            raise ValueError("tol must be a number: coordinate descent stops on the duality gap")
        for name, value, least in (
            ("working_set", working_set, 1),
            ("max_epochs", max_epochs, 1),
            ("anderson", anderson, 0),
            ("start_size", start_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {name}={value!r}")
        self.prox, self.tol, self.max_steps = prox, tol, max_steps
        self.working_set, self.max_epochs, self.anderson = working_set, max_epochs, anderson
        if not 0 < subproblem_tol < 1:
            raise ValueError(f"subproblem_tol must be in (0, 1), got {subproblem_tol=}")
        self.start_size, self.subproblem_tol, self.divergence = (
            start_size,
            subproblem_tol,
            divergence,
        )

    def __repr__(self):
        return (
            f"CoordinateDescent({self.prox!r}, tol={self.tol}, max_steps={self.max_steps}, "
            f"working_set={self.working_set}, subproblem_tol={self.subproblem_tol})"
        )

    def _check(self, fun, params, args):
        if fun is not least_squares:
            raise ValueError(
                "CoordinateDescent minimizes least_squares plus its prox; it was given "
                f"fun={fun!r}. Use it with the lasso-type problems (their inner objective is "
                "hypergrad.solvers.least_squares) or pick FISTA for another objective."
            )
        if self.prox.leaf is not None or not hasattr(params, "ndim") or params.ndim != 1:
            raise ValueError(
                "CoordinateDescent needs params as one vector of coefficients (prox.leaf=None)"
            )
        for field in ("X", "y", "weight"):
            if not hasattr(args, field):
                raise TypeError(
                    f"CoordinateDescent reads args.X, args.y and args.weight (hypergrad."
                    f"problems.Rows); args has no {field!r}: args={type(args).__name__}"
                )

    def _size(self, p):
        return min(self.working_set, p)

    def _evaluate(self, w, residual, grad, hparams, data):
        """Value, violation vector, its norm, the gap and its round-off floor at `w`."""
        a, b = self.prox.strengths(hparams, w.shape[0], w.dtype)
        value, gap, floor = _gap(w, residual, grad, data, a, b)
        viol = _violation(w, grad, a, b)
        # Optimality to round-off of the gradient (which sums n products): no iteration
        # can lower the gap further, so it is its own floor.
        eps = jnp.finfo(w.dtype).eps
        at_round_off = jnp.max(viol) <= 16 * eps * (jnp.max(jnp.abs(grad)) + jnp.max(a))
        floor = jnp.where(at_round_off, jnp.maximum(floor, gap), floor)
        return value, viol, jnp.linalg.norm(viol), (gap, floor)

    def init(self, fun, params, hparams, args):
        self._check(fun, params, args)
        w, X = params, args.X
        n, p = X.shape
        size = self._size(p)
        residual = args.y - X @ w
        W = jnp.sum(args.weight)
        grad = -((args.weight * residual) @ X) / W
        value, viol, norm, (gap, floor) = self._evaluate(w, residual, grad, hparams, args)
        inner = CDState(
            residual=residual,
            grad=grad,
            gap=gap,
            floor=floor,
            scale=jnp.sum(args.weight * args.y**2) / W,
            epochs=jnp.zeros((), jnp.int32),
            slots=jnp.arange(size, dtype=jnp.int32),
            count=jnp.zeros((), jnp.int32),
            rows=jnp.zeros((size, n), w.dtype),
            gram=jnp.zeros((size, size), w.dtype),
        )
        zero = jnp.zeros((), jnp.int32)
        return SolverState(inner, zero, value, viol, norm, value, norm)

    def reinit(self, fun, params, state, hparams, args):
        """The state at `params` for new `hparams`, keeping `state`'s working set and Gram
        cache (valid whatever the penalties: they depend on the data and `params` only).
        `state` must describe `params` (a previous solve's final state)."""
        del fun
        inner = state.inner
        value, viol, norm, (gap, floor) = self._evaluate(
            params, inner.residual, inner.grad, hparams, args
        )
        zero = jnp.zeros((), jnp.int32)
        inner = inner._replace(gap=gap, floor=floor)
        return SolverState(inner, zero, value, viol, norm, value, norm, state.tol)

    def _converged(self, state):
        tol = self.tol if state.tol is None else state.tol
        # A tolerance below the gap's round-off (or y = 0) is met at round-off.
        inner = state.inner
        return inner.gap <= jnp.maximum(tol * inner.scale, inner.floor)

    def restricted_hessian(self, state, hparams):
        inner = state.inner
        size = inner.slots.shape[0]
        _, b = self.prox.strengths(hparams, inner.grad.shape[0], inner.gram.dtype)
        ridge = jnp.where(jnp.arange(size) < inner.count, b[inner.slots], 0.0)
        return inner.slots, inner.count, inner.gram + jnp.diag(ridge)

    def extra_stats(self, state):
        return {"gap": state.inner.gap, "epochs": state.inner.epochs}

    def _working_set(self, w, viol, inner):
        """The round's working set: the support first (when it fits), then the largest
        violations, `2 * nnz` features in all (`start_size` from zero; at most 7/8 of the
        slots, or all of them once the support fills that much). Features already in
        a slot keep it; the others are appended, or, when they do not fit, take the slots
        of features no longer wanted first. Returns `(slots, (refresh, m), count, active,
        holds)`: the new slots; the `m` slots whose row and Gram entries must be computed
        (`refresh[:m]`, ascending); the new count; the mask of slots updated this round;
        and whether the working set holds the support (else the round is a block of a
        larger one)."""
        p, size = w.shape[0], inner.slots.shape[0]
        slots, count = inner.slots, inner.count
        support = w != 0
        nnz = jnp.sum(support)
        # An eighth of the slots stays free after a rebuild, so that features entering in
        # later rounds are appended rather than forcing another rebuild; a support past
        # that cap takes every slot, the support and the largest violations.
        free_eighth = size - size // 8
        cap = jnp.where(nnz < free_eighth, free_eighth, size)
        # The support is forced in while it leaves a 32nd of the slots to violators (a
        # lasso's support near its number of rows n, with n just under the working set's
        # size, is held). A larger support makes the round a block of the largest
        # violations (block coordinate descent), or no feature could ever enter.
        holds = nnz <= size - max(size // 32, 1)
        force = support & holds
        # Ranked in float32: XLA's CPU runtime has a partial sort for float32 `top_k`
        # (7x faster than the full sort it uses for float64 at p = 1536). The scores are
        # scaled to [0, 1], the forced support lifted to [2, 3], so rounding keeps the
        # support first and only reorders violations within 1e-7 of each other.
        scale = jnp.max(viol)
        score = viol / jnp.where(scale > 0, scale, 1.0) + jnp.where(force, 2.0, 0.0)
        _, top = jax.lax.top_k(score.astype(jnp.float32), size)
        want = jnp.clip(jnp.where(nnz == 0, self.start_size, 2 * nnz), 1, cap)
        wanted = jnp.arange(size) < want
        desired = jnp.zeros(p, bool).at[top].set(wanted)
        filled = jnp.arange(size) < count
        slot_of = (
            jnp.full(p, -1, jnp.int32)
            .at[jnp.where(filled, slots, p)]
            .set(jnp.arange(size, dtype=jnp.int32), mode="drop")
        )
        new = wanted & (slot_of[top] < 0)
        m = jnp.sum(new).astype(jnp.int32)
        # Entering features are appended; when they do not all fit, the first ones take
        # the slots of features no longer wanted (kept + entering = want <= cap, so the
        # rest fits after the filled slots). The slots still wanted keep their Gram rows:
        # rebuilding the cache instead cost O(n want^2), most of a warm solve.
        freed = filled & ~desired[slots]
        reuse = jnp.where(count + m > size, jnp.minimum(jnp.sum(freed), m), 0)
        freed_at = jnp.nonzero(freed, size=size, fill_value=size)[0]
        k = jnp.cumsum(new) - 1  # the entering feature's rank
        dest = jnp.where(k < reuse, freed_at[jnp.clip(k, 0, size - 1)], count + k - reuse)
        slots = slots.at[jnp.where(new, dest, size)].set(top.astype(jnp.int32), mode="drop")
        # The slots to compute, ascending: the reused ones (below `count`), then the new.
        refresh = (
            jnp.full(size, size, jnp.int32)
            .at[jnp.where(new, k, size)]
            .set(dest.astype(jnp.int32), mode="drop")
        )
        count = (count + m - reuse).astype(jnp.int32)
        active = (jnp.arange(size) < count) & desired[slots]
        return slots, (refresh, m), count, active, holds

    def _refresh(self, X, s, W, slots, changed, rows, gram):
        """`rows` and Gram entries of the slots `refresh[:m]` (`changed = (refresh, m)`),
        `chunk` slots at a time (the last chunk padded by repeating the last slot): their
        rows of `X^T`, then their Gram rows against every slot, one product per chunk,
        written as rows and as columns. The cost is `O(n * m * working_set)`; unfilled
        slots have zero rows, so their entries are zero."""
        refresh, m = changed
        chunk = min(rows.shape[0], 16)
        chunks = (m + chunk - 1) // chunk

        def at(c):  # the chunk's slots
            return refresh[jnp.clip(c * chunk + jnp.arange(chunk), 0, jnp.maximum(m - 1, 0))]

        def put_rows(c, rows):
            sl = at(c)
            return rows.at[sl].set(jnp.take(X, slots[sl], axis=1).T)

        rows = jax.lax.fori_loop(0, chunks, put_rows, rows)

        # One product per chunk against all slots: tiles against the filled slots only,
        # each computed twice (once per triangle), cost twice the time in small products
        # (a from-zero build of 200 slots took 100 of them). The writes are in place.
        def put_gram(c, gram):
            sl = at(c)
            P = (rows[sl] * (s / W)) @ rows.T
            return gram.at[sl].set(P).at[:, sl].set(P.T)

        return rows, jax.lax.fori_loop(0, chunks, put_gram, gram)

    def step(self, fun, params, state, hparams, args):
        w, inner = params, state.inner
        X, s = args.X, args.weight
        p, dtype = w.shape[0], w.dtype
        size = inner.slots.shape[0]
        a, b = self.prox.strengths(hparams, p, dtype)
        W = jnp.sum(s)
        slots, changed, count, active, holds_support = self._working_set(w, state.grad, inner)
        rows, G = self._refresh(X, s, W, slots, changed, inner.rows, inner.gram)
        filled = jnp.arange(size) < count

        v0 = jnp.where(filled, w[slots], 0.0)
        g0 = jnp.where(filled, inner.grad[slots], 0.0)
        L = jnp.diag(G)
        safe_L = jnp.where(L > 0, L, 1.0)
        ab, bb = a[slots], b[slots]

        # Per slot: 1 / L, the L1 threshold over L and the ridge shrink, in one table so
        # that a coordinate update reads one row (zero for slots with an empty column).
        table = jnp.stack(
            [
                jnp.where(L > 0, 1 / safe_L, 0.0),
                ab / safe_L,
                jnp.where(L > 0, 1 / (1 + bb / safe_L), 0.0),
            ],
            axis=1,
        )

        # The round's target, and a floor at the violations' round-off (a block cannot
        # get below it, and would otherwise run to max_epochs).
        floor = 16 * jnp.finfo(dtype).eps * (jnp.max(jnp.abs(g0)) + jnp.max(ab, initial=0.0))
        # The round ends at the smaller of two targets: a fraction of the largest
        # violation (a working set that may still grow), and what the run's gap target
        # asks of the violations (gap <= sum_j |w_j| viol_j on the working set, so
        # viol <= tol * scale / ||w||_1 meets it): when the working set is right, as in
        # a warm start, one round solves the problem.
        tol = self.tol if state.tol is None else state.tol
        reach = 0.5 * tol * inner.scale / jnp.maximum(jnp.sum(jnp.abs(w)), floor)
        progress = jnp.maximum(self.subproblem_tol * jnp.max(state.grad), floor)
        tol_in = jnp.maximum(jnp.minimum(progress, reach), floor)
        budget = inner.epochs + self.max_epochs

        # The restricted gap may stop the round first: half the run's target (the whole
        # gap adds the terms of the features outside the working set). Only when the
        # working set holds the support: a block of a larger support (block coordinate
        # descent) runs to its violation target.
        fit0 = jnp.sum(s * inner.residual**2) / (2 * W)
        target = jnp.where(holds_support, 0.5 * tol * inner.scale, -1.0)
        v, epochs = _block_cd(
            G,
            table,
            active,
            v0,
            g0,
            ab,
            bb,
            self.anderson,
            tol_in,
            inner.epochs,
            budget,
            fit0,
            target,
            progress,
        )
        w = w.at[jnp.where(filled, slots, p)].set(v, mode="drop")
        residual = inner.residual - (v - v0) @ rows
        grad = -((s * residual) @ X) / W
        value, viol, norm, (gap, floor) = self._evaluate(w, residual, grad, hparams, args)
        inner = inner._replace(
            residual=residual,
            grad=grad,
            gap=gap,
            floor=floor,
            epochs=epochs,
            slots=slots,
            count=count,
            rows=rows,
            gram=G,
        )
        state = state._replace(
            inner=inner, num_steps=state.num_steps + 1, value=value, grad=viol, grad_norm=norm
        )
        return w, state
