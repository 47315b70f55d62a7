"""A search space: named dimensions, conditions between them, forbidden combinations.

Interface:

- `Space(dims, conditions=None, forbidden=())` checks itself and refuses, naming the
  dimension, bounds that are empty, log scales that reach zero, empty choices, a
  condition on an unknown or continuous parent, a cycle of conditions, or a forbidden
  clause on an unknown or continuous dimension.
- A configuration is a `dict` from the names of the *active* dimensions to plain Python
  values (`float`, `int`, or the choice itself). `problems(config)` lists everything wrong
  with one; `validate(config)` raises `InvalidConfigError` with that list.
- A batch of `n` configurations is a `Batch(values, active)`: two dicts with one entry
  per dimension, each an array of leading size `n`. `values` holds floats for `Real`,
  ints for `Int` and choice *indices* for `Categorical`. Where a conditional dimension is
  inactive, `active` is `False` and `values` holds a placeholder (the lower bound, or
  choice 0) so that code vmapped over the batch computes on something finite; mask
  with `active`. `sample(key, n)`, `from_unit(u)` and `stack(configs)` make batches;
  `unstack(batch)` gives the configurations back.
- `to_unconstrained(values)` / `from_unconstrained(u)` map the continuous dimensions
  (`continuous`, the hypergradient candidates) to unbounded coordinates and back.
- `discrete` lists the `Int` and `Categorical` dimensions; `relaxed`, the subset of them
  that ask `hypergrad.tune.tune` to relax them (`relax="softmax"` or `"gumbel"`). The
  `relax` field changes nothing here nor in `hypergrad.search` and `hypergrad.records`: a
  relaxed dimension is still sampled, validated and recorded as its discrete values.

Invariants: every configuration in a batch that `sample` or `from_unit` returns (after
dropping forbidden rows, which `sample` does) passes `validate`; inactive dimensions
never appear in a configuration; `from_unconstrained(to_unconstrained(v)) == v` up to
rounding.
"""

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._dims import (
    Categorical,
    Condition,
    Dimension,
    Forbidden,
    Int,
    InvalidConfigError,
    InvalidSpaceError,
    Real,
)

Config = dict[str, Any]


class Batch(NamedTuple):
    """`n` configurations as arrays (a pytree: `jax.vmap` maps over its leading axis).

    Attributes:
      values: name -> array of shape `(n,)`; float for `Real`, int for `Int`, the choice
        index for `Categorical`; a placeholder where the dimension is inactive.
      active: name -> bool array of shape `(n,)`; `False` where a conditional dimension
        does not exist. Unconditional dimensions are `True` everywhere.
    """

    values: dict[str, jax.Array]
    active: dict[str, jax.Array]

    def __len__(self) -> int:
        return len(next(iter(self.active.values()))) if self.active else 0


class Space:
    """Named dimensions with conditions and forbidden combinations.

    Args:
      dims: name -> `Real`, `Int` or `Categorical`.
      conditions: name -> a `Condition` (or a sequence of them, all of which must hold).
        A dimension whose parent is inactive is inactive too.
      forbidden: `Forbidden` combinations of discrete values, never sampled.

    Example:
      >>> import jax
      >>> from hypergrad.space import Categorical, Condition, Int, Real, Space
      >>> space = Space(
      ...     {"act": Categorical(("relu", "tanh")), "n_layers": Int(1, 4),
      ...      "lr": Real(1e-4, 1e-1, log=True), "width3": Int(8, 128)},
      ...     conditions={"width3": Condition("n_layers", (3, 4))},
      ... )
      >>> batch = space.sample(jax.random.key(0), 8)
      >>> batch.values["lr"].shape, batch.active["width3"].dtype
      ((8,), dtype('bool'))
      >>> all(space.is_valid(c) for c in space.unstack(batch))
      True
    """

    def __init__(
        self,
        dims: Mapping[str, Dimension],
        conditions: Mapping[str, Condition | Sequence[Condition]] | None = None,
        forbidden: Sequence[Forbidden] = (),
    ):
        if not isinstance(dims, Mapping) or len(dims) == 0:
            raise InvalidSpaceError(f"dims must be a non-empty mapping of names, got {dims!r}")
        for name, dim in dims.items():
            if not isinstance(name, str) or not name:
                raise InvalidSpaceError(f"dimension names must be non-empty strings, got {name!r}")
            if not isinstance(dim, Real | Int | Categorical):
                raise InvalidSpaceError(
                    f"{name!r}: must be a Real, Int or Categorical, got {dim!r}"
                )
            dim.check(name)
        self._dims = dict(dims)
        self._conditions = self._check_conditions(conditions or {})
        self._forbidden = self._check_forbidden(forbidden)
        self._order = self._topological_order()

    # -- construction checks -------------------------------------------------------

    def _check_conditions(self, conditions) -> dict[str, tuple[Condition, ...]]:
        if not isinstance(conditions, Mapping):
            raise InvalidSpaceError(f"conditions must be a mapping, got {conditions!r}")
        out = {}
        for name, conds in conditions.items():
            if name not in self._dims:
                raise InvalidSpaceError(f"{name!r}: condition on an unknown dimension")
            conds = (conds,) if isinstance(conds, Condition) else tuple(conds)
            for c in conds:
                if not isinstance(c, Condition):
                    raise InvalidSpaceError(f"{name!r}: expected a Condition, got {c!r}")
                if c.parent not in self._dims:
                    raise InvalidSpaceError(f"{name!r}: condition on unknown parent {c.parent!r}")
                if c.parent == name:
                    raise InvalidSpaceError(f"{name!r}: a dimension cannot be its own parent")
                parent = self._dims[c.parent]
                if isinstance(parent, Real):
                    raise InvalidSpaceError(
                        f"{name!r}: condition on continuous parent {c.parent!r}; "
                        "parents must be Int or Categorical"
                    )
                if not c.values:
                    raise InvalidSpaceError(f"{name!r}: condition on {c.parent!r} lists no values")
                for v in c.values:
                    if parent.problem(v) is not None:
                        raise InvalidSpaceError(
                            f"{name!r}: condition on {c.parent!r} names value {v!r}, which "
                            f"{c.parent!r} cannot take ({parent.problem(v)})"
                        )
            out[name] = conds
        return out

    def _check_forbidden(self, forbidden) -> tuple[Forbidden, ...]:
        if isinstance(forbidden, Forbidden):
            forbidden = (forbidden,)
        out = []
        for f in forbidden:
            if not isinstance(f, Forbidden):
                raise InvalidSpaceError(f"forbidden must hold Forbidden objects, got {f!r}")
            if not f.clauses:
                raise InvalidSpaceError("a Forbidden combination must name a dimension")
            for name, vs in f.clauses.items():
                if name not in self._dims:
                    raise InvalidSpaceError(f"{name!r}: forbidden clause on an unknown dimension")
                dim = self._dims[name]
                if isinstance(dim, Real):
                    raise InvalidSpaceError(
                        f"{name!r}: forbidden clauses name discrete values; {name!r} is Real"
                    )
                for v in vs:
                    if dim.problem(v) is not None:
                        raise InvalidSpaceError(
                            f"{name!r}: forbidden value {v!r} is not in its domain "
                            f"({dim.problem(v)})"
                        )
            out.append(f)
        return tuple(out)

    def _topological_order(self) -> tuple[str, ...]:
        # Parents before children (depth-first), in declaration order otherwise; a name met
        # again while still on the stack closes a cycle.
        order, state = [], {}

        def visit(name, path):
            if state.get(name) == "done":
                return
            if state.get(name) == "open":
                cycle = " -> ".join([*path[path.index(name) :], name])
                raise InvalidSpaceError(f"{name!r}: conditions form a cycle ({cycle})")
            state[name] = "open"
            for c in self._conditions.get(name, ()):
                visit(c.parent, [*path, name])
            state[name] = "done"
            order.append(name)

        for name in self._dims:
            visit(name, [])
        return tuple(order)

    # -- description ---------------------------------------------------------------

    @property
    def dims(self) -> dict[str, Dimension]:
        return dict(self._dims)

    @property
    def names(self) -> tuple[str, ...]:
        """Dimension names, parents before children (the column order of `from_unit`)."""
        return self._order

    @property
    def conditions(self) -> dict[str, tuple[Condition, ...]]:
        return dict(self._conditions)

    @property
    def forbidden(self) -> tuple[Forbidden, ...]:
        return self._forbidden

    @property
    def continuous(self) -> tuple[str, ...]:
        """The `Real` dimensions: candidates for a hypergradient."""
        return tuple(n for n in self._order if isinstance(self._dims[n], Real))

    @property
    def discrete(self) -> tuple[str, ...]:
        """The `Int` and `Categorical` dimensions, relaxed or not: their values are
        discrete (configurations, batches and records hold them as usual)."""
        return tuple(n for n in self._order if not isinstance(self._dims[n], Real))

    @property
    def relaxed(self) -> tuple[str, ...]:
        """The discrete dimensions that ask to be relaxed (`relax` set): the tuner
        descends on logits over their values instead of proposing values by search."""
        return tuple(n for n in self.discrete if self._dims[n].relax is not None)

    @property
    def conditional(self) -> tuple[str, ...]:
        return tuple(n for n in self._order if n in self._conditions)

    def __len__(self) -> int:
        return len(self._dims)

    def __repr__(self) -> str:
        return (
            f"Space({self._dims!r}, conditions={self._conditions!r}, "
            f"forbidden={list(self._forbidden)!r})"
        )

    def __eq__(self, other) -> bool:
        return isinstance(other, Space) and (self._dims, self._conditions, self._forbidden) == (
            other._dims,
            other._conditions,
            other._forbidden,
        )

    __hash__ = None

    # -- single configurations -----------------------------------------------------

    def is_active(self, name: str, config: Mapping[str, Any]) -> bool:
        """Whether `name` exists given the values of its ancestors in `config`."""
        if name not in self._dims:
            raise KeyError(f"unknown dimension {name!r}")
        for c in self._conditions.get(name, ()):
            if c.parent not in config or not self.is_active(c.parent, config):
                return False
            parent = self._dims[c.parent]
            if isinstance(parent, Categorical):
                if parent._find(config[c.parent], c.values) is None:
                    return False
            elif config[c.parent] not in c.values:
                return False
        return True

    def _why_active(self, name, config) -> str:
        conds = self._conditions.get(name, ())
        return " and ".join(
            f"{c.parent}={config.get(c.parent)!r} is in {c.values!r}" for c in conds
        )

    def problems(self, config: Mapping[str, Any]) -> list[str]:
        """Everything that keeps `config` from being a member of this space (empty if none)."""
        if not isinstance(config, Mapping):
            return [f"a configuration must be a mapping of names to values, got {config!r}"]
        out = [f"unknown dimension {k!r}" for k in config if k not in self._dims]
        for name in self._order:
            active = self.is_active(name, config)
            if active and name not in config:
                why = (
                    f" (active because {self._why_active(name, config)})"
                    if (name in self._conditions)
                    else ""
                )
                out.append(f"{name!r} is missing{why}")
            elif not active and name in config:
                conds = " and ".join(f"{c.parent} in {c.values!r}" for c in self._conditions[name])
                out.append(f"{name!r} is present but inactive: it exists only when {conds}")
            elif active:
                p = self._dims[name].problem(config[name])
                if p is not None:
                    out.append(f"{name!r}: {p}")
        if not out:
            for f in self._forbidden:
                if self._matches(f, config):
                    out.append(f"forbidden combination: {f.describe()}")
        return out

    def _matches(self, f: Forbidden, config) -> bool:
        for name, vs in f.clauses.items():
            if name not in config or not self.is_active(name, config):
                return False
            dim = self._dims[name]
            if isinstance(dim, Categorical):
                if dim._find(config[name], vs) is None:
                    return False
            elif config[name] not in vs:
                return False
        return True

    def is_valid(self, config: Mapping[str, Any]) -> bool:
        return not self.problems(config)

    def validate(self, config: Mapping[str, Any], argument: str = "config") -> Config:
        """Return `config` as a plain dict if it is a member of the space, else raise.

        Raises:
          InvalidConfigError: listing every problem, e.g.
            `config is invalid: 'lr': 2.0 is above high=0.1; 'width3' is missing`.
        """
        probs = self.problems(config)
        if probs:
            raise InvalidConfigError(f"{argument} is invalid: " + "; ".join(probs))
        return {name: self._to_python(name, config[name]) for name in self._order if name in config}

    def _to_python(self, name, v):
        dim = self._dims[name]
        return v if isinstance(dim, Categorical) else dim.to_python(v)

    # -- batches -------------------------------------------------------------------

    def _activity(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(values.values())))
        active = {}
        for name in self._order:
            a = np.ones(n, bool)
            for c in self._conditions.get(name, ()):
                parent = self._dims[c.parent]
                if isinstance(parent, Categorical):
                    allowed = [parent.index(v) for v in c.values]
                else:
                    allowed = list(c.values)
                a &= active[c.parent] & np.isin(values[c.parent], allowed)
            active[name] = a
        return active

    def _forbidden_mask(self, values, active) -> np.ndarray:
        n = len(next(iter(values.values())))
        bad = np.zeros(n, bool)
        for f in self._forbidden:
            hit = np.ones(n, bool)
            for name, vs in f.clauses.items():
                dim = self._dims[name]
                allowed = [dim.index(v) for v in vs] if isinstance(dim, Categorical) else list(vs)
                hit &= active[name] & np.isin(values[name], allowed)
            bad |= hit
        return bad

    def _to_batch(self, values: dict[str, np.ndarray], active) -> Batch:
        vals, acts = {}, {}
        for name in self._order:
            dim = self._dims[name]
            v = np.where(active[name], values[name], dim.placeholder)
            dtype = jnp.result_type(float) if isinstance(dim, Real) else jnp.result_type(int)
            vals[name] = jnp.asarray(v, dtype)
            acts[name] = jnp.asarray(active[name], bool)
        return Batch(vals, acts)

    def _from_unit(self, u):
        u = np.asarray(u, np.float64)
        if u.ndim != 2 or u.shape[1] != len(self._order):
            raise ValueError(f"u must have shape (n, {len(self._order)}), got {u.shape}")
        if u.size and not (np.all(u >= 0) and np.all(u <= 1)):
            raise ValueError("u must lie in the unit cube [0, 1]^d")
        values = {name: self._dims[name].from_unit(u[:, j]) for j, name in enumerate(self._order)}
        active = self._activity(values)
        return values, active, ~self._forbidden_mask(values, active)

    def from_unit(self, u) -> tuple[Batch, np.ndarray]:
        """Map points of the unit cube, one column per dimension in `names` order, to a batch.

        Returns:
          `(batch, allowed)`: `allowed[i]` is `False` where row `i` is a forbidden
          combination (the caller decides: drop it, or skip to the next point).
        """
        values, active, allowed = self._from_unit(u)
        return self._to_batch(values, active), allowed

    def configs_from_unit(self, u) -> tuple[list[Config], np.ndarray]:
        """`from_unit` as configurations, in float64 whatever JAX's precision."""
        values, active, allowed = self._from_unit(u)
        return self._configs(values, active), allowed

    def _sample(self, key, n, max_rounds):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if not (
            isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        ):
            raise TypeError(f"key must be a PRNG key from jax.random.key, got {key!r}")
        values = {k: np.zeros(0, np.result_type(self._dims[k].placeholder)) for k in self._order}
        active = {k: np.zeros(0, bool) for k in self._order}
        for r in range(max_rounds):
            have = len(active[self._order[0]])
            if have == n:
                return values, active
            # float32 draws: the same points whether or not JAX runs in float64.
            u = jax.random.uniform(
                jax.random.fold_in(key, r), (n, len(self._order)), dtype=jnp.float32
            )
            v, a, allowed = self._from_unit(np.asarray(u, np.float64))
            keep = np.flatnonzero(allowed)[: n - have]
            values = {k: np.concatenate([values[k], v[k][keep]]) for k in self._order}
            active = {k: np.concatenate([active[k], a[k][keep]]) for k in self._order}
        if len(active[self._order[0]]) == n:
            return values, active
        raise InvalidSpaceError(
            f"forbidden combinations rejected nearly every sample "
            f"({len(active[self._order[0]])} of {n} valid after {max_rounds} rounds); "
            f"forbidden={[f.describe() for f in self._forbidden]}"
        )

    def sample(self, key: jax.Array, n: int, max_rounds: int = 100) -> Batch:
        """`n` independent uniform (log-uniform where `log=True`) valid configurations.

        Conditional dimensions follow their parents; forbidden combinations are rejected
        and redrawn (round `r` draws from `jax.random.fold_in(key, r)`), so the result is
        a function of `key` and `n` alone.

        Raises:
          InvalidSpaceError: the forbidden combinations cover (nearly) the whole space.
        """
        return self._to_batch(*self._sample(key, n, max_rounds))

    def sample_configs(self, key: jax.Array, n: int, max_rounds: int = 100) -> list[Config]:
        """The configurations of `sample(key, n)`, in float64 whatever JAX's precision."""
        return self._configs(*self._sample(key, n, max_rounds))

    def stack(self, configs: Sequence[Mapping[str, Any]]) -> Batch:
        """Validate `configs` and stack them into a `Batch`."""
        configs = [self.validate(c, f"configs[{i}]") for i, c in enumerate(configs)]
        values, active = {}, {}
        for name in self._order:
            dim = self._dims[name]
            active[name] = np.array([name in c for c in configs], bool)
            if isinstance(dim, Categorical):
                values[name] = np.array(
                    [dim.index(c[name]) if name in c else 0 for c in configs], np.int64
                )
            else:
                values[name] = np.array([c.get(name, dim.placeholder) for c in configs])
        return self._to_batch(values, active)

    def unstack(self, batch: Batch) -> list[Config]:
        """The configurations of a batch as dicts of Python values, inactive ones left out."""
        return self._configs(
            {k: np.asarray(v) for k, v in batch.values.items()},
            {k: np.asarray(v) for k, v in batch.active.items()},
        )

    def _configs(self, values, active) -> list[Config]:
        n = len(active[self._order[0]])
        return [
            {
                name: self._dims[name].to_python(values[name][i])
                for name in self._order
                if active[name][i]
            }
            for i in range(n)
        ]

    # -- unconstrained coordinates -------------------------------------------------

    def to_unconstrained(self, values: Mapping[str, Any]) -> dict[str, jax.Array]:
        """`u[name] = logit(position of values[name])` for every continuous dimension.

        Works on scalars and on arrays (a `Batch.values`), under `jit`, `vmap`, `grad`.
        """
        return {
            n: self._dims[n].to_unconstrained(values[n]) for n in self.continuous if n in values
        }

    def from_unconstrained(self, u: Mapping[str, Any]) -> dict[str, jax.Array]:
        """The inverse of `to_unconstrained`; the result always lies inside the bounds."""
        return {n: self._dims[n].from_unconstrained(u[n]) for n in self.continuous if n in u}
