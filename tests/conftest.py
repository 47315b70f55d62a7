"""Test configuration: float64 on, a PRNG key fixture, a derandomized Hypothesis profile,
and one compilation cache for the whole test run.

The cache: off for the suite (`HYPERGRAD_CACHE=0` set in `os.environ` before any test
module imports hypergrad, so xdist workers and every subprocess a test starts inherit
it) unless `HYPERGRAD_CACHE_DIR` is set, which turns it on in that folder for the whole
run. Tests of the cache itself run in subprocesses with folders of their own. Why off:
with one cache for the run, an xdist worker died twice in a full run (segmentation fault
in JAX's `put_executable_and_time` / `get_executable_and_time`, serializing or reading a
program of `tune`), after other test files in the same worker had switched the cache off
and on in-process; the tests alone pass. Until that is understood, the suite does not
depend on it.
"""

import os
import sys

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

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
