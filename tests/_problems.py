"""Small well-conditioned bilevel problems shared by the tests (float64 unless asked)."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad import problems


def ridge_problem(n=40, m=30, p=5, seed=0, alpha=0.5, dtype=np.float64, per_feature=False):
    X, y = problems.synthetic_regression(n + m, p, noise=0.5, correlation=0.3, seed=seed)
    X, y = X.astype(dtype), y.astype(dtype)
    a = np.full(p, alpha, dtype) if per_feature else dtype(alpha)
    return problems.ridge(X[:n], y[:n], X[n:], y[n:], alpha=a)


def logistic_problem(n=60, m=40, p=4, seed=0, alpha=0.1, dtype=np.float64, per_feature=False):
    X, y = problems.synthetic_classification(n + m, p, seed=seed)
    X, y = X.astype(dtype), y.astype(dtype)
    return problems.logistic(X[:n], y[:n], X[n:], y[n:], alpha=alpha, per_feature=per_feature)


def hessian_bound(problem):
    """An upper bound `L` on the inner Hessian's eigenvalues at any point.

    Ridge: `||X||_2^2 / n + max(alpha)`; logistic: a quarter of that for the loss part
    (the sigmoid's derivative is at most 1/4), with the intercept column included.
    """
    X, _ = problem.train
    n = X.shape[0]
    alpha = float(jnp.max(problem.hparams["alpha"]))
    if problem.name == "ridge":
        return float(np.linalg.norm(np.asarray(X), 2) ** 2 / n + alpha)
    Xb = np.hstack([np.asarray(X), np.ones((n, 1))])
    return float(np.linalg.norm(Xb, 2) ** 2 / (4 * n) + alpha)


def central_difference(f, hparams, leaf="alpha", rel_step=None):
    """Central finite differences of scalar `f` along each entry of `hparams[leaf]`.

    Step `h = eps^(1/3) * max(1, |x|)`: the choice that balances truncation error
    (O(h^2)) and rounding error (O(eps / h)) for a central difference, giving about
    eps^(2/3) ~ 4e-11 relative accuracy in float64.
    """
    x = np.asarray(hparams[leaf], dtype=np.float64)
    flat = x.reshape(-1)
    out = np.zeros_like(flat)
    eps = np.finfo(np.float64).eps
    for i in range(flat.size):
        step = (rel_step or eps ** (1 / 3)) * max(1.0, abs(flat[i]))
        up, down = flat.copy(), flat.copy()
        up[i] += step
        down[i] -= step
        hu = {**hparams, leaf: jnp.asarray(up.reshape(x.shape))}
        hd = {**hparams, leaf: jnp.asarray(down.reshape(x.shape))}
        out[i] = (float(f(hu)) - float(f(hd))) / (2 * step)
    return out.reshape(x.shape)


@contextlib.contextmanager
def _count_events(name):
    events = []

    def listener(event, duration, **kwargs):
        if event == name:
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def count_compilations():
    """The XLA compilations in the block, counted from JAX's public monitoring events
    (one `/jax/core/compile/backend_compile_duration` event per program compiled)."""
    return _count_events("/jax/core/compile/backend_compile_duration")


def count_traces():
    """The traces in the block (one `/jax/core/compile/jaxpr_trace_duration` event per
    function traced to a jaxpr). Unlike compilations, a retrace shows here even when the
    persistent compilation cache then loads the program instead of compiling it."""
    return _count_events("/jax/core/compile/jaxpr_trace_duration")
