"""Problems several experiments share: L2 logistic regression on synthetic data with its
gradient-descent step size and its exact hypergradient.

Interface: `logistic_problem(seed, n, p, alpha)` returns a `hypergrad` problem with one
penalty per feature (`hparams["alpha"]` of shape `(p,)`); `lipschitz(problem, hparams)`
bounds the largest Hessian eigenvalue of its inner objective, so gradient descent with
step `1 / L` contracts; `exact_hypergradient(problem, hparams)` is the reference: a
Newton solve to a gradient norm of 1e-13 and a dense Cholesky solve of the adjoint.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import hypergrad as hg
from hypergrad import problems
from hypergrad.solvers import Newton


def logistic_problem(seed: int, n: int = 200, p: int = 50, alpha: float = 0.05):
    """`n` training and `n` validation rows of `problems.synthetic_classification`."""
    X, y = problems.synthetic_classification(2 * n, p, seed=seed)
    return problems.logistic(X[:n], y[:n], X[n:], y[n:], alpha=alpha, per_feature=True)


def lipschitz(problem, hparams) -> float:
    """`||[X, 1]||_2^2 / (4 n) + max(alpha)`: sigmoid' <= 1/4 plus the penalty."""
    X = np.asarray(problem.train[0])
    Xb = np.hstack([X, np.ones((X.shape[0], 1))])
    return float(np.linalg.norm(Xb, 2) ** 2 / (4 * X.shape[0]) + np.max(hparams["alpha"]))


REFERENCE_SOLVER = Newton(max_steps=100, tol=1e-13)


@jax.jit
def exact_hypergradient(problem, hparams):
    """The reference hypergradient (flat) and the inner solution."""
    out = hg.hypergradient(
        problem, hparams, solver=REFERENCE_SOLVER, method=hg.Implicit(hg.Dense(symmetric=True))
    )
    return out.grad["alpha"], out.solution.params


def relative_error(g, ref):
    return float(jnp.linalg.norm(g - ref) / jnp.linalg.norm(ref))


def cosine(g, ref):
    return float(g @ ref / (jnp.linalg.norm(g) * jnp.linalg.norm(ref)))


@jax.jit
def _hessian(problem, hparams, params):
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda x: problem.inner(unravel(x), hparams, problem.train))(flat)


def hessian_eigenvalues(problem, hparams, params):
    """The eigenvalues of the inner objective's Hessian at `params` (dense, ascending)."""
    return np.linalg.eigvalsh(np.asarray(_hessian(problem, hparams, params)))


@partial(jax.jit, static_argnames="solver")
def solve_inner(problem, hparams, solver):
    """The inner solution by `solver` (compiled once per problem shape and solver)."""
    return hg.solve(
        problem.inner, problem.init_params, hparams, problem.train, solver=solver
    ).params
