"""HOAG's safeguard, read from a run's public history: a rejected step is retried from
the last accepted point along the same gradient at half the step size, so the next move
from that point is exactly half the rejected move where the trust region (`max_move`)
clipped neither (Pedregosa 2016, Algorithm 1's
backtracking; hypergrad.tune.hoag's module docstring, step 3). With two hyperparameters
(the elastic net's): with one, HOAG steps inside a bracket instead (test_hoag)."""

import numpy as np

from hypergrad import problems
from hypergrad.tune import hoag


def test_a_rejected_step_is_retried_at_half_the_step():
    X, y = problems.synthetic_regression(100, 30, noise=0.3, correlation=0.5, seed=3)
    X, y = X - X.mean(0), y - y.mean()
    pr = problems.elastic_net(X[:60], y[:60], X[60:], y[60:], tol=1e-10)
    res = hoag(pr, max_iter=20)
    theta = [np.log([h["hparams"]["alpha1"], h["hparams"]["alpha2"]]) for h in res.history]
    accepted = [bool(h["accepted"]) for h in res.history]
    assert accepted[0]
    checked = 0
    anchor = theta[0]
    for k in range(1, len(theta) - 1):
        if accepted[k]:
            anchor = theta[k]
        else:
            rejected_move = theta[k] - anchor
            next_move = theta[k + 1] - anchor
            # Same anchor and anchor gradient, half the step: the same direction, half
            # as far (up to rounding in log space), each coordinate's move clipped to
            # max_move (1.0) after the halving. So twice the next move, clipped, is the
            # rejected move: exactly twice where neither was clipped.
            np.testing.assert_allclose(
                np.clip(2 * next_move, -1.0, 1.0), rejected_move, rtol=1e-9, atol=1e-12
            )
            checked += 1
    assert checked >= 2, (theta, accepted)  # the run does reject steps
