"""`hypergrad methods`: the hypergradient of a held-out loss by every method, side by side.

L2-regularized logistic regression on scikit-learn's bundled breast-cancer data (569
rows, 30 features; split 50/25/25 and standardized). The hyperparameter is the penalty
`alpha`; the table reports `d validation loss / d log(alpha)` by each method, its error
against the exact value (tight Newton solve plus a dense implicit solve), and the time
of one compiled evaluation (compilation reported apart).
"""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import methods as m
from ..problems import load, logistic
from ..solvers import Newton, OptaxSolver


def _cases(problem):
    X = np.hstack([np.asarray(problem.train[0]), np.ones((problem.train[0].shape[0], 1))])
    # The logistic loss's Hessian is at most ||X||^2 / (4 n); plus the penalty.
    lipschitz = np.linalg.norm(X, 2) ** 2 / (4 * X.shape[0]) + float(problem.hparams["alpha"])
    step = 1.0 / lipschitz
    tight = Newton(max_steps=50, tol=1e-12)
    gd = OptaxSolver(optax.sgd(step, momentum=0.9, nesterov=True), max_steps=2000, tol=None)
    return [
        ("Implicit(CG)", m.Implicit(m.CG(tol=1e-10)), tight),
        ("Implicit(GMRES)", m.Implicit(m.GMRES(tol=1e-10)), tight),
        ("Implicit(BiCGStab)", m.Implicit(m.BiCGStab(tol=1e-10)), tight),
        ("Implicit(Dense)", m.Implicit(m.Dense()), tight),
        ("Implicit(Neumann, 100 terms)", m.Implicit(m.Neumann(100, step)), tight),
        ("Implicit(Identity)", m.Implicit(m.Identity(step)), tight),
        ("Unrolled(reverse)", m.Unrolled(), gd),
        ("Unrolled(reverse, 45 checkpoints)", m.Unrolled(checkpoints=45), gd),
        ("Unrolled(forward)", m.Unrolled(mode="forward"), gd),
        ("Truncated(k=100)", m.Truncated(100), gd),
    ]


def _timed(fn, *args, repeats=5):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return out, first, statistics.median(times)


def run_methods(alpha: float = 1e-2, seed: int = 0, out=print) -> list[dict]:
    jax.config.update("jax_enable_x64", True)
    data = load("breast_cancer", seed=seed)
    problem = logistic(data.X_train, data.y_train, data.X_val, data.y_val, alpha=alpha)
    log_alpha = jnp.log(jnp.asarray(alpha))

    def make(method, solver):
        def value(pb, la):
            return m.outer_loss(pb, {"alpha": jnp.exp(la)}, solver=solver, method=method)

        return jax.jit(jax.value_and_grad(value, argnums=1))

    exact_value, exact = make(m.Implicit(m.Dense()), Newton(max_steps=50, tol=1e-14))(
        problem, log_alpha
    )
    out(
        f"hypergrad methods: L2 logistic regression on breast_cancer (n_train="
        f"{data.X_train.shape[0]}, n_val={data.X_val.shape[0]}, p={data.X_train.shape[1]}), "
        f"alpha={alpha:g}"
    )
    out(
        f"validation log-loss {float(exact_value):.6f}; exact d loss / d log(alpha) = "
        f"{float(exact):.10f}\n"
    )
    header = (
        f"{'method':36s} {'hypergradient':>15s} {'rel. error':>11s} {'time':>10s} {'compile':>9s}"
    )
    out(header)
    out("-" * len(header))
    rows = []
    for name, method, solver in _cases(problem):
        (_, grad), first, median = _timed(make(method, solver), problem, log_alpha)
        err = abs(float(grad) - float(exact)) / abs(float(exact))
        rows.append(
            {
                "method": name,
                "hypergradient": float(grad),
                "relative_error": err,
                "time_s": median,
                "compile_s": first - median,
            }
        )
        out(
            f"{name:36s} {float(grad):15.10f} {err:11.2e} {median * 1e3:8.2f}ms "
            f"{first - median:8.2f}s"
        )
    out(
        "\nImplicit methods use a Newton inner solve to gradient norm 1e-12; unrolled ones "
        "2000 steps of Nesterov SGD. Identity and Neumann are approximations by design."
    )
    return rows


def register(sub):
    p = sub.add_parser("methods", help="one hypergradient by every method, side by side")
    p.add_argument("--alpha", type=float, default=1e-2, help="L2 penalty (default 1e-2)")
    p.add_argument("--seed", type=int, default=0, help="data split seed (default 0)")
    p.set_defaults(func=lambda args: _main(args))


def _main(args) -> int:
    if not args.alpha > 0:
        raise SystemExit(f"hypergrad methods: --alpha must be positive, got {args.alpha}")
    run_methods(alpha=args.alpha, seed=args.seed)
    return 0
