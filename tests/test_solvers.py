"""Inner solvers: they find the minimizer, report their status, and warm-start."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import hypergrad as hg
from hypergrad import problems
from hypergrad.solvers import FISTA, L1, LBFGS, Newton, OptaxSolver, Status, run

from ._problems import logistic_problem, ridge_problem


@pytest.fixture(scope="module")
def ridge():
    return ridge_problem()


@pytest.mark.parametrize(
    "solver",
    [
        Newton(max_steps=1),
        LBFGS(tol=1e-10),
        OptaxSolver(optax.sgd(0.2), max_steps=5000, tol=1e-10),
        OptaxSolver(optax.adam(0.05), max_steps=20000, tol=1e-8),
    ],
    ids=["newton", "lbfgs", "sgd", "adam"],
)
def test_solvers_reach_the_closed_form_ridge_solution(ridge, solver):
    sol = jax.jit(lambda pb: run(solver, pb.inner, pb.init_params, pb.hparams, pb.train))(ridge)
    assert Status.name(sol.status) == "converged"
    exact = problems.ridge_solution(ridge, ridge.hparams)
    # Strong convexity mu >= alpha = 0.5 turns a gradient norm g into a distance <= g / mu.
    assert float(jnp.linalg.norm(sol.params - exact)) <= 2 * float(solver.tol) / 0.5 + 1e-12


def test_lbfgs_solves_logistic_to_its_tolerance():
    pb = logistic_problem()
    sol = run(LBFGS(tol=1e-10), pb.inner, pb.init_params, pb.hparams, pb.train)
    tight = run(Newton(tol=1e-14), pb.inner, pb.init_params, pb.hparams, pb.train)
    assert Status.name(sol.status) == "converged"
    assert float(sol.stats["grad_norm"]) <= 1e-10
    # Distance <= grad_norm / mu, mu >= alpha... except along the unpenalized intercept,
    # whose curvature is mean sigmoid'(z) > 0.1 on this data: 1e-8 bounds both.
    np.testing.assert_allclose(sol.params["w"], tight.params["w"], atol=1e-8)


# Non-convex objectives, where Armijo's rule alone can accept a step of negative
# curvature (s.y < 0); the cautious update keeps such a pair out of the memory. The
# double well sum(w^4/4 - w^2/2) started in its concave middle (|w| < 1/sqrt(3)) has
# stationary points at -1, 0 and 1 per coordinate, and only +-1 are minima; Rosenbrock's
# valley from the classic start (-1.2, 1) bends through regions of negative curvature.
NONCONVEX = {
    "double-well": (
        lambda w, h, a: jnp.sum(0.25 * w**4 - 0.5 * w**2),
        jnp.array([0.1, -0.2, 0.3]),
        np.array([1.0, -1.0, 1.0]),
    ),
    "rosenbrock": (
        lambda w, h, a: (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2,
        jnp.array([-1.2, 1.0]),
        np.array([1.0, 1.0]),
    ),
}


@pytest.mark.parametrize("case", NONCONVEX)
def test_lbfgs_reaches_the_minimum_of_nonconvex_objectives(case):
    fun, start, minimum = NONCONVEX[case]
    sol = run(LBFGS(tol=1e-10), fun, start, None)
    assert Status.name(sol.status) == "converged"
    # Both minima are nondegenerate (Hessian eigenvalues >= 2 and >= 0.39): a gradient
    # norm of 1e-10 puts the point within 1e-9 of the minimum.
    np.testing.assert_allclose(sol.params, minimum, atol=1e-8)
    assert int(sol.stats["num_steps"]) < 100


def test_lbfgs_step_decreases_the_objective_by_armijos_rule():
    # Each accepted step decreases f by at least 1e-4 t |g.d| > 0: the values along a run
    # of single steps never increase, on the logistic objective as on Rosenbrock.
    fun, start, _ = NONCONVEX["rosenbrock"]
    solver = LBFGS(tol=1e-12)
    state = solver.init(fun, start, None, None)
    step = jax.jit(lambda p, s: solver.step(fun, p, s, None, None))
    params, values = start, [float(state.value)]
    for _ in range(30):
        params, state = step(params, state)
        values.append(float(state.value))
        assert values[-1] == pytest.approx(float(fun(params, None, None)), rel=1e-12)
    assert all(b < a for a, b in zip(values, values[1:], strict=False) if a > 1e-12)
    assert values[-1] < 1e-3 * values[0]


def test_warm_start_from_the_solution_takes_no_steps(ridge):
    solver = OptaxSolver(optax.sgd(0.2), max_steps=5000, tol=1e-10)
    cold = run(solver, ridge.inner, ridge.init_params, ridge.hparams, ridge.train)
    warm = run(solver, ridge.inner, cold.params, ridge.hparams, ridge.train)
    assert int(cold.stats["num_steps"]) > 10
    assert int(warm.stats["num_steps"]) == 0
    nearby = {"alpha": ridge.hparams["alpha"] * 1.05}
    from_cold = run(solver, ridge.inner, ridge.init_params, nearby, ridge.train)
    from_warm = run(solver, ridge.inner, cold.params, nearby, ridge.train)
    assert int(from_warm.stats["num_steps"]) < int(from_cold.stats["num_steps"])


def test_newton_forms_no_hessian_outside_its_loop(ridge):
    # A quadratic's Hessian does not depend on the parameters: XLA would hoist it (a
    # p x p product and its Cholesky) out of the solver's while loop and pay for it even
    # when a warm start at the solution takes no step. The entry computation of the
    # compiled run must hold no p x p product and no factorization.
    f = jax.jit(lambda pr, h, w: run(Newton(max_steps=1), pr.inner, w, h, pr.train).params)
    text = f.lower(ridge, ridge.hparams, ridge.init_params).compile().as_text()
    entry = text[text.index("\nENTRY") :]
    entry = entry[: entry.index("\n}")]
    p = ridge.init_params.shape[0]
    square = [line for line in entry.splitlines() if f"[{p},{p}]" in line]
    assert not [line for line in square if " dot(" in line or "custom-call(" in line]
    # The loop itself still forms it: one step from zero is the closed form.
    np.testing.assert_allclose(
        f(ridge, ridge.hparams, ridge.init_params),
        problems.ridge_solution(ridge, ridge.hparams),
        rtol=1e-8,
    )


def _counted_adjoint(problem, solver, sol, b, *, preconditioned):
    """The implicit adjoint solve at `sol` by CG, run eagerly (`jax.disable_jit`), with
    the number of products with the system; preconditioned by `solver`'s final state or
    not (`Implicit(precondition=False)`)."""
    from hypergrad import CG, Implicit
    from hypergrad.methods._optimality import stationarity

    opt = stationarity(problem.inner)
    calls = []

    def residual(params, hparams, args):
        # Each evaluation, not each trace (jax.scipy's CG runs a traced loop).
        jax.debug.callback(lambda: calls.append(None))
        return opt.residual(params, hparams, args)

    counted = opt._replace(residual=residual)
    with jax.disable_jit():
        x = Implicit(CG(tol=1e-12), precondition=preconditioned).linear_solve(
            counted,
            sol.params,
            problem.hparams,
            problem.train,
            b,
            transpose=True,
            solver=solver,
            state=sol.state,
        )
    return x, len(calls)


@pytest.mark.parametrize("name", ["ridge", "logistic"])
def test_newtons_factor_preconditions_the_implicit_solve(name):
    """Newton's last Cholesky factor preconditions implicit differentiation's conjugate
    gradients: on ridge (a quadratic: the factor is the Hessian's) the solve ends after
    one step, on logistic regression (the Hessian one step before the solution) after a
    few; the adjoint equals the dense solve with the closed-form Hessian."""
    if name == "ridge":
        pb = ridge_problem(p=12, alpha=1e-3)
    else:
        pb = logistic_problem(p=12, alpha=1e-3)
    solver = Newton(tol=1e-12)
    sol = run(solver, pb.inner, pb.init_params, pb.hparams, pb.train)
    assert Status.name(sol.status) == "converged"
    X, y = (np.asarray(a) for a in pb.train)
    n, alpha = X.shape[0], float(pb.hparams["alpha"])
    if name == "ridge":
        H = X.T @ X / n + alpha * np.eye(X.shape[1])
    else:  # mean log-loss + alpha/2 |w|^2; flat parameters (b, w), b unpenalized
        Xb = np.hstack([np.ones((n, 1)), X])
        z = Xb @ np.concatenate([[float(sol.params["b"])], np.asarray(sol.params["w"])])
        s = 1 / (1 + np.exp(-z))
        H = Xb.T @ (Xb * (s * (1 - s))[:, None]) / n + np.diag([0.0] + [alpha] * X.shape[1])
    b = np.random.default_rng(0).standard_normal(H.shape[0])
    exact = np.linalg.solve(H, b)
    unravel = ravel_pytree(sol.params)[1]
    found = {}
    for pre in (True, False):
        x, count = _counted_adjoint(pb, solver, sol, unravel(jnp.asarray(b)), preconditioned=pre)
        found[pre] = (np.asarray(ravel_pytree(x)[0]), count)
    (x, products), (x_plain, plain) = found[True], found[False]
    for got in (x, x_plain):
        np.testing.assert_allclose(got, exact, rtol=1e-8, atol=1e-10 * np.abs(exact).max())
    # One product for the starting residual, one per step.
    assert products <= (2 if name == "ridge" else 4) < plain


def test_fixed_step_budget_reports_steps_done_after_exactly_max_steps(ridge):
    solver = OptaxSolver(optax.sgd(0.01), max_steps=7, tol=None)
    sol = run(solver, ridge.inner, ridge.init_params, ridge.hparams, ridge.train)
    assert int(sol.stats["num_steps"]) == 7
    assert Status.name(sol.status) == "steps_done"


def test_max_steps_status(ridge):
    solver = OptaxSolver(optax.sgd(0.01), max_steps=7, tol=1e-12)
    sol = run(solver, ridge.inner, ridge.init_params, ridge.hparams, ridge.train)
    assert Status.name(sol.status) == "max_steps"


def test_diverging_solve_reports_diverged_and_throw_raises(ridge):
    solver = OptaxSolver(optax.sgd(10.0), max_steps=1000, tol=1e-10)  # step far above 2/L
    sol = hg.solve(ridge.inner, ridge.init_params, ridge.hparams, ridge.train, solver=solver)
    assert Status.name(sol.status) == "diverged"
    assert int(sol.stats["num_steps"]) < 1000  # it stops early instead of running on
    with pytest.raises(RuntimeError, match="diverged"):
        hg.solve(
            ridge.inner, ridge.init_params, ridge.hparams, ridge.train, solver=solver, throw=True
        )
    jitted = jax.jit(
        lambda h: (
            hg.solve(
                ridge.inner, ridge.init_params, h, ridge.train, solver=solver, throw=True
            ).params
        )
    )
    with pytest.raises(Exception, match="diverged"):
        jax.block_until_ready(jitted(ridge.hparams))


def test_nonfinite_objective_reports_nonfinite():
    fun = lambda w, h, a: jnp.sum(jnp.log(w - h))  # noqa: E731  (NaN once w < h)
    sol = run(OptaxSolver(optax.sgd(1.0), 100, 1e-8), fun, jnp.array([1.0]), 0.5)
    assert Status.name(sol.status) == "nonfinite"


def test_hypergradient_warm_starts_give_the_same_answer(ridge):
    h = ridge.hparams
    solver = OptaxSolver(optax.sgd(0.2), max_steps=5000, tol=1e-12)
    first = hg.hypergradient(ridge, h, solver=solver, method=hg.Implicit(hg.CG(tol=1e-12)))
    nearby = {"alpha": h["alpha"] * 1.01}
    cold = hg.hypergradient(ridge, nearby, solver=solver, method=hg.Implicit(hg.CG(tol=1e-12)))
    warm = hg.hypergradient(
        ridge,
        nearby,
        solver=solver,
        method=hg.Implicit(hg.CG(tol=1e-12)),
        init_params=first.solution.params,
        init_adjoint=first.adjoint,
    )
    exact = problems.ridge_hypergradient(ridge, nearby)["alpha"]
    np.testing.assert_allclose(warm.grad["alpha"], exact, rtol=1e-8)
    np.testing.assert_allclose(cold.grad["alpha"], exact, rtol=1e-8)
    assert int(warm.solution.stats["num_steps"]) < int(cold.solution.stats["num_steps"])


# -- every solver family reports its failures -------------------------------------------
# Objectives whose failure is known in advance: on |w|^1.2 Newton's step w - f'/f'' lands
# on -4w (the value grows 4^1.2 times per step: diverged); on w^1.2 the same step leaves
# the domain (NaN: nonfinite). L-BFGS on -w^4/4 is unbounded below with a gradient that
# grows as w^3 (diverged: its line search backtracks from non-finite values, so it
# reports divergence on -exp(w^2) too); log(w - 2) is NaN at its start w = 1
# (nonfinite, before any step). FISTA at
# step 1/L with L 100 times too small multiplies the error by 99 per step (diverged),
# and on sqrt(x + 1) it steps past x = -1 (nonfinite). Each stops early: a failed solve
# must not run on to max_steps.
FAILURES = {
    "newton-diverged": (Newton(), lambda w, h, a: jnp.sum(jnp.abs(w) ** 1.2), "diverged"),
    "newton-nonfinite": (Newton(), lambda w, h, a: jnp.sum(w**1.2), "nonfinite"),
    "lbfgs-diverged": (LBFGS(), lambda w, h, a: -0.25 * jnp.sum(w**4), "diverged"),
    "lbfgs-overflow": (LBFGS(), lambda w, h, a: -jnp.sum(jnp.exp(w**2)), "diverged"),
    "lbfgs-nonfinite": (LBFGS(), lambda w, h, a: jnp.sum(jnp.log(w - 2.0)), "nonfinite"),
    "fista-diverged": (
        FISTA(L1("alpha"), lipschitz=0.01),
        lambda w, h, a: 0.5 * jnp.sum((w - 2.0) ** 2),
        "diverged",
    ),
    "fista-nonfinite": (
        FISTA(L1("alpha"), lipschitz=1.0),
        lambda w, h, a: jnp.sum(jnp.sqrt(w + 1.0)),
        "nonfinite",
    ),
}


@pytest.mark.parametrize("case", FAILURES)
def test_solver_failure_statuses(case):
    solver, fun, expected = FAILURES[case]
    h = {"alpha": 0.0}
    sol = run(solver, fun, jnp.ones(2), h)
    assert Status.name(sol.status) == expected
    assert int(sol.stats["num_steps"]) < 20 < solver.max_steps
    with pytest.raises(RuntimeError, match=f"status '{expected}'"):
        hg.solve(fun, jnp.ones(2), h, solver=solver, throw=True)


@pytest.mark.parametrize(
    "solver",
    [Newton(max_steps=1, tol=1e-14), LBFGS(max_steps=2, tol=1e-14)],
    ids=["newton", "lbfgs"],
)
def test_solvers_stop_at_max_steps_on_logistic(solver):
    # One Newton step or two L-BFGS steps from zero cannot reach a gradient norm of
    # 1e-14 on logistic regression (the Newton iteration needs about six).
    pb = logistic_problem()
    sol = run(solver, pb.inner, pb.init_params, pb.hparams, pb.train)
    assert Status.name(sol.status) == "max_steps"
    assert int(sol.stats["num_steps"]) == solver.max_steps


def test_fista_stops_at_max_steps_on_lasso():
    X, y = problems.synthetic_regression(40, 8, seed=0)
    fun = lambda w, h, a: 0.5 * jnp.mean((a[0] @ w - a[1]) ** 2)  # noqa: E731
    lipschitz = float(np.linalg.norm(X, 2) ** 2 / X.shape[0])
    solver = FISTA(L1("alpha"), max_steps=3, tol=1e-14, lipschitz=lipschitz)
    sol = run(solver, fun, jnp.zeros(8), {"alpha": 0.01}, (X, y))
    assert Status.name(sol.status) == "max_steps"
    assert int(sol.stats["num_steps"]) == 3


# -- throw=True through the problem-level entry points, eagerly and under jit / vmap ---


def _nonfinite_problem():
    # log(w - alpha) from w = 1 with alpha = 0.5: the first SGD step (gradient 2) lands on
    # w = -1, outside the domain.
    return hg.BilevelProblem(
        inner=lambda w, h, a: jnp.sum(jnp.log(w - h["alpha"])),
        outer=lambda w, h, a: jnp.sum(w**2),
        init_params=jnp.array([1.0]),
        train=None,
        val=None,
        hparams={"alpha": jnp.asarray(0.5)},
        solver=OptaxSolver(optax.sgd(1.0), max_steps=100, tol=1e-8),
    )


def test_throw_through_outer_loss_and_hypergradient(ridge):
    short = OptaxSolver(optax.sgd(0.01), max_steps=7, tol=1e-12)  # cannot converge in 7
    for method in (hg.Implicit(), hg.Unrolled()):
        with pytest.raises(RuntimeError, match="status 'max_steps'"):
            hg.outer_loss(ridge, ridge.hparams, solver=short, method=method, throw=True)
        with pytest.raises(RuntimeError, match="status 'max_steps'"):
            hg.hypergradient(ridge, ridge.hparams, solver=short, method=method, throw=True)
        # Without throw the same calls report instead of raising.
        out = hg.hypergradient(ridge, ridge.hparams, solver=short, method=method)
        assert Status.name(out.solution.status) == "max_steps"
    bad = _nonfinite_problem()
    with pytest.raises(RuntimeError, match="status 'nonfinite'"):
        hg.outer_loss(bad, bad.hparams, throw=True)
    with pytest.raises(RuntimeError, match="status 'nonfinite'"):
        hg.hypergradient(bad, bad.hparams, throw=True)


def test_throw_under_jit_and_vmap(ridge):
    short = OptaxSolver(optax.sgd(0.01), max_steps=7, tol=1e-12)
    ok = Newton(max_steps=1)  # one step is the closed form on ridge: converged

    def loss(a, solver):
        return hg.outer_loss(ridge, {"alpha": a}, solver=solver, throw=True)

    alphas = jnp.array([0.3, 0.5, 2.0])
    batched = jax.jit(jax.vmap(loss, in_axes=(0, None)), static_argnums=1)
    # A converged batch passes and computes the closed-form losses...
    want = []
    for a in np.asarray(alphas, dtype=float):
        h = {"alpha": jnp.asarray(a)}
        want.append(float(ridge.outer(problems.ridge_solution(ridge, h), h, ridge.val)))
    np.testing.assert_allclose(batched(alphas, ok), want, rtol=1e-10)
    # ... an unconverged one raises when the program runs, naming the status.
    with pytest.raises(Exception, match="max_steps"):
        jax.block_until_ready(batched(alphas, short))
    with pytest.raises(Exception, match="max_steps"):
        jax.block_until_ready(jax.jit(loss, static_argnums=1)(alphas[0], short))
    # Hyperparameters under vmap are tracers, so the up-front finiteness check cannot see
    # them; a NaN member still fails its solve, and throw reports it.
    bad = _nonfinite_problem()
    grads = jax.vmap(lambda a: hg.hypergradient(bad, {"alpha": a}, throw=True).grad)
    with pytest.raises(Exception, match="nonfinite"):
        jax.block_until_ready(grads(jnp.array([0.5, 0.6])))


def test_hypergradient_under_jit_and_vmap_matches_closed_form(ridge):
    alphas = jnp.array([0.2, 0.5, 3.0])
    exact = np.array(
        [float(problems.ridge_hypergradient(ridge, {"alpha": a})["alpha"]) for a in alphas]
    )
    for method in (hg.Implicit(hg.CG(tol=1e-12)), hg.Unrolled()):

        def grad(a, method=method):
            out = hg.hypergradient(ridge, {"alpha": a}, solver=Newton(max_steps=1), method=method)
            return out.value, out.grad["alpha"]

        values, batched = jax.jit(jax.vmap(grad))(alphas)
        single = jax.jit(grad)(alphas[1])[1]
        # Newton's one step is the closed form and CG runs to 1e-12: agreement to 1e-9
        # relative leaves room for the condition number (< 30).
        np.testing.assert_allclose(batched, exact, rtol=1e-9)
        np.testing.assert_allclose(single, exact[1], rtol=1e-9)
        assert values.shape == (3,)


def test_implicit_refuses_a_precondition_that_is_not_a_bool():
    from hypergrad import Implicit

    with pytest.raises(TypeError, match="precondition must be True or False, got precondition=1"):
        Implicit(precondition=1)
