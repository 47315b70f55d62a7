"""Working-set coordinate descent (`CoordinateDescent`): solutions against scikit-learn,
the duality gap against an independent computation, the block regime (a support larger
than the working set), warm starts, and compile-once behavior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hypergrad import problems
from hypergrad.methods import prox_fixed_point
from hypergrad.problems import Rows
from hypergrad.solvers import L1, CoordinateDescent, ElasticNet, Status, least_squares, run


@pytest.fixture(scope="module")
def data():
    # p > n, correlated columns, unequal row weights (a fold with some rows left out).
    X, y = problems.synthetic_regression(60, 90, noise=0.3, correlation=0.6, seed=4)
    X, y = X - X.mean(0), y - y.mean()
    weight = (np.random.default_rng(0).uniform(size=60) > 0.25).astype(float)
    return X, y, weight


def _rows(X, y, weight):
    return Rows(jnp.asarray(X), jnp.asarray(y), jnp.asarray(weight))


def _numpy_gap(X, y, s, w, a, b):
    """The lasso/elastic-net duality gap by its textbook formula (primal minus dual at the
    rescaled residual), in NumPy: an independent check of the solver's summed form."""
    W = s.sum()
    r = y - X @ w
    u = X.T @ (s * r) / W
    t = min(1.0, np.min(np.where((b == 0) & (np.abs(u) > a), a / np.abs(u), 1.0)))
    fit = (s * r**2).sum() / (2 * W)
    primal = fit + (a * np.abs(w)).sum() + 0.5 * (b * w**2).sum()
    ridge = np.where(b > 0, np.maximum(t * np.abs(u) - a, 0) ** 2 / (2 * np.where(b > 0, b, 1)), 0)
    dual = t * (s * r * y).sum() / W - t**2 * fit - ridge.sum()
    return primal - dual


def test_weighted_lasso_with_row_weights_matches_sklearn(data):
    """Per-feature penalties `a` and row weights against scikit-learn's `Lasso` on the
    rescaled columns `X / a` (the same problem: `sum a_j |w_j|` becomes `|w'|_1` for
    `w' = a w`) with the row weights as `sample_weight`."""
    from sklearn.linear_model import Lasso as SkLasso

    X, y, s = data
    a = 0.05 * np.random.default_rng(1).uniform(0.5, 2.0, X.shape[1])
    solver = CoordinateDescent(L1("alpha"), tol=1e-24, working_set=64)
    sol = jax.jit(lambda h: run(solver, least_squares, jnp.zeros(90), h, _rows(X, y, s)))(
        {"alpha": jnp.asarray(a)}
    )
    sk = SkLasso(alpha=1.0, fit_intercept=False, tol=1e-16, max_iter=10**6)
    coef = sk.fit(X / a, y, sample_weight=s).coef_ / a
    assert int(sol.status) == Status.CONVERGED
    assert 0 < np.sum(coef != 0) < 60
    # Both solve to a duality gap near rounding; the solutions then agree to round-off
    # times the conditioning on the support (below 1e3 here).
    np.testing.assert_allclose(sol.params, coef, atol=1e-9)
    gap = _numpy_gap(X, y, s, np.asarray(sol.params), a, np.zeros_like(a))
    # The textbook difference loses ~1e-16 of the objective (~0.1) to round-off.
    assert abs(gap - float(sol.stats["gap"])) < 1e-15


def test_elastic_net_gap_certified_and_matches_sklearn(data):
    from sklearn.linear_model import ElasticNet as SkElasticNet

    X, y, _ = data
    a1, a2 = 0.04, 0.02
    solver = CoordinateDescent(ElasticNet("a1", "a2"), tol=1e-8, working_set=64)
    data_rows = _rows(X, y, np.ones(60))
    sol = run(solver, least_squares, jnp.zeros(90), {"a1": a1, "a2": a2}, data_rows)
    w = np.asarray(sol.params)
    b = np.full(90, a2)
    gap = _numpy_gap(X, y, np.ones(60), w, np.full(90, a1), b)
    scale = float(y @ y / 60)
    assert gap <= 1e-8 * scale + 1e-15  # what the solver promised, checked independently
    # Strong convexity (alpha2) bounds the distance to the optimum: ||w - w*||^2 <= 2 gap / a2.
    sk = SkElasticNet(alpha=a1 + a2, l1_ratio=a1 / (a1 + a2), fit_intercept=False, tol=1e-14)
    sk.set_params(max_iter=10**6).fit(X, y)
    assert np.linalg.norm(w - sk.coef_) <= np.sqrt(2 * (gap + 1e-15) / a2)


def test_support_larger_than_working_set_is_solved_by_blocks(data):
    # The support (~40) is larger than the working set (16): each round is then a block of
    # the largest violations (block coordinate descent), slower but still convergent.
    X, y, _ = data
    rows = _rows(X, y, np.ones(60))
    h = {"alpha": 3e-2}

    def solve(size, steps):
        solver = CoordinateDescent(L1(), tol=1e-12, working_set=size, max_steps=steps)
        return run(solver, least_squares, jnp.zeros(90), h, rows)

    small, large = solve(16, 5000), solve(128, 100)
    assert int(small.status) == Status.CONVERGED and int(large.status) == Status.CONVERGED
    assert np.sum(np.asarray(large.params) != 0) > 16
    # Both at a relative gap of 1e-12: solutions within ~1e-6 of each other at worst
    # (the gap is quadratic in the error); observed 1e-11.
    np.testing.assert_allclose(small.params, large.params, atol=1e-6)


def test_support_just_under_the_working_sets_size_is_held_not_split_into_blocks():
    """A lasso support near the number of rows, in a working set barely larger (n = 30
    rows, 32 slots: the default working set of n just under a power of two): the support
    is held with the few slots left for violators, and the solver converges to
    scikit-learn's solution. Before, a support past 7/8 of the slots made every round a
    block of the largest violations: 100 rounds ended unconverged with 38 nonzeros on 30
    rows (1000 x 5000 at alpha_max / 100: the same, where 43 rounds now converge)."""
    from sklearn.linear_model import Lasso

    X, y = problems.synthetic_regression(30, 90, noise=0.3, correlation=0.6, seed=4)
    X, y = np.asarray(X - X.mean(0)), np.asarray(y - y.mean())
    alpha = 0.003 * np.max(np.abs(X.T @ y)) / 30
    solver = CoordinateDescent(L1("alpha"), tol=1e-12, working_set=32, max_steps=100)
    sol = run(solver, least_squares, jnp.zeros(90), {"alpha": alpha}, _rows(X, y, np.ones(30)))
    assert int(sol.status) == Status.CONVERGED
    w = np.asarray(sol.params)
    assert 28 <= np.sum(w != 0) <= 30  # past the old cap of 28, at most n
    gap = _numpy_gap(X, y, np.ones(30), w, np.full(90, alpha), np.zeros(90))
    assert gap <= 1e-12 * float(y @ y / 30) + 1e-15  # the promise, checked independently
    sk = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=10**6).fit(X, y)
    np.testing.assert_allclose(w, sk.coef_, atol=1e-5)


def test_tolerance_and_penalty_are_data_no_retrace_under_jit_and_vmap(data):
    X, y, s = data
    rows = _rows(X, y, s)
    solver = CoordinateDescent(L1(), working_set=64)
    traces = []

    @jax.jit
    def solve(alpha, tol):
        traces.append(1)
        return run(solver, least_squares, jnp.zeros(90), {"alpha": alpha}, rows, tol=tol)

    loose, tight = solve(0.05, 1e-4), solve(0.05, 1e-16)
    solve(0.02, 1e-12)
    assert len(traces) == 1
    assert float(loose.stats["gap"]) > float(tight.stats["gap"])
    assert int(loose.stats["epochs"]) < int(tight.stats["epochs"])
    # vmap over penalties (what K folds or a population do) equals one solve at a time.
    alphas = jnp.array([0.02, 0.05, 0.1])
    batch = jax.vmap(lambda a: solve(a, 1e-16))(alphas)
    for i, a in enumerate(alphas):
        np.testing.assert_allclose(batch.params[i], solve(a, 1e-16).params, atol=1e-10)


def _warm_start(data, working_set, alpha0, alpha):
    """A solve at `alpha0`, then one at `alpha` warm-started from its state (checked
    against a solve from zero); both results."""
    X, y, s = data
    rows = _rows(X, y, s)
    solver = CoordinateDescent(L1(), tol=1e-16, working_set=working_set)
    first = run(solver, least_squares, jnp.zeros(90), {"alpha": alpha0}, rows)
    h = {"alpha": alpha}
    state = solver.reinit(least_squares, first.params, first.state, h, rows)
    warm = run(solver, least_squares, first.params, h, rows, state=state)
    cold = run(solver, least_squares, jnp.zeros(90), h, rows)
    assert int(warm.status) == Status.CONVERGED
    np.testing.assert_allclose(warm.params, cold.params, atol=1e-9)
    return first, warm


def test_warm_start_of_state_keeps_the_gram_cache(data):
    X, _, s = data
    first, warm = _warm_start(data, 64, 0.05, 0.045)
    # Features cached by the first solve keep their slots (their Gram rows are reused), and
    # the cache holds the Gram matrix of its columns.
    before, after = first.state.inner, warm.state.inner
    k = int(before.count)
    assert int(after.count) >= k
    np.testing.assert_array_equal(np.asarray(after.slots)[:k], np.asarray(before.slots)[:k])
    k = int(after.count)
    cols = np.asarray(X)[:, np.asarray(after.slots)[:k]]
    gram = (cols * s[:, None]).T @ cols / s.sum()
    np.testing.assert_allclose(np.asarray(after.gram)[:k, :k], gram, atol=1e-12)


def test_entering_features_that_do_not_fit_take_the_slots_no_longer_wanted(data):
    """A warm start whose entering features overflow the cache: they take the slots of
    features out of the working set, the features still in it keep their slots (and
    Gram rows), and the cache still holds the Gram matrix of its columns."""
    X, _, s = data
    first, warm = _warm_start(data, 48, 0.08, 0.05)
    before, after = first.state.inner, warm.state.inner
    k0, k = int(before.count), int(after.count)
    old, new = np.asarray(before.slots)[:k0], np.asarray(after.slots)[:k]
    assert len(set(new)) == k  # no feature in two slots
    moved = [j for j in range(k0) if new[j] != old[j]]
    assert moved, "the warm start should overflow this cache"  # slots were reused
    support = set(np.flatnonzero(np.asarray(warm.params)))
    assert all(new[j] == old[j] for j in range(k0) if old[j] in support)
    cols = np.asarray(X)[:, new]
    gram = (cols * s[:, None]).T @ cols / s.sum()
    np.testing.assert_allclose(np.asarray(after.gram)[:k, :k], gram, atol=1e-12)


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="prox must be"):
        CoordinateDescent("l1")
    with pytest.raises(ValueError, match="working_set must be"):
        CoordinateDescent(L1(), working_set=0)
    with pytest.raises(ValueError, match="tol must be a number"):
        CoordinateDescent(L1(), tol=None)
    rows = Rows(jnp.ones((3, 2)), jnp.ones(3), jnp.ones(3))
    with pytest.raises(ValueError, match="least_squares"):
        run(
            CoordinateDescent(L1()),
            lambda w, h, d: jnp.sum(w**2),
            jnp.zeros(2),
            {"alpha": 1.0},
            rows,
        )


def test_implicit_solve_on_the_working_set_matches_the_full_system(data):
    """The support-restricted implicit system solved on the solver's working set (what
    `Implicit` does with `CoordinateDescent`) against the same system solved densely on
    all coordinates, with a support that fits the working set and one that does not
    (then conjugate-gradient steps on the full system finish the job)."""
    from hypergrad import CG, Dense, Implicit

    X, y, s = data
    rows = _rows(X, y, s)
    opt = prox_fixed_point(least_squares, L1("alpha"))
    b = jnp.asarray(np.random.default_rng(5).standard_normal(90))
    for size, alpha in ((64, 0.05), (16, 0.01)):
        solver = CoordinateDescent(L1(), tol=1e-24, working_set=size, max_steps=5000)
        h = {"alpha": jnp.asarray(alpha)}
        sol = jax.jit(lambda h, rows, s=solver: run(s, least_squares, jnp.zeros(90), h, rows))(
            h, rows
        )
        w = np.asarray(sol.params)
        S = w != 0
        # Independent: J = H on the support (H = X^T diag(s) X / W), identity off it.
        H = (X * s[:, None]).T @ X / s.sum()
        J = np.where(np.outer(S, S), H, np.diag(np.where(S, 0.0, 1.0)))
        exact = np.linalg.solve(J, np.asarray(b))
        for method in (Implicit(Dense(symmetric=True)), Implicit(CG(tol=1e-12))):
            # Compiled as a user's program would be (eagerly, each operation compiles).
            solve = jax.jit(
                lambda w, h, rows, b, state, m=method, s=solver: m.linear_solve(
                    opt, w, h, rows, b, transpose=True, solver=s, state=state
                )
            )
            x = solve(sol.params, h, rows, b, sol.state)
            # Both exact up to the conditioning of H_SS (below 1e4 here) times round-off.
            np.testing.assert_allclose(x, exact, rtol=1e-7, atol=1e-9)
        assert (np.sum(S) > size) == (size == 16)  # the second support outgrew the set


def test_full_system_steps_are_bounded_by_the_support_when_its_hessian_is_singular():
    """A support larger than the number of rows (an unconverged lasso's can be) makes the
    restricted Hessian singular: no number of conjugate-gradient steps solves the system.
    The steps on the full system that bring in the support outside the working set stop
    after twice the support's size (conjugate gradients' exact bound, doubled for
    round-off); before, they ran to 10 p and took minutes at n=1000, p=5000. Counted by
    the products with the system (a host callback in the residual, called at run time by
    each evaluation)."""
    from hypergrad import CG, Implicit

    X, y = problems.synthetic_regression(8, 24, seed=3)
    rows = _rows(X, y, np.ones(8))
    opt = prox_fixed_point(least_squares, L1("alpha"))
    h = {"alpha": jnp.asarray(0.05)}
    solver = CoordinateDescent(L1(), working_set=8, max_steps=1)
    sol = jax.jit(lambda h, rows: run(solver, least_squares, jnp.zeros(24), h, rows))(h, rows)
    # Every coordinate nonzero: 24 support coordinates on 8 rows, 8 of them in slots.
    w = jnp.asarray(np.random.default_rng(6).uniform(0.5, 1.0, 24))
    calls = []

    def residual(params, hparams, args):
        jax.debug.callback(lambda: calls.append(None))
        return opt.residual(params, hparams, args)

    counted = opt._replace(residual=residual)
    b = jnp.asarray(np.random.default_rng(5).standard_normal(24))
    solve = jax.jit(
        lambda w, h, rows, b, state: Implicit(CG(tol=1e-14)).linear_solve(
            counted, w, h, rows, b, transpose=True, solver=solver, state=state
        )
    )
    x = jax.block_until_ready(solve(w, h, rows, b, sol.state))
    # One product for the starting residual and one per step (49 here; 241 before).
    assert 2 * 24 < len(calls) <= 2 * 24 + 5
    assert np.all(np.isfinite(np.asarray(x)))


@pytest.mark.parametrize("b_value", [0.0, 0.02])
def test_restricted_gap_is_the_gap_of_the_subproblem(data, b_value):
    # A round may stop on the gap of the problem restricted to its working set, computed in
    # O(size) from the data term's value and gradient: it must equal the gap of that
    # subproblem (the other coordinates fixed, their fit moved into the targets) by the
    # textbook formula.
    from hypergrad.solvers._cd import _gap_terms

    X, y, s = data
    rng = np.random.default_rng(2)
    w = np.where(rng.uniform(size=90) < 0.3, rng.standard_normal(90), 0.0)
    mask = rng.uniform(size=90) < 0.5
    a, b = np.full(90, 0.05), np.full(90, b_value)
    W = s.sum()
    r = y - X @ w
    grad = -X.T @ (s * r) / W
    fit = (s * r**2).sum() / (2 * W)
    _, gap, _ = _gap_terms(
        jnp.asarray(fit),
        jnp.asarray(w),
        jnp.asarray(grad),
        jnp.asarray(a),
        jnp.asarray(b),
        jnp.asarray(mask),
    )
    offset = y - X[:, ~mask] @ w[~mask]
    ref = _numpy_gap(X[:, mask], offset, s, w[mask], a[mask], b[mask])
    assert ref > 1e-3  # not at a solution: the check compares two nonzero numbers
    np.testing.assert_allclose(float(gap), ref, rtol=1e-10)


@jax.jit
def _ranked_working_set(X, w, viol):
    """The working set of 8 slots that `CoordinateDescent` picks at `w` for the
    violations `viol` (one compiled program for every scale of them)."""
    solver = CoordinateDescent(L1("alpha"), working_set=8)
    rows = _rows(X, X[:, 0], jnp.ones(X.shape[0]))
    state = solver.init(least_squares, jnp.zeros(X.shape[1]), {"alpha": 1.0}, rows)
    return solver._working_set(w, viol, state.inner)


@pytest.mark.parametrize("scale", [1e-300, 1.0, 1e300])
def test_working_set_ranks_the_support_then_the_largest_violations_at_any_scale(scale):
    """The working set (ranked in float32 for speed) holds the support and then the
    largest violations, also when the violations lie far outside float32's range."""
    p, support, worst = 40, [5, 17], [30, 2]
    X = jnp.asarray(np.random.default_rng(1).standard_normal((10, p)))
    w = jnp.zeros(p).at[jnp.asarray(support)].set(1.0)
    viol = np.linspace(0.1, 0.2, p)
    viol[worst] = [0.9, 0.8]  # the two largest off the support
    viol[support] = 0.0  # optimal on the support: still forced in
    slots, _, count, active, _ = _ranked_working_set(X, w, jnp.asarray(scale * viol))
    chosen = sorted(int(j) for j in np.asarray(slots)[np.asarray(active)])
    assert int(count) == 4 and chosen == sorted(support + worst)
