"""Reverse-mode unrolls store the iterates, not the training data, once per step; with
`k` checkpoints they store about `k + steps / k` solver states, `2 sqrt(steps)` at best.

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


N, P, STEPS = 400, 100, 400


@pytest.fixture(scope="module")
def temp_bytes():
    """Scratch bytes of the compiled reverse-mode hypergradient, by number of checkpoints
    (None: plain reverse mode), in units of one iterate (P float64 numbers)."""
    X, y = problems.synthetic_regression(2 * N, P, seed=0)
    pb = problems.ridge(X[:N], y[:N], X[N:], y[N:], alpha=1.0)
    iterate = P * X.dtype.itemsize
    return {k: _temp_bytes(pb, STEPS, hg.Unrolled(checkpoints=k)) / iterate for k in (None, 20, 80)}


def test_plain_reverse_mode_stores_one_iterate_per_step_not_the_data(temp_bytes):
    used = temp_bytes[None]
    # The trajectory: at least one iterate per step, and a few vectors of its size on top,
    # not the N x P training data once per step (N = 400 times more).
    assert STEPS <= used < 2 * STEPS, used


def test_checkpointing_stores_about_two_sqrt_steps_states(temp_bytes):
    # k segments keep k segment starts plus one segment's STEPS / k states in the backward
    # pass. A solver state holds the iterate and its gradient (two vectors), so the bound
    # in vectors is 2 (k + STEPS / k) plus a few work vectors: 2 * 40 + 10 at k = 20 =
    # sqrt(STEPS), where k + STEPS / k is smallest (2 sqrt(STEPS) states, as the README says).
    k = 20
    assert temp_bytes[k] <= 2 * (k + STEPS / k) + 10, temp_bytes
    assert temp_bytes[k] < temp_bytes[None] / 4, temp_bytes
    # Past sqrt(STEPS) the checkpoints themselves cost memory: k = 80 stores more.
    assert temp_bytes[80] > 1.5 * temp_bytes[k], temp_bytes
