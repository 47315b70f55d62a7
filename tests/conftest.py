"""Test configuration: float64 on, a PRNG key fixture, a derandomized Hypothesis profile,
and one compilation cache for the whole test run.

The cache: unless `HYPERGRAD_CACHE_DIR` is set or `HYPERGRAD_CACHE=0`, compiled programs
go to pytest's cache folder (`.pytest_cache/d/hypergrad-jax`, emptied by
`--cache-clear`), set in `os.environ` before any test module imports hypergrad, so that
xdist workers and every subprocess a test starts share it, and a second run of the
suite loads what the first compiled.
"""

import os
import sys
import tempfile
from pathlib import Path

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


_OFF = ("0", "false", "off", "no")  # hypergrad._cache's spellings of "off"


def pytest_configure(config):
    switched_off = os.environ.get("HYPERGRAD_CACHE", "").strip().lower() in _OFF
    if os.environ.get("HYPERGRAD_CACHE_DIR") or switched_off:
        return
    cache = getattr(config, "cache", None)  # absent under -p no:cacheprovider
    if cache is not None:
        folder = cache.mkdir("hypergrad-jax")
    else:
        folder = Path(tempfile.gettempdir()) / f"hypergrad-tests-{os.getuid()}"
    os.environ["HYPERGRAD_CACHE_DIR"] = str(folder)
    if "hypergrad" in sys.modules:  # imported by a plugin before this hook: switch it
        sys.modules["hypergrad"].enable_cache(folder)


@pytest.fixture
def key():
    return jax.random.key(0)
