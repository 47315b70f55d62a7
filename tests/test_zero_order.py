"""Zero-order estimators: ES as a method and in scalar form, PES against truncation bias.

ES estimates are random; each test fixes the seed and bounds the error by the
estimator's own standard deviation. For an antithetic estimate of a smooth function the
error of entry j is, to first order in sigma, `((1/N) sum_i e_i e_i^T g - g)_j`, whose
variance is exactly `(||g||^2 + g_j^2) / N` for Gaussian directions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import problems
from hypergrad.methods import ES, PES, es_value_and_grad
from hypergrad.solvers import OptaxSolver

from ._problems import ridge_problem


def _es_sd(g, n):
    g = np.asarray(g)
    return np.sqrt((np.sum(g**2) + g**2) / n)


@pytest.fixture(scope="module")
def ridge():
    pb = ridge_problem(per_feature=True)
    return pb, problems.ridge_hypergradient(pb, pb.hparams)["alpha"]


def _es_grad(pb, hparams, key, n, sigma=1e-4):
    return jax.grad(lambda h: hg.outer_loss(pb, h, method=ES(n, sigma, key)))(hparams)["alpha"]


def test_es_method_agrees_with_closed_form_within_its_standard_deviation(ridge):
    pb, exact = ridge
    n = 4000
    est = jax.jit(_es_grad, static_argnums=3)(pb, pb.hparams, jax.random.key(0), n)
    # Four standard deviations per entry (sigma = 1e-4 makes the O(sigma^2) smoothing
    # bias ~1e-8, negligible); a fixed seed makes this deterministic.
    bound = 4 * _es_sd(exact, n)
    assert np.all(np.abs(est - exact) < bound), (est, exact, bound)
    # Not vacuous: the bound is a small fraction of the gradient's scale.
    assert np.max(bound) < 0.15 * np.linalg.norm(exact)


def test_es_error_shrinks_like_predicted_standard_deviation_over_keys(ridge):
    # vmap over keys: the root-mean-square error over 400 independent estimates must
    # match the predicted standard deviation. 400 draws estimate it to a few percent
    # (the error is a sum of products of Gaussians, kurtosis below 9: relative standard
    # error of the RMS under sqrt(8 / 400) / 2 ~ 7%), so allow 25%.
    pb, exact = ridge
    n = 50
    keys = jax.random.split(jax.random.key(1), 400)
    ests = jax.jit(jax.vmap(lambda k: _es_grad(pb, pb.hparams, k, n)))(keys)
    rms = np.sqrt(np.mean((np.asarray(ests) - np.asarray(exact)) ** 2, axis=0))
    np.testing.assert_allclose(rms, _es_sd(exact, n), rtol=0.25)


def test_es_same_key_same_result_and_jit_matches_eager(ridge):
    pb, _ = ridge
    k0, k1 = jax.random.key(5), jax.random.key(6)
    eager = _es_grad(pb, pb.hparams, k0, 64)
    # The estimate is a function of the key alone: a second eager call, with a new ES
    # object built from an equal key, draws the same directions (a method that kept a
    # counter or split a stored key per call would not).
    np.testing.assert_array_equal(_es_grad(pb, pb.hparams, jax.random.key(5), 64), eager)
    jitted = jax.jit(_es_grad, static_argnums=3)
    np.testing.assert_allclose(jitted(pb, pb.hparams, k0, 64), eager, rtol=1e-10)
    assert not np.allclose(jitted(pb, pb.hparams, k1, 64), eager)


def test_es_method_vmaps_over_hparams_and_jvp():
    pb = ridge_problem()  # scalar alpha
    alphas = jnp.array([0.1, 0.5, 2.0])
    exact = jnp.stack([problems.ridge_hypergradient(pb, {"alpha": a})["alpha"] for a in alphas])
    n = 3000
    key = jax.random.key(2)
    ests = jax.jit(jax.vmap(lambda a: _es_grad(pb, {"alpha": a}, key, n)))(alphas)
    # One hyperparameter: the error is (mean(e^2) - 1) g with sd sqrt(2/N) |g|.
    assert np.all(np.abs(ests - exact) < 4 * np.sqrt(2 / n) * np.abs(exact))
    # Forward mode gives the same linear map.
    f = lambda a: hg.outer_loss(pb, {"alpha": a}, method=ES(n, 1e-4, key))  # noqa: E731
    _, tangent = jax.jvp(f, (alphas[1],), (1.0,))
    np.testing.assert_allclose(tangent, ests[1], rtol=1e-8)


def test_es_reaches_a_learning_rate_that_only_the_solver_reads():
    # w_3 = 1 - (1 - lr)^3 for three SGD steps from 0 on (w - 1)^2 / 2: dw_3/dlr = 3(1-lr)^2.
    fun = lambda w, h, args: 0.5 * jnp.sum((w - 1.0) ** 2)  # noqa: E731
    solver = OptaxSolver(lambda h: optax.sgd(h), max_steps=3, tol=None)
    n = 2000
    method = ES(n, 1e-4, jax.random.key(0))
    g = jax.grad(lambda lr: hg.solve(fun, 0.0, lr, solver=solver, method=method).params)(0.5)
    exact = 3 * 0.5**2
    assert abs(float(g) - exact) < 4 * np.sqrt(2 / n) * exact


def test_es_value_and_grad_smooths_a_step_function():
    # f(h) = 1[h > 0] has zero gradient almost everywhere; its Gaussian smoothing
    # Phi(h / sigma) has derivative phi(h / sigma) / sigma, which ES estimates.
    f = lambda h: (h > 0).astype(jnp.float64)  # noqa: E731
    h, sigma, n = 0.05, 0.1, 20_000
    keys = jax.random.split(jax.random.key(0), 1)
    value, g = jax.jit(
        lambda k: es_value_and_grad(f, jnp.asarray(h), k, num_samples=n, sigma=sigma)
    )(keys[0])
    target = np.exp(-0.5 * (h / sigma) ** 2) / np.sqrt(2 * np.pi) / sigma
    # Per pair, |f(+)-f(-)| / (2 sigma) * |e| is bounded by |e| / (2 sigma): standard
    # deviation at most 1 / (2 sigma sqrt(N)) ~ 0.035; allow 4 of them.
    assert float(value) == 1.0
    assert abs(float(g) - target) < 4 / (2 * sigma * np.sqrt(n))


def test_es_value_and_grad_non_antithetic_and_pytrees():
    f = lambda h: jnp.sum(h["a"] ** 2) + 3 * h["b"]  # noqa: E731
    h = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    n = 20_000
    _, g = es_value_and_grad(f, h, jax.random.key(0), num_samples=n, sigma=1e-3)
    exact = np.array([2.0, -4.0, 3.0])
    got = np.concatenate([np.asarray(g["a"]), np.asarray(g["b"])[None]])
    assert np.all(np.abs(got - exact) < 4 * _es_sd(exact, n))
    # Without antithetic pairs the variance also carries f's second-order term; with
    # sigma = 1e-3 it is negligible and the same bound holds.
    _, g1 = es_value_and_grad(f, h, jax.random.key(0), num_samples=n, sigma=1e-3, antithetic=False)
    got1 = np.concatenate([np.asarray(g1["a"]), np.asarray(g1["b"])[None]])
    assert np.all(np.abs(got1 - exact) < 4 * _es_sd(exact, n))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_es_rejects_bad_num_samples(bad):
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        ES(bad, 0.1, jax.random.key(0))
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        es_value_and_grad(jnp.sum, jnp.ones(2), jax.random.key(0), num_samples=bad)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan")])
def test_es_rejects_bad_sigma(bad):
    with pytest.raises(ValueError, match="sigma must be a positive"):
        ES(10, bad, jax.random.key(0))


def test_es_requires_a_key():
    with pytest.raises(ValueError, match="key must be a PRNG key"):
        ES(10, 0.1)


# PES on a toy unroll where truncation is measurably biased: x_{t+1} = a x_t + theta,
# the loss of each truncation is (x_end - 1)^2, quadratic in theta, so Gaussian
# smoothing leaves its gradient unchanged and the full-unroll gradient is the target.
A, T, K = 0.9, 20, 5


def _unroll(x, theta, step, num_steps):
    del step
    x = jax.lax.fori_loop(0, num_steps, lambda _, x: A * x + theta, x)
    return x, (x - 1.0) ** 2


def _full_gradient(theta):
    def total(th):
        x, tot = jnp.zeros(()), 0.0
        for _ in range(T // K):
            x, loss = _unroll(x, th, 0, K)
            tot = tot + loss
        return tot

    return jax.grad(total)(theta)


def _truncated_backprop(theta):
    x, g = jnp.zeros(()), 0.0
    for _ in range(T // K):
        start = jax.lax.stop_gradient(x)
        g = g + jax.grad(lambda th, s=start: _unroll(s, th, 0, K)[1])(theta)
        x, _ = _unroll(x, theta, 0, K)
    return g


def _episode_estimates(persistent, num_runs=1000):
    theta = jnp.array(0.05)
    pes = PES(4, 0.05, K, T, persistent=persistent)

    def episode(key):
        state = pes.init(key, theta, jnp.zeros(()))

        def body(s, _):
            g, _, s = pes.step(s, theta, _unroll)
            return s, g

        final, gs = jax.lax.scan(body, state, None, length=T // K)
        return gs.sum(), final.step

    keys = jax.random.split(jax.random.key(0), num_runs)
    est, steps = jax.jit(jax.vmap(episode))(keys)
    assert np.all(np.asarray(steps) == 0)  # every particle restarted after T steps
    return np.asarray(est)


def test_pes_is_unbiased_where_truncation_is_not():
    theta = jnp.array(0.05)
    full = float(_full_gradient(theta))
    tbptt = float(_truncated_backprop(theta))
    pes = _episode_estimates(True)
    tes = _episode_estimates(False)
    se_pes = pes.std(ddof=1) / np.sqrt(pes.size)
    se_tes = tes.std(ddof=1) / np.sqrt(tes.size)
    # PES: the mean of 1000 independent episode estimates is within 3 standard errors
    # of the full-unroll gradient (a fixed seed; 3 SE fails 0.3% of seeds).
    assert abs(pes.mean() - full) < 3 * se_pes, (pes.mean(), full, se_pes)
    # Truncated backpropagation (deterministic) and truncated ES miss it by far more
    # than PES's standard error: their bias is about 40% of the gradient here.
    assert abs(tbptt - full) > 10 * se_pes and abs(tbptt - full) > 0.2 * abs(full)
    assert abs(tes.mean() - full) > 10 * se_tes
    # Truncated ES estimates what truncated backprop computes, not the full gradient.
    assert abs(tes.mean() - tbptt) < 3 * se_tes


def test_pes_steps_follow_the_estimator_formula_on_a_pytree_theta():
    """Two PES steps on a pytree theta against the estimator written out here with numpy:
    g_j = sum_i xi_i L_j(i) / (2 N sigma^2), with xi_i the sum of particle i's
    perturbations so far and L_j(i) its loss after continuing its own unroll."""

    def unroll(x, theta, step, num_steps):
        x = jax.lax.fori_loop(0, num_steps, lambda _, x: theta["a"] * x + theta["b"], x)
        return x, jnp.sum((x - 1.0) ** 2)

    def unroll_np(x, a, b, num_steps):
        for _ in range(num_steps):
            x = a * x + b
        return x, float(np.sum((x - 1.0) ** 2))

    theta = {"a": jnp.array(0.5), "b": jnp.array([0.1, 0.2])}
    n, sigma, k = 3, 0.1, 2
    pes = PES(n, sigma, k, 6)
    step = jax.jit(lambda s, th: pes.step(s, th, unroll))
    s0 = pes.init(jax.random.key(3), theta, jnp.zeros(2))
    g1, l1, s1 = step(s0, theta)
    g2, l2, s2 = step(s1, theta)
    assert jax.tree.structure(g1) == jax.tree.structure(theta)
    assert int(s1.step) == 2 and s1.xi.shape == (2 * n, 3)
    # Antithetic pairs, and persistence: the second step adds new perturbations to xi.
    xi1, xi2 = np.asarray(s1.xi), np.asarray(s2.xi)
    np.testing.assert_allclose(xi1[n:], -xi1[:n])
    eps2 = xi2 - xi1
    np.testing.assert_allclose(eps2[n:], -eps2[:n])
    assert np.min(np.abs(eps2)) > 0 and np.min(np.abs(xi1)) > 0
    base = np.array([0.5, 0.1, 0.2])  # ravel order of theta: a, then b
    states = np.zeros((2 * n, 2))
    for xi, eps, g, mean_loss in ((xi1, xi1, g1, l1), (xi2, eps2, g2, l2)):
        losses = np.zeros(2 * n)
        for i in range(2 * n):
            th = base + eps[i]  # this truncation's perturbed theta for particle i
            states[i], losses[i] = unroll_np(states[i], th[0], th[1:], k)
        want = xi.T @ losses / (2 * n * sigma**2)
        got = np.concatenate([np.atleast_1d(g["a"]), np.asarray(g["b"])])
        # The same arithmetic in another order: rounding only.
        np.testing.assert_allclose(got, want, rtol=1e-10)
        np.testing.assert_allclose(mean_loss, losses.mean(), rtol=1e-12)
    # Same key, same estimate (eagerly too); another key, another estimate.
    g1_again, _, _ = pes.step(pes.init(jax.random.key(3), theta, jnp.zeros(2)), theta, unroll)
    np.testing.assert_allclose(g1_again["b"], g1["b"], rtol=1e-12)
    g1_other, _, _ = step(pes.init(jax.random.key(4), theta, jnp.zeros(2)), theta)
    assert not np.allclose(g1_other["b"], g1["b"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(truncation=30, total_steps=20), "longer than the unroll"),
        (dict(truncation=3, total_steps=20), "must divide"),
        (dict(truncation=0, total_steps=20), "truncation must be a positive int"),
        (dict(truncation=5, total_steps=20, num_particles=0), "num_particles"),
        (dict(truncation=5, total_steps=20, sigma=0.0), "sigma"),
    ],
)
def test_pes_rejects_bad_input(kwargs, match):
    kwargs = {"num_particles": 2, "sigma": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        PES(**kwargs)
