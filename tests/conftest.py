"""Test configuration: float64 on, a PRNG key fixture, a derandomized Hypothesis profile,
one BLAS thread per process, the library's compilation cache, and XLA's compile options
for compile time.

The cache: on, as for any user (`hypergrad.cache_dir()`: the user's cache folder, or
`HYPERGRAD_CACHE_DIR`), shared by the xdist workers and every subprocess the tests
start; `HYPERGRAD_CACHE=0` in the environment turns it off for the run. A first run on a
machine compiles everything (about as long as with the cache off); later ones read most
programs back. The README's test command on a quiet 2-core machine, with a new
`HYPERGRAD_CACHE_DIR`: 976 s from the empty folder with XLA's default compile options
(at da5c64c), 531 s with the fast-compile options below (at 7b6d274), then 235 s on the
folder that run had filled (2026-11-30; the faster machine of the earlier sessions,
default options: 691 s, then 172 s). Tests of the cache itself run in subprocesses with
folders of their own. The cache was off for the suite while two xdist workers had died
in full runs (segmentation faults inside JAX's cache reads and writes, and once inside
XLA's compiler with the cache off): the workers' memory mappings had neared the kernel's
limit, which `release_compiled_programs` now prevents; full runs with the cache on have
passed since.
"""

import gc
import os

# The test programs are small and the suite spends most of its time compiling them: XLA
# compiles them for compile time, as `hypergradient` does for small data
# (`hypergrad._compile.FAST_COMPILE`: LLVM's optimizations off, XLA's loop emitters).
# Set before JAX starts its backend, and inherited by the processes the tests start.
# `HYPERGRAD_TEST_FAST_COMPILE=0` keeps XLA's defaults (the slow tests' benchmark smoke
# runs use them: .ci/run sets it for that call).
if os.environ.get("HYPERGRAD_TEST_FAST_COMPILE", "1") != "0":
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]
        + ["--xla_cpu_use_fusion_emitters=false"]
    ).strip()

import jax  # noqa: E402
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
