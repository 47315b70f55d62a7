"""`hypergrad.analysis`: importance, sensitivity, tunability, seed robustness, overfitting.

References: the synthetic objectives have known structure (a dominant dimension, two
that interact, inert ones), so the rankings are known; importances are compared with
Optuna's own `get_param_importances` on the same study; sensitivities with closed forms
and central finite differences; intervals with scipy's binomial and a brute-force count.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optuna
import pytest
import scipy.stats
from optuna.importance import (
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
    get_param_importances,
)

import hypergrad as hg
from hypergrad import analysis, problems
from hypergrad.solvers import Newton
from hypergrad.space import Categorical, Condition, Int, Real, Space

optuna.logging.set_verbosity(optuna.logging.WARNING)

# -- synthetic structure -----------------------------------------------------------------
# f = 4a + b + c + 2bc on [0, 1]^5, with d and e inert: `a` dominates (main-effect
# variance 16/12 against 4/12 each for b and c), b and c interact (variance 4/144). With
# 300 random trials the rankings below held for 30 of 30 sampler seeds (PED-ANOVA, which
# looks at the best 10% only, is the noisier; at 200 trials it failed 1 in 10).


def structured(a, b, c):
    return 4 * a + b + c + 2 * b * c


def _optimize(study, n, objective):
    study.optimize(objective, n_trials=n)
    return study


@pytest.fixture(scope="module")
def structured_study():
    def objective(t):
        x = {n: t.suggest_float(n, 0.0, 1.0) for n in "abcde"}
        return structured(x["a"], x["b"], x["c"])

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return _optimize(study, 300, objective)


@pytest.fixture(scope="module")
def conditional_study():
    # opt in {sgd, adam}; momentum exists only for sgd, width only for 3 layers.
    def objective(t):
        opt = t.suggest_categorical("opt", ["sgd", "adam"])
        layers = t.suggest_int("layers", 1, 3)
        lr = t.suggest_float("lr", 1e-4, 1e-1, log=True)
        v = (math.log10(lr) + 2.5) ** 2 + 0.3 * (layers - 2) ** 2 + (opt == "sgd") * 0.5
        if opt == "sgd":
            v += 2 * (t.suggest_float("momentum", 0.0, 0.99) - 0.9) ** 2
        if layers == 3:
            v += 0.01 * t.suggest_int("width", 8, 128, log=True) / 128
        return v

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    return _optimize(study, 150, objective)


@pytest.fixture(scope="module")
def two_objective_study():
    def objective(t):
        x, y = t.suggest_float("x", 0.0, 1.0), t.suggest_float("y", 0.0, 1.0)
        t.suggest_float("z", 0.0, 1.0)  # inert in both
        return 4 * x + 0.2 * y, y  # the second is maximized: y matters, x does not

    study = optuna.create_study(
        directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=2)
    )
    return _optimize(study, 80, objective)


# -- importance ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def structured_importances(structured_study):
    return {ev: analysis.param_importances(structured_study, ev) for ev in analysis.EVALUATORS}


@pytest.mark.parametrize("evaluator", ["fanova", "ped_anova"])
def test_importance_ranks_dominant_interacting_inert(structured_importances, evaluator):
    imp = structured_importances[evaluator]
    ranking = list(imp)
    assert ranking[0] == "a"
    assert set(ranking[1:3]) == {"b", "c"}
    assert max(imp["d"], imp["e"]) < min(imp["b"], imp["c"])


def test_importance_is_optunas_own_numbers(structured_study, structured_importances):
    theirs = get_param_importances(structured_study, evaluator=FanovaImportanceEvaluator(seed=0))
    assert structured_importances["fanova"] == theirs  # same keys, same order, same floats
    assert structured_importances["ped_anova"] == get_param_importances(
        structured_study, evaluator=PedAnovaImportanceEvaluator()
    )
    assert structured_importances["ped_anova"] == get_param_importances(structured_study)


def test_importance_conditional_dimensions(conditional_study):
    by = {i.evaluator: i for i in analysis.importances(conditional_study)}
    # Conditional PED-ANOVA assesses momentum and width; fANOVA cannot (absent from
    # some trials) and the result says so.
    assert {"momentum", "width"} <= set(by["ped_anova"].values)
    assert set(by["fanova"].not_assessed) == {"momentum", "width"}
    assert by["ped_anova"].not_assessed == ()
    assert by["fanova"].num_trials == 150 and by["fanova"].error is None
    assert list(by["fanova"].values)[0] == "lr"
    # Optuna's numbers, on a study with conditional dimensions.
    assert by["fanova"].values == get_param_importances(
        conditional_study, evaluator=FanovaImportanceEvaluator(seed=0)
    )
    assert by["ped_anova"].values == get_param_importances(conditional_study)
    raw = analysis.param_importances(conditional_study, "fanova", seed=3, normalize=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # normalize=False is experimental in Optuna
        assert raw == get_param_importances(
            conditional_study, evaluator=FanovaImportanceEvaluator(seed=3), normalize=False
        )


def test_importance_per_objective(two_objective_study):
    s = two_objective_study
    rows = analysis.importances(s)
    assert [(r.evaluator, r.objective) for r in rows] == [
        ("fanova", 0),
        ("ped_anova", 0),
        ("fanova", 1),
        ("ped_anova", 1),
    ]
    for r in rows:
        i = r.objective
        if r.evaluator == "fanova":
            want = get_param_importances(
                s, evaluator=FanovaImportanceEvaluator(seed=0), target=lambda t, i=i: t.values[i]
            )
        else:
            # PED-ANOVA ranks lower targets better: the maximized objective negated.
            sign = 1 if i == 0 else -1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want = get_param_importances(
                    s,
                    evaluator=PedAnovaImportanceEvaluator(),
                    target=lambda t, i=i, sign=sign: sign * t.values[i],
                )
        assert r.values == want
        assert list(r.values)[0] == ("x" if i == 0 else "y")
    with pytest.raises(ValueError, match="objective="):
        analysis.param_importances(s, "fanova")
    with pytest.raises(ValueError, match=r"objective must be an int in \[0, 1\], got objective=2"):
        analysis.param_importances(s, "ped_anova", objective=2)
    with pytest.raises(ValueError, match="evaluator must be one of"):
        analysis.param_importances(s, "mdi")


def test_importance_too_few_trials_is_a_value_not_an_error():
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    rows = analysis.importances(study)
    assert all(r.error and r.values == {} for r in rows)


# -- sensitivity ---------------------------------------------------------------------------

NAMES = ("a", "b", "c", "d")
# A coupled quadratic inner problem whose solution is exactly the hyperparameter vector
# (w* = v: M w* = M v), so the outer objective at the solution is `structured` plus an
# inert `d`; implicit differentiation still has to solve with M.
M = jnp.array(
    [[2.0, 0.3, 0.0, 0.0], [0.3, 1.5, 0.2, 0.0], [0.0, 0.2, 1.0, 0.1], [0.0, 0.0, 0.1, 3.0]]
)


def _inner(w, h, data):
    v = jnp.stack([h[n] for n in NAMES])
    return 0.5 * w @ M @ w - w @ (M @ v)


def _outer(w, h, data):
    # `structured` with curvature along `a` (on the diagonal of the Hessian).
    return structured(w[0], w[1], w[2]) + 5 * (w[0] - 0.5) ** 2


SYN_SPACE = Space(
    {"a": Real(0.0, 1.0), "b": Real(0.0, 1.0), "c": Real(0.0, 1.0), "d": Real(1e-3, 10.0, log=True)}
)


@pytest.fixture(scope="module")
def synthetic_problem():
    return hg.BilevelProblem(
        inner=_inner,
        outer=_outer,
        init_params=jnp.zeros(4),
        train=(),
        val=(),
        hparams={n: jnp.asarray(0.5) for n in NAMES},
        solver=Newton(max_steps=2),
        name="synthetic",
    )


def test_sensitivity_closed_form_and_ranking(synthetic_problem):
    cfg = {"a": 0.5, "b": 0.2, "c": 0.7, "d": 0.1}
    s = analysis.sensitivity(synthetic_problem, SYN_SPACE, cfg)
    # df/da = 4 + 10(a - 1/2) = 4, df/db = 1 + 2c = 2.4, df/dc = 1 + 2b = 1.4, d inert;
    # ranges are 1, so df/dt = df/dx. Exact up to the implicit adjoint's CG tolerance.
    want = {"a": 4.0, "b": 2.4, "c": 1.4, "d": 0.0}
    for n in NAMES:
        assert s.scaled_grad[n] == pytest.approx(want[n], abs=1e-8)
    assert s.ranking() == ["a", "b", "c", "d"]
    assert s.hessian and s.scaled_hess_diag["a"] == pytest.approx(10.0, abs=1e-6)
    for n in "bcd":  # the b-c interaction is off the diagonal
        assert abs(s.scaled_hess_diag[n]) < 1e-6
    assert s.value == pytest.approx(float(structured(0.5, 0.2, 0.7)), rel=1e-12)


def _fd_check(problem, space, cfg, s, method=None, rtol=1e-5):
    """Central differences of outer_loss in the unconstrained coordinates (step 1e-4:
    truncation error ~ h^2 f''' ~ 1e-8, rounding ~ eps / h ~ 1e-12, in float64)."""
    names = s.names
    u0 = space.to_unconstrained({n: jnp.asarray(cfg[n], float) for n in names})

    @jax.jit
    def loss(u):
        h = dict(problem.hparams)
        h.update(space.from_unconstrained(u))
        return hg.outer_loss(problem, h, method=method)

    def f(u):
        return float(loss(u))

    step = 1e-4
    for n in names:
        up, dn = dict(u0), dict(u0)
        up[n], dn[n] = u0[n] + step, u0[n] - step
        fu, fd = f(up), f(dn)
        g = (fu - fd) / (2 * step)
        h2 = (fu - 2 * f(u0) + fd) / step**2
        assert s.grad[n] == pytest.approx(g, rel=rtol, abs=1e-7), n
        # The second difference loses about half the digits: h2 error ~ eps f / h^2 ~ 1e-8.
        assert s.hess_diag[n] == pytest.approx(h2, rel=1e-3, abs=1e-5), n


def test_sensitivity_matches_finite_differences_synthetic(synthetic_problem):
    cfg = {"a": 0.3, "b": 0.6, "c": 0.45, "d": 2.0}
    s = analysis.sensitivity(synthetic_problem, SYN_SPACE, cfg)
    _fd_check(synthetic_problem, SYN_SPACE, cfg, s)


@pytest.fixture(scope="module")
def ridge_problem():
    X, y = problems.synthetic_regression(80, 6, seed=0)
    return problems.ridge(X[:40], y[:40], X[40:60], y[40:60], X[60:], y[60:], alpha=1.0)


def test_sensitivity_ridge_closed_form_and_finite_differences(ridge_problem):
    space = Space({"alpha": Real(1e-3, 1e2, log=True)})
    cfg = {"alpha": 0.3}
    s = analysis.sensitivity(ridge_problem, space, cfg, method=hg.Implicit(hg.Dense()))
    # df/dt = df/dalpha * alpha * log(high / low) for a log dimension.
    exact = float(problems.ridge_hypergradient(ridge_problem, {"alpha": 0.3})["alpha"])
    assert s.scaled_grad["alpha"] == pytest.approx(exact * 0.3 * math.log(1e5), rel=1e-8)
    _fd_check(ridge_problem, space, cfg, s, method=hg.Implicit(hg.Dense()))


def test_sensitivity_per_feature_array_dimension(ridge_problem):
    pb = problems.ridge(
        *ridge_problem.train, *ridge_problem.val, *ridge_problem.test, alpha=jnp.ones(6)
    )
    space = Space({"alpha": Real(1e-3, 1e2, log=True)})
    alpha = [0.1, 0.3, 1.0, 3.0, 0.05, 0.5]
    s = analysis.sensitivity(pb, space, {"alpha": alpha}, method=hg.Implicit(hg.Dense()))
    exact = np.asarray(problems.ridge_hypergradient(pb, {"alpha": jnp.asarray(alpha)})["alpha"])
    np.testing.assert_allclose(
        s.scaled_grad["alpha"], exact * np.asarray(alpha) * math.log(1e5), rtol=1e-8
    )
    assert s.scaled_grad["alpha"].shape == (6,) and s.hess_diag["alpha"].shape == (6,)
    # Diagonal of the Hessian by HVPs against a dense Hessian of the same function.
    t0 = jnp.asarray(s.position["alpha"])

    def f(t):
        return hg.outer_loss(
            pb,
            {"alpha": jnp.exp(math.log(1e-3) + t * math.log(1e5))},
            method=hg.Implicit(hg.Dense()),
        )

    dense = np.diag(np.asarray(jax.jit(jax.hessian(f))(t0)))
    np.testing.assert_allclose(s.scaled_hess_diag["alpha"], dense, rtol=1e-6, atol=1e-10)
    assert (
        analysis.sensitivity(
            pb, space, {"alpha": alpha}, method=hg.Implicit(hg.Dense()), hessian=False
        ).hess_diag
        is None
    )


def test_sensitivity_refuses_bad_input(synthetic_problem):
    with pytest.raises(ValueError, match=r"config\['a'\] must lie in \[0.0, 1.0\], got 2.0"):
        analysis.sensitivity(synthetic_problem, SYN_SPACE, {"a": 2.0, "b": 0.1, "c": 0.1, "d": 1})
    other = Space({"zeta": Real(0.0, 1.0)})
    with pytest.raises(ValueError, match="problem.hparams has no 'zeta'"):
        analysis.sensitivity(synthetic_problem, other, {"zeta": 0.5})
    with pytest.raises(ValueError, match="hessian must be True, False or 'auto'"):
        analysis.sensitivity(synthetic_problem, SYN_SPACE, {"a": 0.5}, hessian="yes")


# -- tunability ----------------------------------------------------------------------------


def test_tunability_on_a_known_family():
    space = Space(
        {
            "a": Real(0.0, 1.0),
            "b": Real(0.0, 1.0),
            "kind": Categorical(("x", "y")),
            "e": Int(1, 5),
        }
    )

    def risk(c, shift):
        # a's best value moves with the data set (tunable); b's does not (a good default
        # exists); e is inert; kind costs 0.05 on the second data set only.
        return (
            (c["a"] - shift) ** 2
            + 0.5 * (c["b"] - 0.5) ** 2
            + 0.05 * (c["kind"] == "y" and shift > 0.5)
        )

    t = analysis.tunability(risk, space, [0.1, 0.9], candidates=40, resolution=11)
    means = t.mean()
    assert t.ranking()[0] == "a"
    assert means["e"] == 0.0
    for n in t.names:
        assert np.all(t.per_dim[n] >= 0) and np.all(t.per_dim[n] <= t.overall + 1e-15)
    # The default is the candidate with the best mean; a 1-D design reaches the optimum
    # of `a` on each data set up to the grid (0.1 and 0.9 are on an 11-point grid).
    for j, shift in enumerate([0.1, 0.9]):
        other = risk({**t.default, "a": shift}, shift)
        assert t.per_dim["a"][j] == pytest.approx(t.default_values[j] - other, abs=1e-12)
    # 40 candidates, 11 values of a and of b, the other kind, the 4 other values of e;
    # on 2 data sets.
    assert t.evaluations == 2 * (40 + 11 + 11 + 1 + 4)


def test_tunability_conditional_dimension_inactive_at_default():
    space = Space(
        {"opt": Categorical(("sgd", "adam")), "momentum": Real(0.0, 1.0)},
        conditions={"momentum": Condition("opt", ("sgd",))},
    )

    def risk(c, d):
        return 0.0 if c["opt"] == "adam" else 1.0 + (c["momentum"] - 0.5) ** 2

    t = analysis.tunability(risk, space, ["one"], candidates=8)
    assert t.default == {"opt": "adam"} and np.isnan(t.per_dim["momentum"][0])
    assert t.per_dim["opt"][0] == 0.0


# -- seed robustness -----------------------------------------------------------------------


def test_probability_better_against_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.normal(1.0, 0.3, 7), rng.normal(0.8, 0.3, 5)
    pairs = np.mean([(b < a) + 0.5 * (b == a) for a in x for b in y])
    p = analysis.probability_better(x, y)
    assert p.estimate == pytest.approx(pairs, abs=1e-15)
    assert 0 <= p.low <= p.estimate <= p.high <= 1
    q = analysis.probability_better(-x, -y, direction="maximize")
    assert q.estimate == pytest.approx(p.estimate, abs=1e-15)
    assert analysis.probability_better([1.0], [2.0]) == (0.0, 0.0, 1.0)


def test_seed_robustness_counts_and_intervals():
    v = np.array(
        [
            [1.0, 1.1, 0.9, 1.0],  # best mean
            [1.05, 0.95, 1.2, 1.1],  # close competitor
            [3.0, 3.1, 2.9, 3.2],  # far behind
        ]
    )
    r = analysis.seed_robustness(v, top_k=1)
    assert r.chosen == 0 and r.order.tolist() == [0, 1, 2]
    # Per seed the best is config 0, 1, 0, 0: in the top 1 on 3 of 4 seeds.
    assert r.in_top_k.tolist() == [0.75, 0.25, 0.0]
    ci = scipy.stats.binomtest(3, 4).proportion_ci(0.95, "exact")
    assert (r.in_top_k_low[0], r.in_top_k_high[0]) == (ci.low, ci.high)
    s = v.std(axis=1, ddof=1)
    half = scipy.stats.t.ppf(0.975, 3) * s / 2
    np.testing.assert_allclose(r.ci_high - r.mean, half)
    assert r.p_better[0] == 0.5 and r.p_better[2] == 0.0
    assert 0 < r.p_better[1] < 0.5
    m = analysis.seed_robustness(-v, top_k=1, direction="maximize")
    assert m.chosen == 0 and m.in_top_k.tolist() == r.in_top_k.tolist()
    with pytest.raises(ValueError, match="values must be finite"):
        analysis.seed_robustness([[1.0, np.nan]])
    with pytest.raises(ValueError, match="top_k must be an int of at least 1, got top_k=0"):
        analysis.seed_robustness(v, top_k=0)


# -- validation overfitting ----------------------------------------------------------------


def test_validation_gap_threshold_and_warning():
    with pytest.warns(analysis.ValidationOverfitWarning, match="above the 10% threshold"):
        g = analysis.validation_gap(0.2, 0.25)
    assert g.exceeds and g.gap == pytest.approx(0.05) and g.relative_gap == pytest.approx(0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = analysis.validation_gap(0.2, 0.21)
        acc = analysis.validation_gap(0.9, 0.85, direction="maximize", warn=False)
    assert not ok.exceeds and acc.gap == pytest.approx(0.05)
    # A gap above 10% but within two standard errors of split noise does not warn.
    rng = np.random.default_rng(0)
    val_l, test_l = rng.exponential(0.2, 30), rng.exponential(0.25, 30)
    noisy = analysis.validation_gap(
        float(val_l.mean()), float(test_l.mean()), val_losses=val_l, test_losses=test_l, warn=False
    )
    se = math.sqrt(val_l.var(ddof=1) / 30 + test_l.var(ddof=1) / 30)
    assert noisy.standard_error == pytest.approx(se)
    assert noisy.exceeds == (noisy.relative_gap > 0.1 and noisy.gap > 2 * se)
    with pytest.raises(ValueError, match="test must be a finite number, got test=nan"):
        analysis.validation_gap(0.2, float("nan"))


def test_held_out_recheck_is_outer_loss_on_both_splits(ridge_problem):
    g = analysis.held_out_recheck(ridge_problem, {"alpha": jnp.asarray(0.3)}, warn=False)
    w = problems.ridge_solution(ridge_problem, {"alpha": 0.3})
    for split, got in ((ridge_problem.val, g.val), (ridge_problem.test, g.test)):
        X, y = split
        assert got == pytest.approx(float(0.5 * jnp.mean((X @ w - y) ** 2)), rel=1e-8)
    no_test = problems.ridge(*ridge_problem.train, *ridge_problem.val)
    with pytest.raises(ValueError, match="has no test data"):
        analysis.held_out_recheck(no_test, {"alpha": jnp.asarray(0.3)})


def test_nested_cv_gap_of_a_selection():
    # Selecting the best of many random "models" on the inner rows flatters them: the
    # nested estimate is worse than the selection value on every fold.
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    candidates = rng.normal(scale=0.3, size=200)

    def select(tr):
        losses = [np.mean((y[tr][:20] - c) ** 2) for c in candidates]  # 20 rows: noisy
        k = int(np.argmin(losses))
        return candidates[k], float(losses[k])

    def evaluate(c, tr, te):
        return float(np.mean((y[te] - c) ** 2))

    r = analysis.nested_cv(select, evaluate, 200, folds=5, warn=False)
    assert len(r.configs) == 5 and r.gap.shape == (5,)
    np.testing.assert_allclose(r.gap, r.test - r.val)
    assert r.mean_gap > 0 and r.gap_ci_low <= r.mean_gap <= r.gap_ci_high
    assert r.overall.gap == pytest.approx(r.test.mean() - r.val.mean())
