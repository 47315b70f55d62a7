"""The compilation cache: on by default, moved by HYPERGRAD_CACHE_DIR, switched off by
HYPERGRAD_CACHE=0 or disable_cache(); a second process loads every program the first
compiled; other numbers (tolerance, penalty) reuse the same program in one process.

Fresh processes are subprocesses with a clean environment (no hypergrad or JAX cache
settings inherited from the test run), each given its own empty folders.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad
from hypergrad import _cache
from hypergrad.tune import hoag

from ._problems import count_compilations, logistic_problem

_INHERITED = ("HYPERGRAD_CACHE", "HYPERGRAD_CACHE_DIR", "XDG_CACHE_HOME")


def _child(code, tmp_path, check=True, **env):
    """Run `code` in a fresh interpreter; its last stdout line is JSON, returned parsed."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in _INHERITED and not k.startswith("JAX_COMPILATION_CACHE")
    }
    base["HOME"] = str(tmp_path / "home")  # the default folder, if used, is a fresh one
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if not check:
        return proc
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


_REPORT = """
import json, jax, jax.numpy as jnp, hypergrad
jax.jit(lambda x: jnp.sin(x) * 2.0)(jnp.ones(3)).block_until_ready()
print(json.dumps({
    "dir": None if hypergrad.cache_dir() is None else str(hypergrad.cache_dir()),
    "entry": hypergrad._cache.entry_folder(),
    "min_time": jax.config.jax_persistent_cache_min_compile_time_secs,
    "min_size": jax.config.jax_persistent_cache_min_entry_size_bytes,
}))
"""


def test_default_root_follows_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.default_root() == tmp_path / "xdg" / "hypergrad" / "jax"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid by the XDG spec
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if sys.platform.startswith("linux"):
        assert _cache.default_root() == tmp_path / "home" / ".cache" / "hypergrad" / "jax"


def test_cache_is_on_by_default_in_the_users_cache_folder(tmp_path):
    out = _child(_REPORT, tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    root = tmp_path / "xdg" / "hypergrad" / "jax"
    assert out["dir"] == str(root / out["entry"])
    # The folder names the library's and JAX's versions and the machine.
    assert f"hypergrad-{hypergrad.__version__}_jax-{jax.__version__}_" in out["entry"]
    # JAX's thresholds lowered: a program compiled in milliseconds is written too.
    assert out["min_time"] == 0.0 and out["min_size"] == -1
    assert any(name.startswith("jit__lambda") for name in _files(root / out["entry"]))


def test_hypergrad_cache_dir_moves_it_and_hypergrad_cache_0_switches_it_off(tmp_path):
    moved = tmp_path / "moved"
    out = _child(_REPORT, tmp_path, HYPERGRAD_CACHE_DIR=str(moved))
    assert out["dir"] == str(moved / out["entry"]) and _files(moved)
    assert not (tmp_path / "home").exists()  # nothing in the default folder

    off = tmp_path / "off"
    for value in ("0", "off", "False"):
        out = _child(_REPORT, tmp_path, HYPERGRAD_CACHE_DIR=str(off), HYPERGRAD_CACHE=value)
        assert out["dir"] is None and out["min_time"] == 1.0  # JAX's defaults untouched
    assert _files(off) == [] and not (tmp_path / "home").exists()


def test_a_cache_the_user_configured_in_jax_is_left_alone(tmp_path):
    mine = tmp_path / "mine"
    out = _child(_REPORT, tmp_path, JAX_COMPILATION_CACHE_DIR=str(mine))
    assert out["dir"] == str(mine) and out["min_time"] == 1.0 and out["min_size"] == 0
    assert not (tmp_path / "home").exists()


def test_a_bad_switch_is_refused_naming_the_variable_and_value(tmp_path):
    proc = _child("import hypergrad", tmp_path, check=False, HYPERGRAD_CACHE="maybe")
    assert proc.returncode != 0
    assert "HYPERGRAD_CACHE='maybe'" in proc.stderr


def test_enable_cache_on_a_path_that_cannot_be_a_folder_raises(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    before = hypergrad.cache_dir()
    with pytest.raises(OSError, match="a_file"):
        hypergrad.enable_cache(blocker)
    assert hypergrad.cache_dir() == before  # nothing changed


def test_disable_and_enable_in_process_and_subprocesses_follow(tmp_path):
    code = f"""
    import json, os, subprocess, sys
    from pathlib import Path
    import jax, jax.numpy as jnp, hypergrad

    def files(folder):
        return sorted(str(p) for p in Path(folder).rglob("*") if p.is_file())

    a, b = Path({str(tmp_path / "a")!r}), Path({str(tmp_path / "b")!r})
    out = {{}}
    out["a"] = str(hypergrad.enable_cache(a))
    jax.jit(lambda x: x + 1.0)(1.0).block_until_ready()
    out["a_files"] = len(files(a))
    hypergrad.disable_cache()
    out["off_dir"] = hypergrad.cache_dir()
    out["off_min_time"] = jax.config.jax_persistent_cache_min_compile_time_secs
    out["off_env"] = os.environ["HYPERGRAD_CACHE"]
    jax.jit(lambda x: x * 3.0)(1.0).block_until_ready()
    out["a_files_after_off"] = len(files(a))
    out["b"] = str(hypergrad.enable_cache(b))
    jax.jit(lambda x: x - 5.0)(1.0).block_until_ready()
    out["b_files"] = len(files(b))
    out["child"] = subprocess.run(
        [sys.executable, "-c", "import hypergrad; print(hypergrad.cache_dir())"],
        capture_output=True, text=True, check=True).stdout.strip()
    print(json.dumps(out))
    """
    out = _child(code, tmp_path)
    assert out["a"].startswith(str(tmp_path / "a")) and out["a_files"] >= 1
    assert out["off_dir"] is None and out["off_min_time"] == 1.0 and out["off_env"] == "0"
    assert out["a_files_after_off"] == out["a_files"]  # nothing written while off
    assert out["b"].startswith(str(tmp_path / "b")) and out["b_files"] >= 1
    assert out["child"] == out["b"]  # a subprocess started afterwards uses the same


_HYPERGRADIENT = """
import json, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import hypergrad
from hypergrad import problems

events = {"compile": 0, "hits": 0, "misses": 0}
def on_duration(event, duration, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
        events["compile"] += 1  # fires for every program compiled or loaded from disk
def on_event(event, **kw):
    if event == "/jax/compilation_cache/cache_hits":
        events["hits"] += 1
    if event == "/jax/compilation_cache/cache_misses":
        events["misses"] += 1
jax.monitoring.register_event_duration_secs_listener(on_duration)
jax.monitoring.register_event_listener(on_event)

X, y = problems.synthetic_classification(50, 4, seed=0)
problem = problems.logistic(X[:30], y[:30], X[30:], y[30:], alpha=0.1)
grad = jax.jit(jax.grad(lambda la: hypergrad.outer_loss(problem, {"alpha": jnp.exp(la)})))
g = grad(jnp.log(0.1))
print(json.dumps({**events, "grad": float(g)}))
"""


def test_a_second_process_compiles_nothing_new(tmp_path):
    env = {"HYPERGRAD_CACHE_DIR": str(tmp_path / "cache")}
    first = _child(_HYPERGRADIENT, tmp_path, **env)
    second = _child(_HYPERGRADIENT, tmp_path, **env)
    # The first process compiles (a problem's input checks, the hypergradient) and
    # writes every program; the second loads every one of them from disk.
    assert first["compile"] >= 2 and first["hits"] == 0 and first["misses"] == first["compile"]
    assert second["hits"] == second["compile"] == first["compile"] and second["misses"] == 0
    assert second["grad"] == first["grad"]  # the same program: the same number, bit for bit


@pytest.fixture(scope="module")
def logistic():
    return logistic_problem(alpha=0.1)


def test_other_tolerances_and_penalties_reuse_the_program(logistic):
    step = jax.jit(lambda h, tol: hypergrad.hypergradient(logistic, h, tol=tol).grad)
    first = step({"alpha": jnp.asarray(0.1)}, 1e-6)
    with count_compilations() as compiled:
        again = step({"alpha": jnp.asarray(0.3)}, 1e-9)
        loose = step({"alpha": jnp.asarray(0.1)}, 1e-3)
    assert compiled == []
    assert not np.allclose(first["alpha"], again["alpha"])  # the numbers did reach it
    assert not np.array_equal(first["alpha"], loose["alpha"])


def test_hoag_with_other_numbers_compiles_nothing(logistic):
    hoag(logistic, max_iter=3)
    with count_compilations() as compiled:
        res = hoag(logistic, {"alpha": 0.5}, max_iter=3, tol=1e-3, lower=1e-4, upper=5.0)
    assert compiled == [] and res.num_solves >= 1


def test_a_shared_folder_is_locked_when_filelock_is_installed(tmp_path):
    # Without a size limit JAX reads and writes entries unlocked, and a worker reading
    # an entry another was writing crashed; with one it takes a file lock around both.
    pytest.importorskip("filelock")
    code = """
    import json, jax, hypergrad
    print(json.dumps({"dir": str(hypergrad.cache_dir()),
                      "max_size": jax.config.jax_compilation_cache_max_size}))
    """
    out = _child(code, tmp_path, HYPERGRAD_CACHE_DIR=str(tmp_path / "cache"))
    assert out["dir"].startswith(str(tmp_path / "cache"))
    assert out["max_size"] == _cache.LOCKED_MAX_SIZE
