"""`hypergrad methods` runs end to end and its methods agree with an independent reference:
central differences of the tightly solved validation loss in log(alpha)."""

import jax
import jax.numpy as jnp
import pytest

from hypergrad.cli import main
from hypergrad.cli._methods import run_methods
from hypergrad.methods import solve
from hypergrad.problems import load, logistic
from hypergrad.solvers import Newton

from ._problems import central_difference


@pytest.fixture(scope="module")
def table():
    lines = []
    rows = run_methods(out=lines.append)
    return {r["method"]: r for r in rows}, lines


def _finite_difference(alpha=1e-2, seed=0):
    """d validation loss / d log(alpha) by central differences of the loss at a Newton
    solve to gradient norm 1e-14: no differentiation method takes part."""
    data = load("breast_cancer", seed=seed)
    pb = logistic(data.X_train, data.y_train, data.X_val, data.y_val, alpha=alpha)
    solver = Newton(max_steps=50, tol=1e-14)

    @jax.jit
    def loss(h):
        hp = {"alpha": jnp.exp(h["log_alpha"])}
        params = solve(pb.inner, pb.init_params, hp, pb.train, solver=solver).params
        return pb.outer(params, hp, pb.val)

    return float(central_difference(loss, {"log_alpha": jnp.log(alpha)}, leaf="log_alpha"))


def test_methods_table_rows(table):
    by_name, lines = table
    fd = _finite_difference()
    # Central differences are accurate to ~1e-10 relative (step eps^(1/3)); Newton to
    # gradient norm 1e-12 and linear solves to 1e-10 relative leave the exact implicit
    # methods and the converged unrolls far below 1e-7 from it.
    for name in ("Implicit(CG)", "Implicit(Dense)", "Unrolled(reverse)", "Unrolled(forward)"):
        row = by_name[name]
        assert abs(row["hypergradient"] - fd) < 1e-7 * abs(fd), (name, row, fd)
        assert row["relative_error"] < 1e-7, name
    # The command's own error column is measured against a correct reference: the
    # Identity row's error, recomputed from the finite difference, is the one printed.
    identity = by_name["Implicit(Identity)"]
    assert identity["relative_error"] == pytest.approx(
        abs(identity["hypergradient"] - fd) / abs(fd), rel=1e-5
    )
    # The one-step approximation is an approximation: it must show a visible error.
    assert identity["relative_error"] > 1e-2
    assert any("Implicit(CG)" in line for line in lines)


def test_methods_rejects_bad_alpha():
    with pytest.raises(SystemExit, match="--alpha must be positive"):
        main(["methods", "--alpha", "-1"])
