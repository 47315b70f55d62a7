"""Shared pieces of the experiments: the results file and minibatch training loops.

Each experiment is `python -m experiments.NAME` and writes `experiments/results/NAME.json`
with the machine (CPU, devices, versions, from the benchmark harness), the date, the
settings and the figures.
"""

import datetime
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._harness import machine

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, jax.Array | np.ndarray | np.generic):
        x = np.asarray(x)
        return x.item() if x.ndim == 0 else x.tolist()
    return x


def write_results(name: str, payload: dict, started: float) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = {
        "experiment": name,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started, 1),
        "machine": machine(),
        **_plain(payload),
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path


def train_minibatch(loss, params, train, tx, steps: int, batch: int, key):
    """`steps` optax steps of `loss(params, (X, y))` on minibatches drawn with `key`.

    Returns the final params and the final optimizer state.
    """
    X, y = train
    n = X.shape[0]

    def body(carry, k):
        p, s = carry
        idx = jax.random.choice(k, n, (batch,), replace=False)
        g = jax.grad(loss)(p, (X[idx], y[idx]))
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, state), _ = jax.lax.scan(body, (params, tx.init(params)), jax.random.split(key, steps))
    return params, state


def softmax_xent(logits, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
