"""Test configuration: float64 on, a PRNG key fixture, a derandomized Hypothesis profile,
one BLAS thread per process, and one compilation cache for the whole test run.

The cache: off for the suite (`HYPERGRAD_CACHE=0` set in `os.environ` before any test
module imports hypergrad, so xdist workers and every subprocess a test starts inherit
it) unless `HYPERGRAD_CACHE_DIR` is set, which turns it on in that folder for the whole
run. Tests of the cache itself run in subprocesses with folders of their own. Why off:
with one cache for the run, an xdist worker died twice in a full run (segmentation fault
in JAX's `put_executable_and_time` / `get_executable_and_time`, serializing or reading a
program of `tune`); the tests alone pass. A third crash, with the cache off, came inside
XLA's compiler once the worker's memory mappings neared the kernel's limit (see
`release_compiled_programs`), the likely cause of all three; the cache stays off until a
full run with it on shows that.
"""

import gc
import os
import sys

import jax
import pytest
import scipy.linalg  # noqa: F401  (JAX's CPU LAPACK is SciPy's OpenBLAS: loaded before the limit)
from hypothesis import HealthCheck, settings
from threadpoolctl import threadpool_limits

jax.config.update("jax_enable_x64", True)

# One BLAS thread per test process (two xdist workers share two cores; the threads of a
# factorization wait for the other worker's, see hypergrad/_threads.py), and in the
# processes the tests start. Tests of thread counts set their own.
threadpool_limits(1)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,  # compilation time is not the code's speed
    max_examples=15,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    del config
    if os.environ.get("HYPERGRAD_CACHE_DIR"):
        return
    os.environ["HYPERGRAD_CACHE"] = "0"
    if "hypergrad" in sys.modules:  # imported by a plugin before this hook: switch it
        sys.modules["hypergrad"].disable_cache()


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
    """Drop every compiled program after each test module (`jax.clear_caches()`).

    Each XLA CPU executable holds about three memory mappings, and JAX keeps the programs
    of every jitted function alive: an xdist worker had 41,000 mappings after 10 minutes
    of the suite, and the kernel allows 65,530 (`vm.max_map_count`). At the limit LLVM's
    next allocation fails and the worker dies with a segmentation fault inside an XLA
    compilation (seen in three full runs, each time in a different test; every file alone
    passes). With `--dist loadfile` a module's tests share a worker, so its programs are
    reused within the module and released after it."""
    yield
    jax.clear_caches()
    gc.collect()
