"""Reverse-mode unrolls store the iterates, not the training data, once per step.

The compiled program's scratch memory is read from XLA (`memory_analysis`), so the test
checks what the compiler allocates, independently of timing or the machine's load.
"""

import jax
import optax
import pytest

import hypergrad as hg
from hypergrad import problems
from hypergrad.solvers import OptaxSolver


def _temp_bytes(pb, steps, method):
    solver = OptaxSolver(optax.sgd(1e-3), max_steps=steps, tol=0.0)
    grad = jax.jit(jax.grad(lambda h: hg.outer_loss(pb, h, solver=solver, method=method)))
    analysis = grad.lower(pb.hparams).compile().memory_analysis()
    if analysis is None:
        pytest.skip("this backend reports no memory analysis")
    return analysis.temp_size_in_bytes


@pytest.mark.parametrize("checkpoints", [None, 20], ids=["plain", "checkpointed"])
def test_unrolled_reverse_memory_scales_with_iterates_not_data(checkpoints):
    n, p, steps = 400, 100, 400
    X, y = problems.synthetic_regression(2 * n, p, seed=0)
    pb = problems.ridge(X[:n], y[:n], X[n:], y[n:], alpha=1.0)
    method = hg.Unrolled(checkpoints=checkpoints)
    used = _temp_bytes(pb, steps, method)
    iterates = steps * p * X.dtype.itemsize
    data_per_step = steps * n * p * X.dtype.itemsize
    # Plain reverse mode keeps each iterate (and a few vectors of its size) per step;
    # checkpointing keeps fewer. Saving the data once per step would be 400x more.
    assert used < 8 * iterates, (used, iterates)
    assert used < data_per_step / 50, (used, data_per_step)
