"""The learning-rate case: a hyperparameter that only the inner solver reads.

Unrolled differentiation (both modes) must agree with finite differences; implicit
differentiation must refuse instead of returning zero.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import problems
from hypergrad.solvers import OptaxSolver

from ._problems import central_difference, ridge_problem

STEPS = 30  # few enough that the result still depends on the learning rate


@pytest.fixture(scope="module")
def ridge_sgd():
    pb = ridge_problem()
    solver = OptaxSolver(lambda h: optax.sgd(h["lr"]), max_steps=STEPS, tol=None)
    h = {"alpha": pb.hparams["alpha"], "lr": jnp.asarray(0.2)}
    return pb, solver, h


def _value(pb, solver, method):
    return jax.jit(lambda h: hg.outer_loss(pb, h, solver=solver, method=method))


@pytest.mark.parametrize(
    "method",
    [hg.Unrolled(), hg.Unrolled(mode="forward"), hg.Unrolled(checkpoints=5)],
    ids=["reverse", "forward", "checkpointed"],
)
def test_unrolled_learning_rate_matches_finite_differences(ridge_sgd, method):
    pb, solver, h = ridge_sgd
    value = _value(pb, solver, method)
    grad = jax.jit(jax.grad(lambda hh: value(hh)))(h)
    for leaf in ("lr", "alpha"):
        fd = central_difference(value, h, leaf=leaf)
        # Central differences are accurate to ~1e-10 relative (step eps^(1/3)); the
        # unrolled derivative is exact for the 30-step map up to rounding.
        np.testing.assert_allclose(grad[leaf], fd, rtol=1e-7)
    assert abs(float(grad["lr"])) > 1e-3  # the learning rate does matter here


def test_implicit_refuses_learning_rate(ridge_sgd):
    pb, solver, h = ridge_sgd
    value = lambda hh: hg.outer_loss(pb, hh, solver=solver, method=hg.Implicit())  # noqa: E731
    with pytest.raises(ValueError, match=r"hparams\['lr'\].*Unrolled"):
        jax.grad(value)(h)
    with pytest.raises(ValueError, match=r"hparams\['lr'\].*Unrolled"):
        jax.jvp(value, (h,), (jax.tree.map(jnp.ones_like, h),))
    with pytest.raises(ValueError, match=r"hparams\['lr'\].*Unrolled"):
        hg.hypergradient(pb, h, solver=solver, method=hg.Implicit())


def test_implicit_refuses_learning_rate_under_jit_and_vmap(ridge_sgd):
    # The refusal happens while tracing, so it must survive the transformations a user
    # wraps around the derivative, not only eager calls.
    pb, solver, h = ridge_sgd
    value = lambda hh: hg.outer_loss(pb, hh, solver=solver, method=hg.Implicit())  # noqa: E731
    batch = jax.tree.map(lambda a: jnp.stack([a, 1.5 * a]), h)
    hyper = lambda hh: hg.hypergradient(pb, hh, solver=solver, method=hg.Implicit()).grad  # noqa: E731
    for transformed, arg in (
        (jax.jit(jax.grad(value)), h),
        (jax.vmap(jax.grad(value)), batch),
        (jax.jit(jax.vmap(jax.grad(value))), batch),
        (jax.jit(hyper), h),
        (jax.vmap(hyper), batch),
    ):
        with pytest.raises(ValueError, match=r"hparams\['lr'\].*Unrolled"):
            transformed(arg)


def test_implicit_still_differentiates_the_other_hparams(ridge_sgd):
    """Closing over the learning rate leaves a derivative implicit methods can take."""
    pb, _, h = ridge_sgd
    solver = OptaxSolver(lambda hh: optax.sgd(hh["lr"]), max_steps=2000, tol=1e-12)
    lr = h["lr"]
    grad = jax.grad(
        lambda a: hg.outer_loss(pb, {"alpha": a, "lr": lr}, solver=solver, method=hg.Implicit())
    )(h["alpha"])
    exact = problems.ridge_hypergradient(pb, {"alpha": h["alpha"]})["alpha"]
    # Inner tolerance 1e-12 on the gradient norm bounds the error far below 1e-7.
    np.testing.assert_allclose(grad, exact, rtol=1e-7)


def test_mlp_digits_learning_rate_and_weight_decay():
    pb = problems.mlp_digits(hidden=8, steps=20)
    value = jax.jit(lambda h: hg.outer_loss(pb, h, method=hg.Unrolled()))
    grad = jax.jit(jax.grad(value))(pb.hparams)
    fwd = jax.jit(jax.grad(lambda h: hg.outer_loss(pb, h, method=hg.Unrolled(mode="forward"))))(
        pb.hparams
    )
    for leaf in ("learning_rate", "weight_decay"):
        fd = central_difference(value, pb.hparams, leaf=leaf, rel_step=1e-4)
        # Float64 MLP; step 1e-4 relative leaves truncation error ~1e-8 relative.
        np.testing.assert_allclose(grad[leaf], fd, rtol=1e-5)
        np.testing.assert_allclose(fwd[leaf], grad[leaf], rtol=1e-9)
