"""Configuration of the library's strategy objects: equality, and JSON by public fields.

Interface: `to_config(obj) -> dict` writes a hypergrad object (a method, a linear solver,
an inner solver, a prox) as JSON-ready data, `{"type": "package.module:Class", "fields":
{...}}`, from its public attributes; `from_config(config)` calls `Class(**fields)` to
rebuild it. Methods, linear solvers and solvers also have `obj.to_config()` and
`Class.from_config(config)`. Nothing is evaluated: the class is imported by name, and
only classes of `hypergrad` are rebuilt.

Invariant: an object is written by its public attributes, whose names are its
constructor's arguments, so that `from_config(to_config(obj))` is an equal object (equal
by configuration, see below); an object for which that cannot hold (an attribute the
constructor does not take, or a value that is not data, such as an optax optimizer or a
function) is refused by `to_config` with an error naming the attribute, not written
lossily. PRNG keys and arrays are written with their data, so an `ES` keeps its key.

Equality: two objects of one class with equal public attributes are interchangeable:
they compare equal and hash alike, so compiled programs cached on them (`jax.jit` static
arguments) are reused instead of recompiled. An object holding an unhashable attribute
(an array) falls back to identity.
"""

import importlib
import inspect

import numpy as np

_PACKAGE = "hypergrad"


class ConfigEquality:
    def _config(self):
        return tuple(sorted((k, v) for k, v in vars(self).items() if not k.startswith("_")))

    def _hashable_config(self):
        config = self._config()
        try:
            hash(config)
        except TypeError:
            return None
        return config

    def __eq__(self, other):
        if type(self) is not type(other):
            return NotImplemented
        mine, theirs = self._hashable_config(), other._hashable_config()
        if mine is None or theirs is None:
            return self is other
        return mine == theirs

    def __hash__(self):
        config = self._hashable_config()
        return id(self) if config is None else hash((type(self), config))

    def to_config(self) -> dict:
        """This object as JSON-ready data (see `hypergrad._config`)."""
        return to_config(self)

    @classmethod
    def from_config(cls, config: dict):
        """The object `config` (from `to_config`) describes; it must be a `cls`."""
        return from_config(config, expected=cls)


class Configurable:
    """`to_config` / `from_config` for classes that keep their own equality (solvers)."""

    def to_config(self) -> dict:
        """This object as JSON-ready data (see `hypergrad._config`)."""
        return to_config(self)

    @classmethod
    def from_config(cls, config: dict):
        """The object `config` (from `to_config`) describes; it must be a `cls`."""
        return from_config(config, expected=cls)


def _type_name(cls) -> str:
    """`package:Class` under the shortest subpackage that exports `cls`
    (`hypergrad.methods:Implicit`, not the private module)."""
    parts = cls.__module__.split(".")
    for i in range(min(2, len(parts)), len(parts) + 1):
        module = ".".join(parts[:i])
        try:
            if getattr(importlib.import_module(module), cls.__qualname__, None) is cls:
                return f"{module}:{cls.__qualname__}"
        except ImportError:  # pragma: no cover - a parent package always imports
            continue
    return f"{cls.__module__}:{cls.__qualname__}"


def _check_constructor(obj, fields):
    """The constructor takes every field by name and needs no other argument."""
    params = inspect.signature(type(obj)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    named = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    extra = sorted(set(fields) - named)
    if extra:
        raise TypeError(
            f"{obj!r} cannot be written by its fields: {type(obj).__name__}() takes no "
            f"argument {extra[0]!r}"
        )
    missing = [
        n
        for n, p in params.items()
        if n not in fields
        and p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    if missing:
        raise TypeError(
            f"{obj!r} cannot be written by its fields: no attribute for the argument "
            f"{missing[0]!r} of {type(obj).__name__}()"
        )


def to_config(obj) -> dict:
    """`obj`, a hypergrad object, as JSON-ready data; see the module docstring.

    Example:
      >>> from hypergrad import CG, Implicit
      >>> config = to_config(Implicit(CG(tol=1e-6, atol=1e-12)))
      >>> config["type"], config["fields"]["linear_solver"]["fields"]["atol"]
      ('hypergrad.methods:Implicit', 1e-12)
      >>> from_config(config) == Implicit(CG(tol=1e-6, atol=1e-12))
      True
    """
    cls = type(obj)
    if not cls.__module__.startswith(_PACKAGE + "."):
        raise TypeError(f"only hypergrad objects are written by their fields, got {obj!r}")
    fields = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    _check_constructor(obj, fields)
    return {
        "type": _type_name(cls),
        "fields": {k: _encode(v, f"{cls.__name__}.{k}") for k, v in sorted(fields.items())},
    }


def _encode(value, where):
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):  # not a NamedTuple
        items = [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else {"tuple": items}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v, f"{where}[{k!r}]") for k, v in value.items()}}
    if type(value).__module__.startswith(_PACKAGE + "."):
        return to_config(value)
    import jax

    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        return {
            "prng_key": str(jax.random.key_impl(value)),
            "data": np.asarray(jax.random.key_data(value)).tolist(),
        }
    if isinstance(value, np.ndarray | jax.Array):
        arr = np.asarray(value)
        return {"array": arr.tolist(), "dtype": str(arr.dtype), "shape": list(arr.shape)}
    raise TypeError(
        f"{where} = {value!r} is not data (a number, string, array, key or hypergrad "
        "object): this object cannot be written by its fields"
    )


def _resolve(name: str):
    module, _, qualname = name.partition(":")
    if not (module == _PACKAGE or module.startswith(_PACKAGE + ".")) or not qualname:
        raise ValueError(f"config type must name a hypergrad class, got type={name!r}")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not isinstance(obj, type):
        raise ValueError(f"config type {name!r} names no hypergrad class")
    return obj


def from_config(config: dict, expected: type | None = None):
    """The object `config` (from `to_config`) describes, built by its constructor.

    Raises:
      ValueError: `config` is not such a description, names no hypergrad class, or (with
        `expected`) describes an object of another class.
    """
    if not (isinstance(config, dict) and set(config) == {"type", "fields"}):
        raise ValueError(f"config must be a dict with 'type' and 'fields', got {config!r}")
    cls = _resolve(config["type"])
    if expected is not None and not issubclass(cls, expected):
        raise ValueError(
            f"config describes a {cls.__name__}, not a {expected.__name__}: {config['type']!r}"
        )
    fields = {k: _decode(v) for k, v in config["fields"].items()}
    return cls(**fields)


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"type", "fields"}:
        return from_config(value)
    if set(value) == {"tuple"}:
        return tuple(_decode(v) for v in value["tuple"])
    if set(value) == {"dict"}:
        return {k: _decode(v) for k, v in value["dict"].items()}
    import jax
    import jax.numpy as jnp

    if set(value) == {"prng_key", "data"}:
        return jax.random.wrap_key_data(
            jnp.asarray(value["data"], jnp.uint32), impl=value["prng_key"]
        )
    if set(value) == {"array", "dtype", "shape"}:
        return np.asarray(value["array"], value["dtype"]).reshape(value["shape"])
    raise ValueError(f"cannot read {value!r} as a configuration value")
