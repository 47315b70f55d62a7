"""What gets compiled: `hypergradient` called eagerly is one program, reused for other
numbers (hyperparameters, tolerance) and other data of the same shapes; data padded to a
shape bucket (`hypergrad.problems.bucket`: zero-weight rows, zero columns) gives the
unpadded result, so padded folds and nearby sizes can share one program.

Compilations are counted with JAX's compile events (`/jax/core/compile/...`), in this
process, with the persistent cache off so that a cache hit cannot hide one.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad
from hypergrad import problems

from ._problems import count_compilations as count_compiles


@pytest.fixture(scope="module", autouse=True)
def no_persistent_cache():
    was = hypergrad.cache_dir()
    hypergrad.disable_cache()
    yield
    if was is not None:
        hypergrad.enable_cache()


def _logistic(seed):
    # Shapes no other test uses, so no earlier test compiled this program in the process.
    X, y = problems.synthetic_classification(70, 7, seed=seed)
    return problems.logistic(X[:43], y[:43], X[43:], y[43:], alpha=0.1)


@pytest.fixture(scope="module")
def first_call():
    problem = _logistic(0)
    with count_compiles() as compiles:
        out = hypergrad.hypergradient(problem, problem.hparams)
    return problem, out, compiles


def test_eager_hypergradient_is_one_program(first_call):
    _, _, compiles = first_call
    # Op-by-op dispatch compiled one program per operation (over a hundred here).
    assert len(compiles) == 1, len(compiles)


def test_eager_equals_traced(first_call):
    problem, out, _ = first_call
    traced = jax.jit(lambda pr, h: hypergrad.hypergradient(pr, h))(problem, problem.hparams)
    # The same program up to XLA's fusion choices: agreement to rounding.
    np.testing.assert_allclose(out.grad["alpha"], traced.grad["alpha"], rtol=1e-10)
    np.testing.assert_allclose(out.value, traced.value, rtol=1e-12)


def test_other_numbers_and_data_of_the_same_shapes_compile_nothing(first_call):
    problem, out, _ = first_call
    other = _logistic(1)
    weak = jnp.asarray(0.2)  # made outside the count: creating it is a compilation
    with count_compiles() as compiles:
        # A Python float, a weakly typed and a strongly typed array: one signature.
        a = hypergrad.hypergradient(problem, {"alpha": 0.3})
        b = hypergrad.hypergradient(other, {"alpha": weak})
        c = hypergrad.hypergradient(problem, {"alpha": np.float64(0.1)})
    assert compiles == []
    # The numbers reached the program: each result differs from the first.
    for r in (a, b):
        assert not np.allclose(r.grad["alpha"], out.grad["alpha"])
    np.testing.assert_array_equal(c.grad["alpha"], out.grad["alpha"])


def test_other_tolerances_share_one_program(first_call):
    problem, _, _ = first_call
    # tol=None keeps the solver's and linear solver's own tolerances (a program of its
    # own); every number after that is data.
    tight = hypergrad.hypergradient(problem, problem.hparams, tol=1e-10)
    with count_compiles() as compiles:
        loose = hypergrad.hypergradient(problem, problem.hparams, tol=1e-2)
        mid = hypergrad.hypergradient(problem, problem.hparams, tol=np.float64(1e-5))
    assert compiles == []
    assert not np.array_equal(loose.grad["alpha"], tight.grad["alpha"])
    assert int(loose.solution.stats["num_steps"]) < int(tight.solution.stats["num_steps"])
    assert np.isfinite(mid.grad["alpha"])


def test_eager_checks_run_before_compiling(first_call):
    problem, _, _ = first_call
    bad = {"alpha": jnp.asarray(np.nan)}  # made outside: its conversion may compile
    with count_compiles() as compiles, pytest.raises(ValueError, match="hparams"):
        hypergrad.hypergradient(problem, bad)
    assert compiles == []


# --- shape buckets -----------------------------------------------------------------------


def _padded(X, y):
    """`X, y` padded to bucket sizes with zero rows and zero columns; the row weights."""
    n, p = X.shape
    Xp = np.zeros((problems.bucket(n), problems.bucket(p)))
    Xp[:n, :p] = X
    yp = np.zeros(problems.bucket(n))
    yp[:n] = y
    w = np.zeros(problems.bucket(n))
    w[:n] = 1.0
    return Xp, yp, w


@pytest.mark.parametrize("name", ["lasso", "logistic_rows"])
def test_padded_data_gives_the_unpadded_result(name):
    rng = np.random.default_rng(0)
    n, n_val, p = 37, 29, 13  # buckets 40, 32, 14: every dimension padded
    if name == "lasso":
        X, y = problems.synthetic_regression(n + n_val, p, seed=0)
        build = problems.lasso
        kwargs = dict(alpha=problems.alpha_max(X[:n], y[:n]) / 10, tol=1e-12, max_steps=1000)
    else:
        X, y = problems.synthetic_classification(n + n_val, p, seed=0)
        build = problems.logistic_rows
        kwargs = dict(alpha=0.05, tol=1e-12)
    X = X + 0.01 * rng.standard_normal(X.shape)
    Xt, yt, Xv, yv = X[:n], y[:n], X[n:], y[n:]
    plain = build(Xt, yt, Xv, yv, **kwargs)
    Xtp, ytp, wt = _padded(Xt, yt)
    Xvp, yvp, wv = _padded(Xv, yv)
    padded = build(Xtp, ytp, Xvp, yvp, weights=(wt, wv), **kwargs)
    method = hypergrad.Implicit(hypergrad.CG(tol=1e-12))
    ref = hypergrad.hypergradient(plain, plain.hparams, method=method)
    out = hypergrad.hypergradient(padded, padded.hparams, method=method)
    # Both solves stop at a relative tolerance of 1e-12; the padded one sums zero rows and
    # columns in another order, so agreement is to the solver's accuracy, not bitwise.
    np.testing.assert_allclose(out.value, ref.value, rtol=1e-9)
    np.testing.assert_allclose(out.grad["alpha"], ref.grad["alpha"], rtol=1e-6, atol=1e-10)
    w_ref = jax.tree.leaves(ref.solution.params)[-1]
    w_pad = jax.tree.leaves(out.solution.params)[-1]
    np.testing.assert_allclose(np.asarray(w_pad)[:p], w_ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(w_pad)[p:], 0.0)  # columns that cannot enter


# -- small problems compile for compile time (hypergrad._compile) --------------------------


def test_small_data_gets_the_fast_compile_options(monkeypatch):
    from hypergrad import _compile

    small = _logistic(0)
    assert _compile.fast_compile(small.train, small.val)
    big = np.zeros((_compile.SMALL_DATA_ELEMENTS // 100 + 1, 100))
    assert not _compile.fast_compile((big, big))
    monkeypatch.setenv(_compile.ENV_SWITCH, "0")
    assert not _compile.fast_compile(small.train, small.val)


@pytest.mark.parametrize("setting", ["1", "0"])
def test_eager_ridge_hypergradient_meets_the_closed_form_either_way(monkeypatch, setting):
    # The fast-compiled program (the default for this small problem) and XLA's default
    # one both give the closed-form ridge hypergradient.
    monkeypatch.setenv("HYPERGRAD_FAST_COMPILE", setting)
    X, y = problems.synthetic_regression(61, 9, seed=3)
    problem = problems.ridge(X[:40], y[:40], X[40:], y[40:], alpha=0.3)
    out = hypergrad.hypergradient(problem, problem.hparams, solver=hypergrad.solvers.Newton())
    exact = problems.ridge_hypergradient(problem, problem.hparams)
    np.testing.assert_allclose(out.grad["alpha"], exact["alpha"], rtol=1e-8)


def test_eager_run_is_one_program_reused_for_other_numbers():
    """`run` called eagerly compiles one program (an eager `lax.while_loop` compiled
    its loop anew at every call, through a new closure), which other hyperparameters
    and tolerances reuse; its result equals the run traced under `jit`."""
    from hypergrad.solvers import LBFGS, run

    problem = _logistic(2)
    solver = LBFGS(tol=1e-9)
    args = (solver, problem.inner, problem.init_params)
    run(*args, {"alpha": np.float64(0.1)}, problem.train, tol=1e-6)
    with count_compiles() as compiles:
        sol = run(*args, {"alpha": np.float64(0.3)}, problem.train, tol=1e-8)
        again = run(*args, {"alpha": np.float64(0.3)}, problem.train, tol=1e-8)
    assert compiles == []
    traced = jax.jit(lambda h: run(*args, h, problem.train, tol=1e-8))({"alpha": 0.3})
    np.testing.assert_allclose(sol.params["w"], traced.params["w"], rtol=1e-10)
    np.testing.assert_array_equal(sol.params["w"], again.params["w"])
    assert int(sol.stats["num_steps"]) == int(traced.stats["num_steps"])


def test_eager_run_leaves_python_objects_in_args_to_the_objective():
    """A Python object in `args` reaches the objective as it is (the run is then not
    compiled as a whole: `jit` would trace the object into an array)."""
    from hypergrad.solvers import LBFGS, run

    def fun(w, h, args):
        power, target = args  # `power` a Python int, read as a static exponent
        assert isinstance(power, int)
        return jnp.sum((w - target) ** power) + h * jnp.sum(w**2)

    target = jnp.arange(3.0)
    sol = run(LBFGS(tol=1e-10), fun, jnp.zeros(3), 0.5, (2, target))
    # Minimizer of |w - t|^2 + h |w|^2: t / (1 + h).
    np.testing.assert_allclose(sol.params, target / 1.5, rtol=1e-8)


def test_eager_solve_and_outer_loss_reuse_their_programs():
    """`solve` and `outer_loss` called eagerly (with the problem's own optimality
    condition, the default stationarity, or the method's loop) compile nothing for other
    hyperparameters; their values equal those traced under `jit`."""
    import optax

    from hypergrad import Unrolled, outer_loss, solve
    from hypergrad.solvers import OptaxSolver

    problem = _logistic(3)
    gd = OptaxSolver(optax.sgd(0.5), max_steps=30, tol=None)
    calls = {
        "solve": lambda h: solve(
            problem.inner, problem.init_params, h, problem.train, solver=problem.solver
        ).params["w"],
        "solve_unrolled": lambda h: solve(
            problem.inner, problem.init_params, h, problem.train, solver=gd, method=Unrolled()
        ).params["w"],
        "outer_loss": lambda h: outer_loss(problem, h),
    }
    for name, call in calls.items():
        call({"alpha": np.float64(0.1)})
        with count_compiles() as compiles:
            eager = call({"alpha": np.float64(0.4)})
        assert compiles == [], name
        traced = jax.jit(call)({"alpha": np.float64(0.4)})
        np.testing.assert_allclose(eager, traced, rtol=1e-10, err_msg=name)
