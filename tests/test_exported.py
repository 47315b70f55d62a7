"""Exported programs (`hypergrad._exported`): a fresh process fits an estimator without
tracing its programs again, with the same result as the plain (cache off) fit; only code
inside `enabled()` uses them; a torn entry is rewritten; other shapes get other entries."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hypergrad import _cache, _exported

from .test_cache import _child

pytest.importorskip("flatbuffers")
pytest.importorskip("sklearn")

_FIT = """
import json, jax
import numpy as np
traced = []
def on_duration(event, duration, fun_name=None, **kw):
    if event == "/jax/core/compile/jaxpr_trace_duration":
        traced.append(fun_name)
jax.monitoring.register_event_duration_secs_listener(on_duration)
from sklearn.datasets import load_diabetes
from hypergrad.sklearn import HyperLasso
X, y = load_diabetes(return_X_y=True)
X = (X - X.mean(0)) / X.std(0)
m = HyperLasso(max_iter=8).fit(X[:200], y[:200])
print(json.dumps({"traced": traced, "alpha": m.alpha_, "coef": m.coef_.tolist(),
                  "steps": m.n_iter_}))
"""


def test_a_fresh_process_fits_without_tracing_and_matches_the_plain_fit(tmp_path, monkeypatch):
    from sklearn.datasets import load_diabetes

    from hypergrad.sklearn import HyperLasso

    env = {"HYPERGRAD_CACHE_DIR": str(tmp_path / "cache")}
    first = _child(_FIT, tmp_path, **env)
    second = _child(_FIT, tmp_path, **env)
    # The first process traces HOAG's loop and the refit to export them; the second reads
    # both back and traces neither, exported or plain (only small helpers such as the
    # data's centering).
    programs = {"exported_hoag", "exported_refit"}
    assert programs <= set(first["traced"])
    assert not (programs | {"_fit", "_solve"}) & set(second["traced"])
    assert list((tmp_path / "cache" / "exported").rglob("hoag-*.bin"))
    assert second["alpha"] == first["alpha"] and second["coef"] == first["coef"]
    # The same numbers as this process's fit with export off (no cache folder for it).
    monkeypatch.setattr(_cache, "cache_dir", lambda: None)
    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    plain = HyperLasso(max_iter=8).fit(X[:200], y[:200])
    assert plain.n_iter_ == first["steps"]
    np.testing.assert_allclose(first["alpha"], plain.alpha_, rtol=1e-12)
    np.testing.assert_allclose(first["coef"], plain.coef_, rtol=1e-10, atol=1e-12)


@pytest.fixture
def cache_on(tmp_path):
    previous = _cache.cache_dir()
    folder = _cache.enable_cache(tmp_path / "cache")
    _exported._MEMORY.clear()
    try:
        yield folder
    finally:
        _exported._MEMORY.clear()
        if previous is None:
            _cache.disable_cache()
        else:
            _cache.enable_cache(previous.parent)


_TUNE = """
import json, jax, optuna
jax.config.update("jax_enable_x64", True)
traced = []
def on_duration(event, duration, fun_name=None, **kw):
    if event == "/jax/core/compile/jaxpr_trace_duration":
        traced.append(fun_name)
jax.monitoring.register_event_duration_secs_listener(on_duration)
from hypergrad import _exported
from hypergrad.cli._demo import SPACE, problem
from hypergrad.records import Records
from hypergrad.tune import tune
records = Records.open(optuna.storages.InMemoryStorage(), "t")
with _exported.enabled():
    res = tune(problem, SPACE, rounds=2, population=2, steps=3, refine=1, records=records)
print(json.dumps({"traced": traced, "value": res.value, "config": res.config}))
"""


def test_a_fresh_process_tunes_the_demo_without_tracing_its_descent(tmp_path):
    """The descent's programs return optax's and the tuner's namedtuples: the first
    process registers them and lists them in the entries, the second registers them from
    there before reading the programs back."""
    import optuna

    from hypergrad.cli._demo import SPACE, problem
    from hypergrad.records import Records
    from hypergrad.tune import tune

    env = {"HYPERGRAD_CACHE_DIR": str(tmp_path / "cache")}
    first = _child(_TUNE, tmp_path, **env)
    second = _child(_TUNE, tmp_path, **env)
    programs = {"exported_descent-init", "exported_descent-run", "exported_tune-test"}
    assert programs <= set(first["traced"])
    assert not (programs | {"_init", "_run", "_test_outer"}) & set(second["traced"])
    assert second == {**first, "traced": second["traced"]}
    records = Records.open(optuna.storages.InMemoryStorage(), "plain")
    plain = tune(problem, SPACE, rounds=2, population=2, steps=3, refine=1, records=records)
    assert plain.config == pytest.approx(first["config"], rel=1e-12)
    assert plain.value == pytest.approx(first["value"], rel=1e-12)


def _entries(folder):
    return sorted((folder.parent / "exported").rglob("*.bin"))


@jax.jit
def _double_sum(x):
    return {"sum": 2.0 * jnp.sum(x)}


def test_only_enabled_blocks_export_and_shapes_key_the_entries(cache_on):
    x = jnp.arange(3.0)
    assert float(_exported.call("t", _double_sum, x)["sum"]) == 6.0
    assert _entries(cache_on) == []  # outside enabled(): a plain call
    with _exported.enabled():
        assert float(_exported.call("t", _double_sum, x)["sum"]) == 6.0
        assert len(_entries(cache_on)) == 1
        assert float(_exported.call("t", _double_sum, jnp.arange(4.0))["sum"]) == 12.0
    assert len(_entries(cache_on)) == 2


def _scaled_sum(x, *, scale):
    return {"sum": scale * jnp.sum(x)}


def test_static_settings_bound_to_the_function_key_the_entries(cache_on):
    # HOAG's step limit is bound by functools.partial, not passed as an array: two limits
    # on the same data must not share a program.
    x = jnp.arange(3.0)
    with _exported.enabled():
        two = _exported.call("t", jax.jit(functools.partial(_scaled_sum, scale=2.0)), x)
        three = _exported.call("t", jax.jit(functools.partial(_scaled_sum, scale=3.0)), x)
    assert (float(two["sum"]), float(three["sum"])) == (6.0, 9.0)
    assert len(_entries(cache_on)) == 2


def test_a_torn_entry_is_ignored_and_rewritten(cache_on):
    x = jnp.arange(3.0)
    with _exported.enabled():
        _exported.call("t", _double_sum, x)
    (entry,) = _entries(cache_on)
    whole = entry.read_bytes()
    entry.write_bytes(whole[: len(whole) // 2])  # a writer that died half-way
    assert _exported._load(entry) is None
    _exported._MEMORY.clear()
    with _exported.enabled():
        assert float(_exported.call("t", _double_sum, x)["sum"]) == 6.0
    assert _exported._load(entry) is not None  # rewritten whole: it deserializes again


def test_a_program_that_cannot_be_exported_runs_plain(cache_on):
    @jax.jit
    def with_callback(x):
        return jax.pure_callback(lambda v: np.asarray(v) + 1.0, jax.typeof(x), x)

    with _exported.enabled():
        out = _exported.call("cb", with_callback, jnp.arange(3.0))
    np.testing.assert_array_equal(np.asarray(out), [1.0, 2.0, 3.0])
    assert _entries(cache_on) == []
