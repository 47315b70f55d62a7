"""`hypergrad.serial_lapack`: one BLAS/LAPACK thread inside the library's loops, the
user's thread counts back afterwards (see `hypergrad._threads`)."""

import jax.numpy as jnp
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import hypergrad as hg
from hypergrad import _threads, problems
from hypergrad.tune import hoag


def _blas_threads():
    return sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})


def test_one_thread_inside_and_the_users_count_after():
    jnp.linalg.cholesky(jnp.eye(3)).block_until_ready()  # JAX's LAPACK (SciPy's) loaded
    with threadpool_limits(2, user_api="blas"):
        assert _blas_threads() == [2]  # conftest's one thread lifted for the test
        with hg.serial_lapack():
            assert _blas_threads() == [1]
        assert _blas_threads() == [2]


def test_hoag_runs_its_steps_with_one_thread():
    X, y = problems.synthetic_regression(60, 10, seed=0)
    pr = problems.lasso(X[:40], y[:40], X[40:], y[40:])
    seen = []
    with threadpool_limits(2, user_api="blas"):
        hoag(pr, max_iter=3, callback=lambda entry: seen.append(_blas_threads()))
        assert _blas_threads() == [2]
    assert seen and all(s == [1] for s in seen)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("HYPERGRAD_SERIAL_LAPACK", "0")
    _threads._controller.cache_clear()
    try:
        with threadpool_limits(2, user_api="blas"):
            with hg.serial_lapack():
                assert _blas_threads() == [2]
    finally:
        _threads._controller.cache_clear()


@pytest.mark.parametrize("value", ["1", "yes"])
def test_other_values_keep_it_on(monkeypatch, value):
    monkeypatch.setenv("HYPERGRAD_SERIAL_LAPACK", value)
    _threads._controller.cache_clear()
    try:
        with threadpool_limits(2, user_api="blas"), hg.serial_lapack():
            assert _blas_threads() == [1]
    finally:
        _threads._controller.cache_clear()
