"""The tuner's settings: one frozen record, checked once, written to and read from JSON.

Interface: `TuneSettings(rounds=..., population=..., ...)` checks every number and
raises `ValueError` / `TypeError` naming the argument and the value (before any trial
starts); `settings.to_json()` is plain JSON data (the method by its fields, see
`hypergrad._config`; an optax optimizer by its name and learning rate) and
`TuneSettings.from_json(data)` rebuilds an equal record. Every tuner trial records it,
so that `hypergrad reproduce` re-runs the trial with the settings it ran with.

Invariant: `TuneSettings.from_json(s.to_json()) == s` whenever the optimizer is given by
name; an optimizer given as a `GradientTransformation` is written as `None` and a trial
that used it cannot be re-run from its record (`optimizer_transformation` says so).
"""

import dataclasses
import functools
import math
from typing import Any

import optax

from .._config import from_config, to_config
from ..analysis import GAP_THRESHOLD
from ..methods._base import AbstractMethod
from ._descent import decades

FORMAT = 1  # of `to_json`


def positive_int(value, name, allow_none=False):
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {name}={value!r}")


@functools.lru_cache(maxsize=16)
def _named_optimizer(name: str) -> optax.GradientTransformation:
    """`optax.<name>` with its learning rate injected as state (`optax.inject_hyperparams`),
    one object per name: every learning rate runs the same compiled steps, the rate being
    data (`DescentSettings.learning_rate`)."""
    make = getattr(optax, name, None)
    if not callable(make):
        raise ValueError(f"optimizer must name an optax optimizer, got optimizer={name!r}")
    try:
        tx = optax.inject_hyperparams(make)(learning_rate=1.0)
    except TypeError:  # not a function of a learning rate
        tx = None
    if not isinstance(tx, optax.GradientTransformation):
        raise ValueError(f"optax.{name}(learning_rate) is not an optimizer")
    # Its repr names it (an exported program's key holds it; see hypergrad._exported).
    text = f"optax.{name}(learning_rate=<state>)"
    named = type(type(tx).__name__, (type(tx),), {"__slots__": (), "__repr__": lambda _: text})
    return named(*tx)


def _nonnegative(value, name):
    if not (isinstance(value, float | int) and not isinstance(value, bool) and value >= 0):
        raise ValueError(f"{name} must be >= 0, got {name}={value!r}")


@dataclasses.dataclass(frozen=True)
class TuneSettings:
    """How `hypergrad.tune.tune` runs (see its arguments, which these fields are).

    Attributes:
      rounds, population, seeds, steps, halving: the search's shape.
      method: how hypergradients are computed; None: the problem's own, else `Implicit()`.
      optimizer, learning_rate: the outer optimizer, an optax name or a transformation.
      tol, min_improvement: a member stops early (see `descend`).
      inner_tol: `(start, end)` of the inner tolerance schedule (`decades`), or None.
      seed: the run's seed.
      throw: raise when an inner solve did not converge.
      gap_threshold: the relative validation-to-test gap that warns.
      time_budget_s: start no new round after this many seconds (None: no limit).
      refine: refinement rounds after the proposed ones (see `tune`).
    """

    rounds: int = 1
    population: int = 8
    seeds: int = 1
    steps: int = 30
    halving: int | None = None
    method: AbstractMethod | None = None
    optimizer: Any = "adam"
    learning_rate: float = 0.1
    tol: float = 0.0
    min_improvement: float = 0.0
    inner_tol: tuple[float, float] | None = None
    seed: int = 0
    throw: bool = False
    gap_threshold: float = GAP_THRESHOLD
    time_budget_s: float | None = None
    refine: int = 0

    def __post_init__(self):
        for name in ("rounds", "population", "seeds", "steps"):
            positive_int(getattr(self, name), name)
        positive_int(self.halving, "halving", allow_none=True)
        if isinstance(self.refine, bool) or not isinstance(self.refine, int) or self.refine < 0:
            raise ValueError(f"refine must be a non-negative int, got refine={self.refine!r}")
        if self.refine and not isinstance(self.optimizer, str):
            raise ValueError(
                "refine lowers the learning rate of an optimizer given by name; got "
                f"optimizer={self.optimizer!r}"
            )
        if self.halving == 1:
            raise ValueError("halving must be at least 2 (the fraction 1/halving is kept), got 1")
        budget = self.time_budget_s
        if budget is not None and not (isinstance(budget, float | int) and budget > 0):
            raise ValueError(f"time_budget_s must be positive or None, got {budget!r}")
        if self.method is not None and not isinstance(self.method, AbstractMethod):
            raise TypeError(f"method must be a hypergrad method, got method={self.method!r}")
        lr = self.learning_rate
        if not (isinstance(lr, float | int) and lr > 0):
            raise ValueError(f"learning_rate must be positive, got learning_rate={lr!r}")
        if not isinstance(self.optimizer, str | optax.GradientTransformation):
            raise TypeError(
                "optimizer must be an optax optimizer name or GradientTransformation, "
                f"got {self.optimizer!r}"
            )
        self.optimizer_transformation()  # an unknown name fails here
        _nonnegative(self.tol, "tol")
        _nonnegative(self.min_improvement, "min_improvement")
        if self.inner_tol is not None:
            if not (isinstance(self.inner_tol, tuple | list) and len(self.inner_tol) == 2):
                raise ValueError(
                    f"inner_tol must be a pair (start, end), got inner_tol={self.inner_tol!r}"
                )
            object.__setattr__(self, "inner_tol", tuple(float(t) for t in self.inner_tol))
            self.schedule()  # an empty range fails here
        gap = self.gap_threshold
        if not (isinstance(gap, float | int) and math.isfinite(gap) and gap >= 0):
            raise ValueError(f"gap_threshold must be a non-negative number, got {gap!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int, got seed={self.seed!r}")

    def optimizer_transformation(self) -> optax.GradientTransformation:
        """The optax transformation: for a name, one object per name whose learning rate
        is data (`descent_learning_rate`); a given transformation as it is."""
        if isinstance(self.optimizer, str):
            return _named_optimizer(self.optimizer)
        return self.optimizer

    def descent_learning_rate(self) -> float | None:
        """The learning rate the descent writes into the optimizer's state (a named
        optimizer), or None (a given transformation keeps its own)."""
        return float(self.learning_rate) if isinstance(self.optimizer, str) else None

    def schedule(self):
        """`step -> inner tolerance` over the `steps` outer steps, or None."""
        if self.inner_tol is None:
            return None
        return decades(self.inner_tol[0], self.inner_tol[1], self.steps)

    def to_json(self) -> dict:
        """The settings as JSON data (see the module docstring)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["format"] = FORMAT
        out["method"] = None if self.method is None else to_config(self.method)
        out["optimizer"] = self.optimizer if isinstance(self.optimizer, str) else None
        out["learning_rate"] = float(self.learning_rate)
        out["inner_tol"] = None if self.inner_tol is None else list(self.inner_tol)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "TuneSettings":
        """The settings `to_json` wrote; a custom optimizer cannot be rebuilt."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"these tuner settings were written in another format, got {data!r}")
        if data.get("optimizer") is None:
            raise ValueError("this trial used a custom optimizer object; it cannot be rebuilt")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        if kwargs.get("method") is not None:
            kwargs["method"] = from_config(kwargs["method"], expected=AbstractMethod)
        if kwargs.get("inner_tol") is not None:
            kwargs["inner_tol"] = tuple(kwargs["inner_tol"])
        return cls(**kwargs)
