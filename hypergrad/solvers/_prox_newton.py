"""Proximal Newton for L1 and elastic-net logistic regression.

Interface: `ProxNewton(prox)` is an inner solver (`init / step / terminate`) for

    min_{w, b}  1/W sum_i s_i log(1 + exp(-t_i (x_i^T w + b))) + sum_j a_j |w_j| + b_j/2 w_j^2,

`t_i = 2 y_i - 1` for labels `y` in {0, 1}, row weights `s` (`W = sum s`), an unpenalized
intercept `b`; params `{"w": (p,), "b": ()}`, data with fields `X`, `y`, `weight`. The
objective `fun` it receives must be `logistic_loss` (the data term it stands for); the
prox's leaf must be `"w"`.

Invariant: one `step` is one proximal Newton step: the data term's second-order model at
the current point (its Hessian `[X 1]^T diag(s p (1 - p) / W) [X 1]`, `p + 1` square) plus
the penalty is minimized by coordinate descent on that Hessian, then a step along the
resulting direction is taken with Armijo's rule on the true objective, the candidate
lengths `1, 1/2, ..., 2^-line_search` evaluated at once. `grad` in the state is the
vector of optimality violations (distance of minus the gradient to the penalty's
subdifferential; the intercept's gradient), zero exactly at the minimizer; the run stops
when its norm is at most `tol`. Quadratic convergence near the solution: a handful of
steps from zero, one or two from a warm start. Meant for up to a few hundred features
(the Hessian is formed); use `FISTA` above that.

Reference: Lee, Sun and Saunders, "Proximal Newton-type methods for minimizing composite
functions", 2014, https://arxiv.org/abs/1206.1623 (and skglm's `ProxNewton`).
"""

import jax
import jax.numpy as jnp
import optax

from .._types import Array
from ._base import AbstractSolver, SolverState, _check_steps
from ._cd import _soft, _violation
from ._prox import AbstractProx
from ._solution import tree_norm


def logistic_loss(params, hparams, data) -> Array:
    """The (weighted) mean logistic loss of `X w + b` against labels in {0, 1}: the data
    term of the L1 and elastic-net logistic problems (what `ProxNewton` minimizes)."""
    del hparams
    logits = data.X @ params["w"] + params["b"]
    loss = optax.sigmoid_binary_cross_entropy(logits, data.y)
    return jnp.sum(data.weight * loss) / jnp.sum(data.weight)


class ProxNewton(AbstractSolver):
    """Proximal Newton for L1 / elastic-net logistic regression (see the module docstring).

    Args:
      prox: the penalty on `w`: `L1(key, leaf="w")` or `ElasticNet(l1, l2, leaf="w")`.
      tol: stop when the norm of the optimality violations is at most `tol`.
      max_steps: the largest number of Newton steps.
      max_epochs: the largest number of coordinate-descent epochs on one Newton model.
      line_search: halvings of the step tried by Armijo's rule.
      divergence: see `AbstractSolver`.
    """

    reverse_differentiable = False

    def __init__(
        self,
        prox: AbstractProx,
        tol: float = 1e-10,
        max_steps: int = 50,
        max_epochs: int = 200,
        line_search: int = 12,
        divergence: float = 1e6,
    ):
        if not isinstance(prox, AbstractProx) or prox.leaf != "w":
            raise ValueError(
                "prox must be L1(..., leaf='w') or ElasticNet(..., leaf='w') (the intercept "
                f"is not penalized), got prox={prox!r}"
            )
        _check_steps(max_steps, tol, divergence)
        if tol is None:
            raise ValueError("tol must be a number: ProxNewton stops on its optimality residual")
        for name, value in (("max_epochs", max_epochs), ("line_search", line_search)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {name}={value!r}")
        self.prox, self.tol, self.max_steps = prox, tol, max_steps
        self.max_epochs, self.line_search, self.divergence = max_epochs, line_search, divergence

    def __repr__(self):
        return f"ProxNewton({self.prox!r}, tol={self.tol}, max_steps={self.max_steps})"

    def _check(self, fun, params, args):
        if fun is not logistic_loss:
            raise ValueError(
                "ProxNewton minimizes logistic_loss plus its prox; it was given "
                f"fun={fun!r}. Use FISTA for another objective."
            )
        if not (isinstance(params, dict) and set(params) == {"w", "b"}):
            raise ValueError("ProxNewton needs params {'w': (p,), 'b': ()}")
        for field in ("X", "y", "weight"):
            if not hasattr(args, field):
                raise TypeError(f"ProxNewton reads args.X, args.y and args.weight; no {field!r}")

    def _penalty(self, w, hparams):
        a, b = self.prox.strengths(hparams, w.shape[0], w.dtype)
        return jnp.sum(a * jnp.abs(w)) + 0.5 * jnp.sum(b * w**2), a, b

    def _state(self, params, hparams, data, old=None):
        w = params["w"]
        value_fit, grad = jax.value_and_grad(logistic_loss)(params, hparams, data)
        pen, a, b = self._penalty(w, hparams)
        viol = {"w": _violation(w, grad["w"], a, b), "b": grad["b"]}
        value, norm = value_fit + pen, tree_norm(viol)
        if old is None:
            zero = jnp.zeros((), jnp.int32)
            return SolverState(grad, zero, value, viol, norm, value, norm)
        return old._replace(
            inner=grad, num_steps=old.num_steps + 1, value=value, grad=viol, grad_norm=norm
        )

    def init(self, fun, params, hparams, args):
        self._check(fun, params, args)
        return self._state(params, hparams, args)

    def step(self, fun, params, state, hparams, args):
        X, s = args.X, args.weight
        w, b0 = params["w"], params["b"]
        p, dtype = w.shape[0], w.dtype
        grad = state.inner
        prob = jax.nn.sigmoid(X @ w + b0)
        d = s * prob * (1 - prob) / jnp.sum(s)
        # The Hessian of the data term over (w, b), the intercept as a last column of ones.
        Xb = jnp.concatenate([X, jnp.ones((X.shape[0], 1), dtype)], axis=1)
        H = (Xb * d[:, None]).T @ Xb
        a, bb = self.prox.strengths(hparams, p, dtype)
        a = jnp.append(a, 0.0)  # the intercept is not penalized
        bb = jnp.append(bb, 0.0)
        x0 = jnp.append(w, b0)
        g0 = jnp.append(grad["w"], grad["b"])
        L = jnp.diag(H)
        safe_L = jnp.where(L > 0, L, 1.0)
        table = jnp.stack(
            [jnp.where(L > 0, 1 / safe_L, 0.0), a / safe_L, 1 / (1 + bb / safe_L)], axis=1
        )

        # Coordinate descent on the model g0 . (x - x0) + (x - x0)^T H (x - x0) / 2 + penalty,
        # carrying its gradient q = g0 + H (x - x0).
        def update(j, carry):
            x, q = carry
            old, t = x[j], table[j]
            new = _soft(old - q[j] * t[0], t[1]) * t[2]
            return x.at[j].set(new), q + (new - old) * H[j]

        def epoch(carry):
            x, q, e, _ = carry
            x, q = jax.lax.fori_loop(0, p + 1, update, (x, q))
            return x, q, e + 1, jnp.max(_violation(x, q, a, bb))

        target = 0.1 * jnp.max(jnp.abs(_violation(x0, g0, a, bb)))
        x, _, _, _ = jax.lax.while_loop(
            lambda c: (c[3] > target) & (c[2] < self.max_epochs),
            epoch,
            (x0, g0, jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, dtype)),
        )
        direction = x - x0

        def objective(xx):
            pp = {"w": xx[:p], "b": xx[p]}
            return logistic_loss(pp, hparams, args) + self._penalty(xx[:p], hparams)[0]

        pen0 = self._penalty(w, hparams)[0]
        decrease = g0 @ direction + self._penalty(x[:p], hparams)[0] - pen0
        steps = 0.5 ** jnp.arange(self.line_search + 1, dtype=dtype)
        values = jax.vmap(lambda t: objective(x0 + t * direction))(steps)
        ok = values <= state.value + 1e-4 * steps * decrease
        step = steps[jnp.where(jnp.any(ok), jnp.argmax(ok), self.line_search)]
        new = x0 + step * direction
        params = {"w": new[:p], "b": new[p]}
        return params, self._state(params, hparams, args, state)
