"""Programs kept on disk as exported StableHLO, so that a fresh process neither traces
nor lowers them again.

Interface: `call(name, fn, *args)` returns `fn(*args)` for a jitted `fn` (its static
settings bound, e.g. by `functools.partial`), through `jax.export` inside an `enabled()`
block, when the library's compilation cache is on (`hypergrad.cache_dir()`) and the
`flatbuffers` package is installed (the `sklearn` extra brings it); otherwise it just
calls `fn`. The estimators of `hypergrad.sklearn` enable it around their fits.

Why. JAX's persistent cache (`hypergrad._cache`) keeps the compiled executable, but finds
it by a hash of the lowered program, so a fresh process still traces the Python code and
lowers it first: for HOAG over the folds of an estimator, 0.3-0.4 s of tracing and
0.1-0.3 s of lowering before a cache hit that takes 0.2 s (measured on the diabetes lasso
and the breast-cancer logistic regression). An exported program is the lowered module
itself: deserialized in a few ms, then compiled through the same persistent cache.

Keys. A program is stored under a hash of: `name`; `fn`'s module and name and the static
settings bound to it (a `functools.partial`'s arguments, by their reprs); the structure of
`args` (their pytree definition, whose static parts hold the problem's configuration:
solver, method, functions); object addresses removed from both; each leaf's shape and
dtype; the JAX version and backend; and a hash of the source of every module of this
package, so that any change of the library's code (an upgrade, or an edit during
development) misses every old entry.
Two functions of the same name and module defined as closures over different values
would print the same, so a user's problem could be handed the program of another: only
code whose configuration the library builds itself runs inside `enabled()` (the
estimators, whose problems come from `hypergrad.problems`).

A program that cannot be exported (a host callback, say) runs as `fn(*args)`.

Outputs. `fn`'s output may hold arrays, tuples, lists, dicts, None and namedtuples (a
descent's state holds optax's). The exported module carries its output structure, whose
namedtuples JAX serializes by a registered name: `register` names one by hand; any
other is registered when its program is first exported, under its module and qualified
name, which the entry lists in a header line so that a fresh process imports and
registers them before deserializing. Other pytree nodes make `fn` run plain.

Invariant: an entry is written whole (a temporary file renamed into place), so a reader
never sees a torn one; a file that cannot be read or deserialized is ignored and
rewritten.
"""

import contextlib
import contextvars
import functools
import hashlib
import importlib
import json
import os
import re
import tempfile
from pathlib import Path

import jax

from . import _cache

_MEMORY: dict = {}
_ENABLED = contextvars.ContextVar("hypergrad_exported", default=False)
_FAILED = object()  # a key whose program could not be exported
_MAGIC = b"hypergrad-exported-1\n"  # then a JSON line of namedtuple classes, then the module
_NAMES: dict[type, str] = {}  # namedtuple classes registered for serialization


@contextlib.contextmanager
def enabled():
    """Within this block, `call` goes through exported programs (see the module
    docstring)."""
    token = _ENABLED.set(True)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def active() -> bool:
    """Whether `call` goes through exported programs here: within `enabled()`, with the
    compilation cache on and `flatbuffers` installed."""
    return _ENABLED.get() and _cache.cache_dir() is not None and _available()


def _available() -> bool:
    try:
        import flatbuffers  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _source_hash() -> str:
    """A hash of every Python module of the package (path and contents)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def register(cls, name: str) -> None:
    """Let a namedtuple class appear in an exported program's output, under `name`."""
    if _NAMES.get(cls) != name:
        jax.export.register_namedtuple_serialization(cls, serialized_name=name)
        _NAMES[cls] = name


def _namedtuples(tree, out: dict) -> dict:
    """`{class: "module:qualname"}` of every namedtuple in `tree`."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        cls = type(tree)
        out.setdefault(cls, f"{cls.__module__}:{cls.__qualname__}")
    if isinstance(tree, tuple | list):
        for x in tree:
            _namedtuples(x, out)
    elif isinstance(tree, dict):
        for x in tree.values():
            _namedtuples(x, out)
    return out


def _register_path(path: str) -> None:
    """Import the class `module:qualname` and register it under that name."""
    module, _, qualname = path.partition(":")
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    if cls not in _NAMES:
        register(cls, path)


def _spec(x):
    aval = jax.typeof(x)
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)


def _describe(fn) -> str:
    """`fn`'s identity and the static settings bound to it (a `functools.partial`'s
    arguments: for HOAG, the method, the step limit, the optimizer)."""
    if hasattr(fn, "__wrapped__"):  # jax.jit's wrapper: describe what it wraps
        return _describe(fn.__wrapped__)
    if isinstance(fn, functools.partial):
        bound = [repr(a) for a in fn.args] + [f"{k}={v!r}" for k, v in sorted(fn.keywords.items())]
        return f"{_describe(fn.func)}({', '.join(bound)})"
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"


def _key(name, fn, tree, specs) -> str:
    parts = [
        name,
        _describe(fn),
        str(tree),
        ";".join(f"{s.shape}{s.dtype}{int(s.weak_type)}" for s in specs),
        jax.__version__,
        jax.default_backend(),
        _source_hash(),
    ]
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", "\n".join(parts))  # object addresses
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _load(path: Path):
    try:
        data = path.read_bytes()
        if not data.startswith(_MAGIC):
            return None
        header, _, module = data[len(_MAGIC) :].partition(b"\n")
        for name in json.loads(header):
            _register_path(name)
        return jax.export.deserialize(bytearray(module))
    except Exception:  # missing, unreadable, or another version of a format or a class
        return None


def _store(path: Path, exported, names) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + json.dumps(sorted(names)).encode() + b"\n")
            f.write(exported.serialize())
        os.replace(tmp, path)
    except OSError:  # a read-only or full cache folder: the program still runs
        pass


def _register_outputs(flat, specs) -> list[str]:
    """Register the namedtuples of `flat`'s output (its shapes traced, nothing run);
    the names of those not registered by hand, for the entry's header."""
    found = _namedtuples(jax.eval_shape(flat, *specs), {})
    for cls, path in found.items():
        if cls not in _NAMES:
            register(cls, path)
    return [path for cls, path in found.items() if _NAMES[cls] == path]


def call(name: str, fn, *args):
    """`fn(*args)`, through a program exported to the cache folder when it is on (see
    the module docstring)."""
    folder = _cache.cache_dir() if _ENABLED.get() else None
    if folder is None or not _available():
        return fn(*args)
    leaves, tree = jax.tree.flatten(args)
    specs = [_spec(x) for x in leaves]
    key = _key(name, fn, tree, specs)
    exported = _MEMORY.get(key)
    if exported is None:
        folder = Path(folder)  # JAX's own folder: the exported ones sit beside it
        path = folder.parent / "exported" / folder.name / f"{name}-{key}.bin"
        exported = _load(path)
        if exported is None:

            def flat(*xs):
                return fn(*jax.tree.unflatten(tree, xs))

            flat.__name__ = f"exported_{name}"  # what JAX's trace events report

            try:
                names = _register_outputs(flat, specs)
                exported = jax.export.export(jax.jit(flat))(*specs)
            except Exception:  # not exportable: plain jit from now on
                exported = _FAILED
            else:
                _store(path, exported, names)
        # Called through `jax.jit`: its C++ dispatch, where `Exported.call` alone spent
        # about 1.7 ms in Python per call (its custom-VJP wrapper, traced every time).
        exported = exported if exported is _FAILED else jax.jit(exported.call)
        _MEMORY[key] = exported
    if exported is _FAILED:
        return fn(*args)
    return exported(*leaves)
