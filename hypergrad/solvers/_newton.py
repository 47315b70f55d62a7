"""Newton's method with a dense Hessian: the closed form for quadratic objectives.

On a quadratic objective such as ridge regression one Newton step from any point lands
on the exact minimizer, `w = (X^T X / n + alpha I)^{-1} X^T y / n`, so `Newton()` is the
closed-form ridge solver; on smooth strongly convex objectives (L2 logistic regression)
it converges quadratically and serves as the tight reference solve. It materializes the
`p x p` Hessian: meant for problems with up to a few thousand parameters.
"""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ._base import AbstractSolver, _check_steps, advance, common_state


class Newton(AbstractSolver):
    """Dense Newton steps `params -= H^{-1} grad` (Cholesky, LU if `symmetric=False`).

    Args:
      max_steps: the largest number of steps (one suffices for a quadratic).
      tol: stop when the gradient norm is at most `tol`.
      damping: step size of each Newton step (1 is the pure Newton step).
      line_search: how many halvings of the step to try (0: none). The candidate steps
        `damping * 2^-i`, `i = 0..line_search`, are evaluated at once (a batch of
        objective values, no data-dependent loop: the step stays reverse-differentiable
        and batches well under `vmap`), and the longest one that decreases the
        objective by Armijo's rule is taken (the shortest when none does). It makes
        Newton safe from any start on smooth convex objectives such as logistic
        regression.
      divergence: see `AbstractSolver`.

    Example:
      >>> import jax.numpy as jnp
      >>> from hypergrad.solvers import Newton, run
      >>> fun = lambda w, alpha, args: 0.5 * jnp.sum((w - 2.0) ** 2) + 0.5 * alpha * jnp.sum(w**2)
      >>> sol = run(Newton(), fun, jnp.zeros(3), 1.0)
      >>> [round(float(x), 6) for x in sol.params], int(sol.stats["num_steps"])
      ([1.0, 1.0, 1.0], 1)
    """

    def __init__(
        self,
        max_steps: int = 50,
        tol: float | None = 1e-10,
        damping: float = 1.0,
        divergence: float = 1e6,
        line_search: int = 0,
    ):
        _check_steps(max_steps, tol, divergence)
        if not 0 < damping <= 1:
            raise ValueError(f"damping must be in (0, 1], got damping={damping!r}")
        if isinstance(line_search, bool) or not isinstance(line_search, int) or line_search < 0:
            raise ValueError(f"line_search must be an int >= 0, got {line_search=}")
        self.max_steps, self.tol, self.damping, self.divergence = (
            max_steps,
            tol,
            damping,
            divergence,
        )
        self.line_search = line_search

    def init(self, fun, params, hparams, args):
        value, grad = jax.value_and_grad(fun)(params, hparams, args)
        # The Cholesky factor of the last step's Hessian (the identity before a step),
        # kept for `preconditioner`.
        flat = ravel_pytree(params)[0]
        return common_state(jnp.eye(flat.size, dtype=flat.dtype), value, grad)

    def preconditioner(self, state):
        """The inverse of the Hessian that the last step factored, at the iterate before
        the solution: on a quadratic objective the inverse Hessian itself (conjugate
        gradients then end in one step), and close to it wherever Newton converged. The
        identity when no step was taken (a warm start at the solution)."""
        factor = state.inner
        return lambda v: jax.scipy.linalg.cho_solve((factor, True), v)

    def step(self, fun, params, state, hparams, args):
        flat, unravel = ravel_pytree(params)
        # The barrier ties the data to this step's parameters: on a quadratic objective
        # the Hessian does not depend on them, and XLA would otherwise hoist its
        # computation out of the solver's while loop, paying for it even when the loop
        # takes no step (a warm start at the solution).
        flat, hparams, args = jax.lax.optimization_barrier((flat, hparams, args))
        flat_fun = lambda x: fun(unravel(x), hparams, args)  # noqa: E731
        hess = jax.hessian(flat_fun)(flat)
        g, _ = ravel_pytree(state.grad)
        # The Hessian of a convex objective is symmetric positive (semi)definite: Cholesky.
        factor = jax.scipy.linalg.cho_factor(hess, lower=True)[0]
        direction = jax.scipy.linalg.cho_solve((factor, True), g)
        if self.line_search:
            steps = self.damping * 0.5 ** jnp.arange(self.line_search + 1, dtype=flat.dtype)
            values = jax.vmap(lambda t: flat_fun(flat - t * direction))(steps)
            # Armijo: a decrease of at least 1e-4 of what the linear model predicts.
            ok = values <= state.value - 1e-4 * steps * (g @ direction)
            pick = jnp.where(jnp.any(ok), jnp.argmax(ok), self.line_search)
            step = steps[pick]
        else:
            step = self.damping
        params = unravel(flat - step * direction)
        value, grad = jax.value_and_grad(fun)(params, hparams, args)
        return params, advance(state, factor, value, grad)

    def __repr__(self):
        return f"Newton(max_steps={self.max_steps}, tol={self.tol}, line_search={self.line_search})"
