"""The library's compilation cache: compiled XLA programs persist across processes.

Interface: `enable_cache(path=None)`, `disable_cache()` and `cache_dir()`; `import
hypergrad` calls `configure_at_import(version)` once. Settings, read at import:

- `HYPERGRAD_CACHE=0` (or `false`, `off`, `no`) leaves the cache off; `1` (or `true`,
  `on`, `yes`, or unset) turns it on;
- `HYPERGRAD_CACHE_DIR=PATH` moves the cache's root folder (default
  `$XDG_CACHE_HOME/hypergrad/jax`, else `~/.cache/hypergrad/jax`; `~/Library/Caches`
  on macOS, `%LOCALAPPDATA%` on Windows).

Invariant: while the cache is on, JAX's persistent compilation cache
(`jax_compilation_cache_dir`) is `ROOT/ENTRY`, where `ENTRY` names the hypergrad
version, the jax and jaxlib versions and the machine (architecture and a hash of the CPU
features), and JAX's thresholds are lowered so that every program is written, however
fast it compiled. `cache_dir()` is that folder, or None while no persistent cache is on.

Why a folder per version and machine. JAX keys an entry by a hash of the lowered
program (StableHLO, which holds everything hypergrad traced), the compile options, the
jaxlib version, the platform name and the XLA flags: a library upgrade that changes a
program changes its key, so a stale program cannot be found under it, and a program
whose lowered text did not change is the same program. The key does not hold the CPU's
features (`platform_version` reads "cpu"): a home folder shared by machines of different
CPUs would hand one machine another's executable, which XLA refuses to load (a warning
and a recompile each time, the entry never replaced). The machine in `ENTRY` keeps those
apart; the versions in it keep an old release's programs in their own folder, which can
be deleted as a whole. Programs with host callbacks (`jax.debug.print`, `pure_callback`)
are never written by JAX.

Why on at import, and what it touches. JAX has one persistent cache per process, so the
cache hypergrad turns on also keeps the user's own programs in this process. A user who
configured JAX's cache (`JAX_COMPILATION_CACHE_DIR`, `jax.config.update(
"jax_compilation_cache_dir", ...)` before `import hypergrad`, or
`JAX_ENABLE_COMPILATION_CACHE=false`) keeps their settings: hypergrad then changes
nothing. A root folder that cannot be created leaves the cache off at import (no error:
the library works without it); `enable_cache` raises instead.

Several processes on one folder (test workers, `hypergrad worker`s, a benchmark's
children). Without a size limit JAX writes and reads entries without a lock, and a
process can read an entry another is still writing: deserializing the torn program
crashed a test worker with a segmentation fault. When the `filelock` package is installed
(the `test` and `postgres` extras bring it), hypergrad sets JAX's size limit
(`jax_compilation_cache_max_size`, `LOCKED_MAX_SIZE`), which makes JAX take a file lock
around every read and write (and evict the least recently used entries beyond it);
without `filelock` the limit stays at JAX's default (none), safe for one process at a
time. Entries are a few kB to a few MB; delete the folder to reclaim the space.

`enable_cache` and `disable_cache` also set `HYPERGRAD_CACHE_DIR` and `HYPERGRAD_CACHE`
in `os.environ`, so that subprocesses started afterwards (workers, benchmarks, a test's
child) do the same.
"""

import hashlib
import logging
import os
import platform
import sys
from pathlib import Path

import jax

ENV_SWITCH = "HYPERGRAD_CACHE"
ENV_DIR = "HYPERGRAD_CACHE_DIR"

_ON = ("1", "true", "on", "yes", "")
_OFF = ("0", "false", "off", "no")

# JAX writes a program only if it took this long to compile (default 1 s) and its
# serialized form is this large; hypergrad's programs compile in 5 ms to a few seconds,
# and reading one back takes 1-5 ms (measured on the breast-cancer logistic problem), so
# every program is worth keeping. -1 for the size: no limit, and no override by JAX.
_THRESHOLDS = {
    "jax_persistent_cache_min_compile_time_secs": (1.0, 0.0),
    "jax_persistent_cache_min_entry_size_bytes": (0, -1),
}

# JAX's cache size limit when `filelock` is importable: with a limit JAX locks the folder
# around reads and writes (see the module docstring); 8 GiB is far above what a user's
# programs take (kB to MB each), so eviction is rare.
LOCKED_MAX_SIZE = 8 * 2**30


def _settings() -> dict:
    """The JAX settings `enable_cache` lowers: name -> (JAX's default, hypergrad's)."""
    settings = dict(_THRESHOLDS)
    try:
        import filelock  # noqa: F401
    except ImportError:
        return settings
    settings["jax_compilation_cache_max_size"] = (-1, LOCKED_MAX_SIZE)
    return settings


logger = logging.getLogger("hypergrad")

_version = "unknown"
# JAX settings this module changed, with the values they had, restored by disable_cache.
_saved: dict = {}


def _switch_from_env() -> bool:
    raw = os.environ.get(ENV_SWITCH, "")
    value = raw.strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(
        f"{ENV_SWITCH} must be one of {', '.join(repr(v) for v in _ON + _OFF if v)} "
        f"(or unset), got {ENV_SWITCH}={raw!r}"
    )


def default_root() -> Path:
    """The root folder when `HYPERGRAD_CACHE_DIR` is unset: the user's cache folder
    (`$XDG_CACHE_HOME`, else the platform's) plus `hypergrad/jax`."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative path is invalid, ignore it
        base = Path(xdg)
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    else:
        base = Path.home() / ".cache"
    return base / "hypergrad" / "jax"


def _absolute(path) -> Path:
    # Absolute, so that a subprocess started in another working folder finds the same.
    return Path(os.path.abspath(Path(os.fspath(path)).expanduser()))


def _root_from_env() -> Path:
    raw = os.environ.get(ENV_DIR, "")
    return _absolute(raw) if raw else default_root()


def _cpu_features() -> str:
    # Linux: the first processor's feature list (x86 "flags", ARM "Features"); reading
    # stops there, so the kernel formats one processor's entry, not all of them.
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor()


def entry_folder() -> str:
    """The subfolder of the root that holds this installation's programs:
    `hypergrad-V_jax-V_jaxlib-V_MACHINE-HASH` (HASH: 8 hex digits of the CPU features)."""
    import jaxlib

    features = hashlib.sha256(_cpu_features().encode()).hexdigest()[:8]
    return (
        f"hypergrad-{_version}_jax-{jax.__version__}_jaxlib-{jaxlib.__version__}"
        f"_{platform.machine() or 'unknown'}-{features}"
    )


def cache_dir() -> Path | None:
    """The folder JAX's persistent compilation cache reads and writes in this process
    (hypergrad's, or one the user configured in JAX), or None when none is on."""
    path = jax.config.jax_compilation_cache_dir
    if not path or not jax.config.jax_enable_compilation_cache:
        return None
    return Path(path)


def _reset_jax_cache() -> None:
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()


def _apply(root: Path) -> Path:
    folder = root / entry_folder()
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"cannot write to the compilation cache folder {str(folder)!r}")
    for name, (default, lowered) in _settings().items():
        current = getattr(jax.config, name)
        if current == default:  # a value the user chose is theirs
            _saved.setdefault(name, current)
            jax.config.update(name, lowered)
    # JAX opens its folder, and decides whether a cache is used at all, once, at the first
    # compilation after a reset; a reset is needed only if either had been settled.
    reset = jax.config.jax_compilation_cache_dir is not None
    if not jax.config.jax_enable_compilation_cache:
        _saved.setdefault("jax_enable_compilation_cache", False)
        jax.config.update("jax_enable_compilation_cache", True)
        reset = True
    if jax.config.jax_compilation_cache_dir != str(folder):
        jax.config.update("jax_compilation_cache_dir", str(folder))
        if reset:
            _reset_jax_cache()
    return folder


def enable_cache(path: str | os.PathLike | None = None) -> Path:
    """Keep compiled programs in the compilation cache under `path`.

    Args:
      path: the root folder (a subfolder per hypergrad version, JAX version and machine
        is made inside it); default `HYPERGRAD_CACHE_DIR`, else the user's cache folder.
        This replaces a cache folder the user set in JAX.

    Returns:
      The folder programs are written to (`cache_dir()`).

    Raises:
      OSError: the folder cannot be created or written to.

    Subprocesses started afterwards use the same root (`os.environ` is updated).
    """
    root = _root_from_env() if path is None else _absolute(path)
    try:
        folder = _apply(root)
    except OSError as e:
        raise OSError(f"enable_cache: cannot use path={str(root)!r} as a cache: {e}") from e
    os.environ[ENV_DIR] = str(root)
    os.environ[ENV_SWITCH] = "1"
    return folder


def disable_cache() -> None:
    """Stop reading and writing compiled programs on disk in this process (whoever set
    the folder: JAX has one persistent cache per process), restore the JAX thresholds
    hypergrad lowered, and set `HYPERGRAD_CACHE=0` for subprocesses started afterwards.
    Programs already compiled stay in memory; the folder is left as it is."""
    os.environ[ENV_SWITCH] = "0"
    for name, value in _saved.items():
        jax.config.update(name, value)
    _saved.clear()
    if jax.config.jax_compilation_cache_dir is not None:
        jax.config.update("jax_compilation_cache_dir", None)
        _reset_jax_cache()


def configure_at_import(version: str) -> None:
    """`import hypergrad`'s step: turn the cache on from the environment, unless it is
    switched off or the user configured JAX's cache. Raises only for a `HYPERGRAD_CACHE`
    value that is not a switch."""
    global _version
    _version = version
    if not _switch_from_env():
        return
    user_dir = jax.config.jax_compilation_cache_dir
    if user_dir is not None or not jax.config.jax_enable_compilation_cache:
        return  # the user's own JAX cache settings
    root = _root_from_env()
    try:
        _apply(root)
    except OSError as e:
        logger.debug("hypergrad: compilation cache off, %s: %s", root, e)
