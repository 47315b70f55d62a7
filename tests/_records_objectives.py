"""Objectives the search and records tests run, importable by name for `reproduce`.

- `toy`: a mixed problem (categorical x integer x log-real, with conditional
  dimensions) whose optimum is known: `toy_value` is a sum of squares that is zero at
  `TOY_OPTIMUM` and at least `TOY_GAP` away from it for every other choice of the
  discrete dimensions, whatever the continuous ones.
- `toy_budgeted`: the same with a budget (inner steps): a bias that shrinks as 1/budget.
- `ridge_gradient`: a gradient-based run without the tuner: Adam on the log of a ridge
  penalty, the inner problem solved in closed form and differentiated by JAX, the
  validation loss recorded at each outer step.
"""

import math
import zlib

import jax
import jax.numpy as jnp
import optax

from hypergrad.records import Outcome
from hypergrad.space import Categorical, Condition, Int, Real, Space

TOY_SPACE = Space(
    {
        "opt": Categorical(("sgd", "adam", "lbfgs")),
        "layers": Int(1, 4),
        "lr": Real(1e-4, 1e-1, log=True),
        "momentum": Real(0.0, 0.99),
        "width3": Int(8, 128, log=True),
    },
    conditions={
        "momentum": Condition("opt", ("sgd",)),
        "width3": Condition("layers", (3, 4)),
    },
)
_BASE = {"sgd": 0.25, "adam": 0.0, "lbfgs": 0.5}
_LAYERS = {"sgd": 2, "adam": 3, "lbfgs": 1}
_LOG_LR = {"sgd": -1.5, "adam": -2.5, "lbfgs": -3.0}
TOY_OPTIMUM = {"opt": "adam", "layers": 3, "lr": 10**-2.5, "width3": 32}
# Every other (opt, layers) costs at least 0.25 (sgd's base, or adam one layer off at 0.3).
TOY_GAP = 0.25


def toy_value(config) -> float:
    opt = config["opt"]
    v = _BASE[opt] + 0.3 * (config["layers"] - _LAYERS[opt]) ** 2
    v += (math.log10(config["lr"]) - _LOG_LR[opt]) ** 2
    if "momentum" in config:
        v += (config["momentum"] - 0.9) ** 2
    if "width3" in config:
        v += 0.05 * (math.log2(config["width3"]) - 5) ** 2
    return v


def toy(config, *, seed):
    return toy_value(config)


def toy_budgeted(config, *, seed, budget):
    # A deterministic "noise" per configuration, damped by the budget, as a short
    # training run is a biased estimate of a long one.
    h = zlib.crc32(repr(sorted(config.items())).encode()) / 2**32
    return toy_value(config) + 0.5 * h / budget


def toy_two(config, *, seed):
    """Two objectives in conflict: the toy value, and the learning rate's log (cost)."""
    return toy_value(config), math.log10(config["lr"])


RIDGE_SPACE = Space(
    {
        "alpha0": Real(1e-3, 1e2, log=True),
        "outer_lr": Real(1e-2, 1.0, log=True),
        "steps": Int(3, 30),
    }
)


def _ridge_data(seed, n=40, p=8):
    kx, kn, kw = jax.random.split(jax.random.key(seed), 3)
    X = jax.random.normal(kx, (2 * n, p))
    w = jax.random.normal(kw, (p,))
    y = X @ w + 2.0 * jax.random.normal(kn, (2 * n,))
    return X[:n], y[:n], X[n:], y[n:]


def _val_loss(log_alpha, Xt, yt, Xv, yv):
    p = Xt.shape[1]
    w = jnp.linalg.solve(Xt.T @ Xt + jnp.exp(log_alpha) * jnp.eye(p), Xt.T @ yt)
    return jnp.mean((Xv @ w - yv) ** 2)


@jax.jit
def _outer_step(log_alpha, opt_state, lr, data):
    loss, g = jax.value_and_grad(_val_loss)(log_alpha, *data)
    updates, opt_state = optax.adam(lr).update(g, opt_state)
    return log_alpha + updates, opt_state, loss


def ridge_gradient(config, *, seed):
    """Hypergradient descent on log(alpha) for ridge; one inner solve per outer step."""
    data = _ridge_data(seed)
    log_alpha = jnp.log(jnp.asarray(config["alpha0"], float))
    opt_state = optax.adam(config["outer_lr"]).init(log_alpha)
    losses = []
    for _ in range(config["steps"]):
        log_alpha, opt_state, loss = _outer_step(
            log_alpha, opt_state, jnp.asarray(config["outer_lr"], float), data
        )
        losses.append(float(loss))
    final = float(_val_loss(log_alpha, *data))
    return Outcome(
        final,
        intermediate=losses,
        inner_solves=config["steps"] + 1,
        attrs={"alpha": float(jnp.exp(log_alpha))},
    )


# Spaces of the tests of several workers: a 12-point grid at resolution 2 (3 x 2 x 2) for
# fault injection, a 40-point grid at resolution 5 (2 x 4 x 5) for four workers.
FAULT_SPACE = Space(
    {
        "opt": Categorical(("sgd", "adam", "lbfgs")),
        "layers": Int(1, 4),
        "lr": Real(1e-4, 1e-1, log=True),
    }
)
GRID40_SPACE = Space(
    {
        "opt": Categorical(("sgd", "adam")),
        "layers": Int(1, 4),
        "lr": Real(1e-4, 1e-1, log=True),
    }
)


def gated_toy(config, *, seed):
    """`toy`, whose first call in each process says so in the folder `HG_READY_DIR` and
    waits for the file `HG_GO`, so that workers started one by one run together."""
    import os
    import time

    ready = os.path.join(os.environ["HG_READY_DIR"], str(os.getpid()))
    if not os.path.exists(ready):
        open(ready, "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(os.environ["HG_GO"]) and time.monotonic() < deadline:
            time.sleep(0.01)
    time.sleep(0.005)
    return toy_value(config)


def failing(config, *, seed):
    raise RuntimeError("the objective broke")


_calls = 0


def slow_toy(config, *, seed):
    """`toy`, slowed so that workers interleave; with `HG_HANG_AT=k` the k-th call of the
    process writes its pid to `HG_MARKER` and hangs, to be killed in the middle."""
    global _calls
    import os
    import time

    if os.environ.get("HG_HANG_AT") == str(_calls):
        with open(os.environ["HG_MARKER"], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)
    _calls += 1
    time.sleep(0.01)
    return toy_value(config)
