"""Dimensions of a search space: `Real`, `Int`, `Categorical`; `Condition`; `Forbidden`.

Interface: each dimension maps the unit interval onto its domain (`from_unit`, used by
random, Sobol and grid search alike), says whether a value belongs to it (`problem`,
which returns a message or `None`), and gives a placeholder value that stands for "not
active" in batched arrays. `Real` alone is continuous: it also maps to an unconstrained
coordinate and back (`to_unconstrained` / `from_unconstrained`, traceable by JAX).

An `Int` or a `Categorical` may ask the tuner to relax it (`relax="softmax"` or
`relax="gumbel"`, with a `temperature`): `hypergrad.tune.tune` then descends on logits
over its values instead of proposing values by black-box search, and builds the problem
with `RELAXED` in the dimension's place (see `hypergrad.tune`). Everywhere else the field
is ignored: the domain is still the dimension's values, sampled and recorded as such.

Invariant: for every `u` in `[0, 1)`, `problem(from_unit(u)) is None`; for every `x` in a
`Real`'s bounds, `from_unconstrained(to_unconstrained(x)) == x` up to rounding.

Dimensions are plain specifications. They are checked when they are put into a
`hypergrad.space.Space`, so that the error can name the dimension (`'lr': low must be
below high, got low=1.0, high=0.1`).
"""

import math
import numbers
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np


class InvalidSpaceError(ValueError):
    """A search space that cannot be searched; the message names the dimension."""


class InvalidConfigError(ValueError):
    """A configuration that is not a member of its space; the message lists every reason."""


# How a relaxed dimension's values are weighted: softmax(logits / temperature), or a
# Gumbel-softmax sample drawn afresh at every outer step (`hypergrad.relax`).
RELAX_KINDS = ("softmax", "gumbel")


class _Relaxed:
    """The type of `RELAXED`; one instance, which pickles as itself."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "RELAXED"

    def __reduce__(self):
        return "RELAXED"


RELAXED = _Relaxed()
"""What a relaxed dimension holds in the configuration a relaxed problem is built from:
not a value of the dimension (`None` can be a choice), so test it with `is RELAXED`."""


# The choices Optuna can store (its `CategoricalChoiceType`); anything else would not
# round-trip through a record.
_CHOICE_TYPES = (str, int, float, bool, type(None))


def _is_real_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_)


def _is_integer(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool | np.bool_)


def _outside(x, dim) -> str | None:
    if x < dim.low:
        return f"{x!r} is below low={dim.low!r}"
    if x > dim.high:
        return f"{x!r} is above high={dim.high!r}"
    return None


def _check_relax(name, dim) -> None:
    if dim.relax is not None and dim.relax not in RELAX_KINDS:
        kinds = ", ".join(repr(k) for k in RELAX_KINDS)
        raise InvalidSpaceError(
            f"{name!r}: relax must be one of {kinds} or None, got relax={dim.relax!r}"
        )
    t = dim.temperature
    if not (_is_real_number(t) and math.isfinite(t) and t > 0):
        raise InvalidSpaceError(
            f"{name!r}: temperature must be positive and finite, got temperature={t!r}"
        )
    if dim.relax is None and t != 1.0:
        raise InvalidSpaceError(
            f"{name!r}: temperature={t!r} is only used with relax='softmax' or 'gumbel'"
        )


def _check_bounds(name, dim, kind, is_kind) -> None:
    for arg in ("low", "high"):
        if not is_kind(getattr(dim, arg)):
            raise InvalidSpaceError(f"{name!r}: {arg} must be {kind}, got {getattr(dim, arg)!r}")
    if not dim.low < dim.high:
        raise InvalidSpaceError(
            f"{name!r}: low must be below high, got low={dim.low!r}, high={dim.high!r}"
        )
    if dim.log and not dim.low > 0:
        raise InvalidSpaceError(f"{name!r}: log=True needs low > 0, got low={dim.low!r}")


@dataclass(frozen=True)
class Real:
    """A continuous hyperparameter in `[low, high]`, uniform or log-uniform.

    Unconstrained coordinate (a hypergradient is taken there):

        u = logit(t),  t = (x - low) / (high - low)              (log=False)
        u = logit(t),  t = (log x - log low) / (log high - log low)  (log=True)

    Args:
      low, high: finite bounds, `low < high`; with `log=True`, `low > 0`.
      log: sample and move in `log x` (regularization strengths, learning rates).

    Example:
      >>> from hypergrad.space import Real
      >>> lr = Real(1e-4, 1e-1, log=True)
      >>> round(float(lr.from_unconstrained(lr.to_unconstrained(0.01))), 6)
      0.01
    """

    low: float
    high: float
    log: bool = False

    continuous = True

    def check(self, name: str) -> None:
        _check_bounds(
            name, self, "a finite number", lambda v: _is_real_number(v) and math.isfinite(v)
        )

    @property
    def placeholder(self) -> float:
        return float(self.low)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, np.float64)
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            x = np.exp(lo + u * (hi - lo))
        else:
            x = self.low + u * (self.high - self.low)
        # exp and the affine map can land one ulp outside the bounds.
        return np.clip(x, self.low, self.high)

    def problem(self, x) -> str | None:
        if not _is_real_number(x):
            return f"must be a real number, got {x!r}"
        if not math.isfinite(x):
            return f"must be finite, got {x!r}"
        return _outside(x, self)

    def to_python(self, x) -> float:
        return float(x)

    def _position(self, x):
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return (jnp.log(x) - lo) / (hi - lo)
        return (x - self.low) / (self.high - self.low)

    def to_unconstrained(self, x):
        """`logit` of the (log-)position of `x` between the bounds; JAX-traceable."""
        x = jnp.asarray(x, jnp.result_type(x, float))
        t = self._position(x)
        return jnp.log(t) - jnp.log1p(-t)

    def from_unconstrained(self, u):
        """The inverse of `to_unconstrained`; JAX-traceable, always inside the bounds."""
        u = jnp.asarray(u, jnp.result_type(u, float))
        t = 1 / (1 + jnp.exp(-u))
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            x = jnp.exp(lo + t * (hi - lo))
        else:
            x = self.low + t * (self.high - self.low)
        return jnp.clip(x, self.low, self.high)


@dataclass(frozen=True)
class Int:
    """An integer hyperparameter in `[low, high]` (both included), uniform or log-uniform.

    Log-uniform integers are drawn as Optuna draws them: log-uniform on
    `[low - 1/2, high + 1/2]`, then rounded, so each end has its fair share.

    Args:
      low, high: the integer bounds, both included, `low < high`.
      log: sample log-uniformly.
      relax, temperature: ask `hypergrad.tune.tune` to relax the integer into weights
        over `low, ..., high` (one logit per value), as for a `Categorical`.

    Example:
      >>> from hypergrad.space import Int
      >>> Int(1, 4).from_unit([0.0, 0.3, 0.99]).tolist()
      [1, 2, 4]
    """

    low: int
    high: int
    log: bool = False
    relax: str | None = None
    temperature: float = 1.0

    continuous = False

    def check(self, name: str) -> None:
        _check_bounds(name, self, "an integer", _is_integer)
        _check_relax(name, self)

    @property
    def placeholder(self) -> int:
        return int(self.low)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, np.float64)
        if self.log:
            lo, hi = math.log(self.low - 0.5), math.log(self.high + 0.5)
            x = np.round(np.exp(lo + u * (hi - lo)))
        else:
            x = np.floor(self.low + u * (self.high - self.low + 1))
        return np.clip(x, self.low, self.high).astype(np.int64)

    def problem(self, x) -> str | None:
        if not _is_integer(x):
            return f"must be an integer, got {x!r}"
        return _outside(x, self)

    def to_python(self, x) -> int:
        return int(x)

    def grid(self, resolution: int) -> list[int]:
        """Every integer when there are at most `resolution`, else `resolution` spread out."""
        if self.high - self.low + 1 <= resolution:
            return list(range(self.low, self.high + 1))
        if self.log:
            pts = np.geomspace(self.low, self.high, resolution)
        else:
            pts = np.linspace(self.low, self.high, resolution)
        return sorted({int(v) for v in np.round(pts)})

    def values(self) -> range:
        return range(self.low, self.high + 1)


@dataclass(frozen=True)
class Categorical:
    """One of a list of choices (strings, numbers, booleans or `None`).

    In batched arrays a categorical value is the integer index of the choice.

    Args:
      choices: the options, distinct.
      relax: `None` (black-box search proposes a choice), `"softmax"` or `"gumbel"`:
        `hypergrad.tune.tune` descends on one logit per choice, the problem sees the
        weights `softmax(logits / temperature)` (or a Gumbel-softmax sample of them,
        fresh at each outer step), and the argmax is re-evaluated exactly at the end.
      temperature: the relaxation's temperature (positive; only with `relax`).

    Example:
      >>> from hypergrad.space import Categorical
      >>> act = Categorical(("relu", "tanh"))
      >>> act.index("tanh")
      1
    """

    choices: tuple
    relax: str | None = None
    temperature: float = 1.0

    continuous = False

    def __post_init__(self):
        # Accept any sequence; keep a tuple so the dimension stays hashable and immutable.
        if isinstance(self.choices, Collection) and not isinstance(self.choices, str | Mapping):
            object.__setattr__(self, "choices", tuple(self.choices))

    def check(self, name: str) -> None:
        if not isinstance(self.choices, tuple):
            raise InvalidSpaceError(f"{name!r}: choices must be a sequence, got {self.choices!r}")
        if len(self.choices) == 0:
            raise InvalidSpaceError(f"{name!r}: choices must not be empty")
        for c in self.choices:
            if not isinstance(c, _CHOICE_TYPES):
                raise InvalidSpaceError(
                    f"{name!r}: a choice must be a str, int, float, bool or None, got {c!r}"
                )
            if isinstance(c, float) and math.isnan(c):
                raise InvalidSpaceError(f"{name!r}: a choice must not be NaN")
        _check_relax(name, self)
        for i, c in enumerate(self.choices):
            # Optuna looks a choice up with ==, so True and 1 (or 1 and 1.0) would be one.
            for d in self.choices[:i]:
                if c is d or (c is not None and d is not None and c == d):
                    raise InvalidSpaceError(
                        f"{name!r}: choice {c!r} appears twice (equal to {d!r})"
                    )

    @staticmethod
    def _find(value, choices) -> int | None:
        # `True == 1 == 1.0` in Python; a config must give the choice itself, so booleans
        # and strings only match their own kind.
        for i, c in enumerate(choices):
            if isinstance(c, bool) != isinstance(value, bool | np.bool_):
                continue
            if isinstance(c, str) != isinstance(value, str):
                continue
            if c is None or value is None:
                if c is value:
                    return i
                continue
            if c == value:
                return i
        return None

    def index(self, value) -> int:
        i = self._find(value, self.choices)
        if i is None:
            raise InvalidConfigError(f"{value!r} is not one of {self.choices!r}")
        return i

    @property
    def placeholder(self) -> int:
        return 0

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, np.float64)
        k = len(self.choices)
        return np.clip(np.floor(u * k), 0, k - 1).astype(np.int64)

    def problem(self, x) -> str | None:
        if self._find(x, self.choices) is None:
            return f"{x!r} is not one of {self.choices!r}"
        return None

    def to_python(self, i) -> Any:
        return self.choices[int(i)]

    def values(self) -> tuple:
        return self.choices


Dimension = Real | Int | Categorical


@dataclass(frozen=True)
class Condition:
    """A dimension exists only while `parent` takes one of `values`.

    The parent must be an `Int` or a `Categorical` (a condition on a real value would
    need an interval, and no sampler we adapt can express one). `values` holds the
    parent's values themselves (choices, not indices); a `range` is fine for an `Int`.

    Example:
      >>> from hypergrad.space import Condition, Int, Space
      >>> space = Space(
      ...     {"n_layers": Int(1, 4), "width3": Int(8, 128, log=True)},
      ...     conditions={"width3": Condition("n_layers", range(3, 5))},
      ... )
      >>> space.is_active("width3", {"n_layers": 2})
      False
    """

    parent: str
    values: tuple

    def __post_init__(self):
        if isinstance(self.values, Collection) and not isinstance(self.values, str | Mapping):
            object.__setattr__(self, "values", tuple(self.values))
        else:
            object.__setattr__(self, "values", (self.values,))


@dataclass(frozen=True)
class Forbidden:
    """A combination of discrete values that must never be proposed.

    `clauses` maps dimension names to a value or a tuple of values; a configuration is
    forbidden when every named dimension is active and takes one of its listed values.

    Example:
      >>> from hypergrad.space import Categorical, Forbidden, Int, Space
      >>> space = Space(
      ...     {"act": Categorical(("relu", "tanh")), "n_layers": Int(1, 4)},
      ...     forbidden=[Forbidden({"act": "tanh", "n_layers": (3, 4)})],
      ... )
      >>> space.is_valid({"act": "tanh", "n_layers": 4})
      False
    """

    clauses: Mapping[str, Any]

    def __post_init__(self):
        object.__setattr__(
            self,
            "clauses",
            {
                k: tuple(v) if isinstance(v, tuple | list | range) else (v,)
                for k, v in dict(self.clauses).items()
            },
        )

    def __hash__(self):
        return hash(tuple(sorted(self.clauses.items(), key=lambda kv: kv[0])))

    def describe(self) -> str:
        parts = []
        for k, vs in self.clauses.items():
            parts.append(f"{k}={vs[0]!r}" if len(vs) == 1 else f"{k} in {vs!r}")
        return ", ".join(parts)
