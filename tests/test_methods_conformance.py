"""Conformance suite: every differentiation method on ridge and logistic regression.

Each method must agree with the exact hypergradient (closed form for ridge; a tight
Newton solve plus a dense implicit-function-theorem solve written out here for logistic
regression) and with central finite differences, compose with `jit`, `vmap` and
`jvp`, run in float32, and not retrace when hyperparameter values, the problem's data
or the method and solver objects (equal copies) change.
"""

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import problems
from hypergrad.solvers import Newton, OptaxSolver, run

from ._problems import (
    central_difference,
    count_traces,
    hessian_bound,
    logistic_problem,
    ridge_problem,
)

PROBLEMS = {
    "ridge": lambda dtype=np.float64, seed=0: ridge_problem(dtype=dtype, seed=seed),
    "logistic": lambda dtype=np.float64, seed=0: logistic_problem(dtype=dtype, seed=seed),
    "logistic_per_feature": lambda dtype=np.float64, seed=0: logistic_problem(
        dtype=dtype, seed=seed, per_feature=True
    ),
}

# Gradient descent at step 1/L contracts the error by (1 - mu/L) per step; on these
# problems mu/L >= 0.05, so 800 steps bring the iterate to rounding level.
GD_STEPS = 800


def _gd(problem, steps=GD_STEPS):
    return OptaxSolver(optax.sgd(1.0 / hessian_bound(problem)), max_steps=steps, tol=None)


def _tight(problem):
    del problem
    return Newton(max_steps=50, tol=1e-13)


METHODS = {
    "implicit_cg": (lambda pb: hg.Implicit(hg.CG(tol=1e-13)), _tight),
    "implicit_gmres": (lambda pb: hg.Implicit(hg.GMRES(tol=1e-13)), _tight),
    "implicit_bicgstab": (lambda pb: hg.Implicit(hg.BiCGStab(tol=1e-13)), _tight),
    "implicit_dense": (lambda pb: hg.Implicit(hg.Dense()), _tight),
    # Neumann at step 1/L converges like gradient descent: same number of terms.
    "implicit_neumann": (
        lambda pb: hg.Implicit(hg.Neumann(GD_STEPS, 1.0 / hessian_bound(pb))),
        _tight,
    ),
    "unrolled_reverse": (lambda pb: hg.Unrolled(), _gd),
    "unrolled_checkpointed": (lambda pb: hg.Unrolled(checkpoints=28), _gd),
    "unrolled_forward": (lambda pb: hg.Unrolled(mode="forward"), _gd),
    # Truncating after convergence: the last k steps alone carry the derivative, and
    # k = GD_STEPS / 2 steps contract the neglected part to rounding level.
    "truncated": (lambda pb: hg.Truncated(GD_STEPS // 2), _gd),
}


def exact_hypergradient(problem, hparams):
    """Dense implicit function theorem at a tight Newton solution, written out here
    independently of hypergrad's methods: dL/dh = dL/dh|direct - g^T H^{-1} B."""
    if problem.name == "ridge":
        return problems.ridge_hypergradient(problem, hparams)
    sol = run(
        Newton(max_steps=50, tol=1e-14), problem.inner, problem.init_params, hparams, problem.train
    )
    flat, unravel = jax.flatten_util.ravel_pytree(sol.params)
    inner = lambda x, a: problem.inner(unravel(x), {"alpha": a}, problem.train)  # noqa: E731
    alpha = hparams["alpha"]
    hess = jax.hessian(inner)(flat, alpha)
    cross = jax.jacfwd(jax.grad(inner), argnums=1)(flat, alpha).reshape(flat.size, -1)
    g = jax.grad(lambda x: problem.outer(unravel(x), hparams, problem.val))(flat)
    grad = -g @ np.linalg.solve(hess, cross)
    return {"alpha": grad.reshape(jnp.shape(alpha))}


def _outer(problem, hparams, method, solver):
    return hg.outer_loss(problem, hparams, solver=solver, method=method)


# One jitted function for every method, solver and problem: the method and the solver are
# static arguments, so JAX keys its compiled programs on their configuration (equal
# objects share a program), and the no-retrace test below reuses what the accuracy
# tests compiled instead of compiling a counting wrapper of its own.
VALUE = jax.jit(_outer, static_argnames=("method", "solver"))
GRAD = jax.jit(jax.grad(_outer, argnums=1), static_argnames=("method", "solver"))


def _value_fn(method, solver):
    return functools.partial(_outer, method=method, solver=solver)


@pytest.fixture(scope="module", params=list(PROBLEMS))
def problem_name(request):
    return request.param


# Built once per name, whichever fixture instance asks: the vmap and jvp tests below
# parametrize the problem on their own, and a rebuilt gradient-descent solver (a new
# optax transformation) would be a new static argument, so a new compilation.
@functools.cache
def _problem(name):
    return PROBLEMS[name]()


@functools.cache
def _case(problem_name, method_name):
    make_method, make_solver = METHODS[method_name]
    pb = _problem(problem_name)
    return make_method(pb), make_solver(pb)


@pytest.fixture(scope="module")
def problem(problem_name):
    return _problem(problem_name)


@pytest.fixture(scope="module")
def references(problem):
    """Exact hypergradient and central differences of the tightly solved outer loss."""
    h = problem.hparams
    value = functools.partial(VALUE, method=hg.Implicit(), solver=_tight(problem))
    fd = central_difference(lambda hh: value(problem, hh), h)
    return exact_hypergradient(problem, h), fd


@pytest.fixture(scope="module", params=list(METHODS))
def method_case(request, problem_name):
    method, solver = _case(problem_name, request.param)
    value = _value_fn(method, solver)
    return (
        request.param,
        method,
        solver,
        value,
        functools.partial(GRAD, method=method, solver=solver),
    )


def _rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def test_agrees_with_exact_hypergradient(problem, references, method_case):
    _, _, _, _, grad = method_case
    exact, _ = references
    got = grad(problem, problem.hparams)
    # Inner solves to a gradient norm of 1e-13 (or rounding level for gradient descent)
    # and linear solves to 1e-13 leave errors near 1e-11 relative at these condition
    # numbers (< 30); 1e-7 leaves room for the accumulation of rounding over 800 steps.
    assert _rel_err(got["alpha"], exact["alpha"]) < 1e-7


def test_agrees_with_finite_differences(problem, references, method_case):
    _, _, _, _, grad = method_case
    _, fd = references
    got = grad(problem, problem.hparams)
    # Central differences with step eps^(1/3) are accurate to about 1e-10 relative
    # here (see central_difference); 1e-6 bounds that plus the method's own error.
    assert _rel_err(got["alpha"], fd) < 1e-6


# vmap and jvp transform the method's derivative rule, not the problem: each method is
# checked on the problem whose hyperparameters are a vector (a batch of vectors, a
# direction with several entries), one compiled program per method instead of three.
ONE_PROBLEM = pytest.mark.parametrize("problem_name", ["logistic_per_feature"], indirect=True)


@ONE_PROBLEM
def test_vmap_over_hparams_matches_loop(problem, method_case):
    _, _, _, _, grad = method_case
    scales = jnp.array([0.5, 1.0, 2.0])
    batch = jax.tree.map(lambda a: scales.reshape((3,) + (1,) * a.ndim) * a, problem.hparams)
    batched = jax.jit(jax.vmap(grad, in_axes=(None, 0)))(problem, batch)
    for i in range(3):
        single = grad(problem, jax.tree.map(lambda a, i=i: a[i], batch))
        # vmap changes the order of floating-point reductions, nothing else.
        np.testing.assert_allclose(batched["alpha"][i], single["alpha"], rtol=1e-9, atol=1e-14)


@ONE_PROBLEM
def test_jvp_matches_grad(problem, method_case):
    _, _, _, value, grad = method_case
    h = problem.hparams
    direction = jax.tree.map(lambda a: jnp.linspace(1.0, -1.0, a.size).reshape(a.shape), h)
    _, tangent = jax.jit(lambda hh, d: jax.jvp(lambda x: value(problem, x), (hh,), (d,)))(
        h, direction
    )
    expected = sum(
        jnp.vdot(g, d)
        for g, d in zip(jax.tree.leaves(grad(problem, h)), jax.tree.leaves(direction), strict=True)
    )
    # Forward and reverse mode evaluate the same linear map in a different order.
    np.testing.assert_allclose(tangent, expected, rtol=1e-8)


def test_no_retrace_for_new_values_equal_objects_and_rebuilt_problems(
    problem_name, problem, method_case
):
    """What a library can do to force recompilation: compare its strategy objects by
    identity, or give a rebuilt problem new static parts (fresh closures). A second call
    with new hyperparameter values, a problem rebuilt from other data of the same
    shapes, and copies of the method and the solver must reuse the compiled program."""
    name, method, solver, _, _ = method_case
    GRAD(problem, problem.hparams, method=method, solver=solver)  # compiled once (or cached)
    rebuilt = PROBLEMS[problem_name](seed=1)
    assert not np.allclose(rebuilt.train[0], problem.train[0])  # other data, same shapes
    new_method, new_solver = copy.deepcopy(method), copy.deepcopy(solver)
    assert new_method is not method and new_solver is not solver
    # The new values are made before counting: an eager multiplication traces too.
    calls = [
        (pb, jax.tree.map(lambda a, s=scale: s * a, pb.hparams))
        for pb in (problem, rebuilt)
        for scale in (2.0, 0.7)
    ]
    with count_traces() as traces:
        for pb, h in calls:
            g = GRAD(pb, h, method=new_method, solver=new_solver)
    assert len(traces) == 0, (name, len(traces))
    assert np.all(np.isfinite(g["alpha"]))


@pytest.mark.parametrize("method_name", ["implicit_cg", "unrolled_reverse", "unrolled_forward"])
def test_float32_runs_finite_and_keeps_dtype(method_name):
    pb = ridge_problem(dtype=np.float32)
    make_method, make_solver = METHODS[method_name]
    # Float32 cannot reach the float64 tolerances above; solve to what it can resolve.
    solver = Newton(max_steps=5, tol=1e-5) if make_solver is _tight else make_solver(pb)
    method = hg.Implicit(hg.CG(tol=1e-6)) if method_name == "implicit_cg" else make_method(pb)
    grad = GRAD(pb, pb.hparams, method=method, solver=solver)
    assert grad["alpha"].dtype == jnp.float32
    assert np.all(np.isfinite(grad["alpha"]))
    exact = problems.ridge_hypergradient(
        ridge_problem(), {"alpha": jnp.asarray(pb.hparams["alpha"], jnp.float64)}
    )
    # Float32 rounding (eps 1e-7) amplified by the condition number (< 30).
    assert _rel_err(grad["alpha"], exact["alpha"]) < 1e-4


@pytest.mark.parametrize("k", [2, 8])
def test_truncated_short_of_the_run_has_its_predicted_bias(k):
    """Truncated(k) with k far below the run's length differentiates only the last k
    gradient steps `w <- w - lr (H w - c(alpha))` from a converged iterate w*: its
    Jacobian is `-lr sum_{j<k} (I - lr H)^j B` with `B = d grad / d alpha = w*` on ridge,
    instead of the exact `-H^{-1} B`. Written out here with dense numpy."""
    pb = ridge_problem()
    solver = _gd(pb)  # GD_STEPS steps at 1/L: converged to rounding level
    lr = 1.0 / hessian_bound(pb)
    got = GRAD(pb, pb.hparams, method=hg.Truncated(k), solver=solver)["alpha"]

    X = np.asarray(pb.train[0])
    alpha = float(pb.hparams["alpha"])
    hess = X.T @ X / X.shape[0] + alpha * np.eye(X.shape[1])
    w = np.asarray(problems.ridge_solution(pb, pb.hparams))
    g_val = np.asarray(jax.grad(pb.outer)(jnp.asarray(w), pb.hparams, pb.val))
    step = np.eye(len(w)) - lr * hess
    jac = -lr * sum(np.linalg.matrix_power(step, j) for j in range(k)) @ w
    want = g_val @ jac
    exact = float(problems.ridge_hypergradient(pb, pb.hparams)["alpha"])
    # Both sides evaluate the same finite sum; the iterate differs from w* at rounding
    # level after GD_STEPS steps.
    assert abs(float(got) - want) < 1e-9 * abs(exact)
    # And the bias is real: far from the exact hypergradient at these k (the neglected
    # part is g_val (I - lr H)^k H^{-1} w*, which shrinks geometrically in k: by k = 40
    # it is below 1e-7 relative on this problem, so short truncations are the test).
    assert abs(want - exact) > 1e-3 * abs(exact)


@pytest.mark.parametrize("linear_solver", [hg.GMRES(tol=1e-13), hg.BiCGStab(tol=1e-13), hg.Dense()])
def test_nonsymmetric_condition_through_solve_and_hypergradient(linear_solver):
    """A user's condition with a non-symmetric Jacobian: reverse mode and
    `hypergradient`'s adjoint must solve with its transpose (a solve with the Jacobian
    itself passed every other test: the library's own conditions are all symmetric).
    `F(p, h) = A (S p - h)`, A not symmetric, vanishes where the quadratic
    `p^T S p / 2 - h^T p` is minimal, at `p* = S^{-1} h`, so `d(c^T p*)/dh = S^{-1} c`
    whatever A; solving with `A S` instead of its transpose gives `A^T S^{-1} A^{-1} c`."""
    rng = np.random.default_rng(3)
    M = rng.standard_normal((4, 4))
    S = jnp.asarray(M @ M.T + 4 * np.eye(4))
    A = jnp.asarray(np.eye(4) + np.triu(rng.standard_normal((4, 4)), 1))  # invertible
    c = jnp.asarray(rng.standard_normal(4))
    cond = hg.methods.OptimalityCondition(
        residual=lambda p, h, a: A @ (S @ p - h["b"]), symmetric=False
    )

    def fun(p, h, a):
        return 0.5 * p @ S @ p - h["b"] @ p

    def criterion(b):
        sol = hg.solve(
            fun,
            jnp.zeros(4),
            {"b": b},
            solver=Newton(max_steps=20, tol=1e-14),
            method=hg.Implicit(linear_solver),
            optimality=cond,
        )
        return c @ sol.params

    b = jnp.asarray(rng.standard_normal(4))
    expected = np.linalg.solve(np.asarray(S), np.asarray(c))
    np.testing.assert_allclose(jax.grad(criterion)(b), expected, rtol=1e-9)
    # Forward mode solves with the Jacobian itself: the same derivative, one direction.
    e0 = jnp.eye(4)[0]
    np.testing.assert_allclose(jax.jvp(criterion, (b,), (e0,))[1], expected[0], rtol=1e-9)
    # hypergradient's adjoint system is the transposed one, solved explicitly.
    problem = hg.BilevelProblem(
        inner=fun,
        outer=lambda p, h, a: c @ p,
        init_params=jnp.zeros(4),
        hparams={"b": b},
        train=None,
        val=None,
        optimality=cond,
        solver=Newton(max_steps=20, tol=1e-14),
        method=hg.Implicit(linear_solver),
    )
    np.testing.assert_allclose(hg.hypergradient(problem, {"b": b}).grad["b"], expected, rtol=1e-9)
