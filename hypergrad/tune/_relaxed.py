"""Relaxed discrete dimensions in the tuner: logits held by the descent, weights seen by
the problem, the argmax re-evaluated exactly.

Interface (used by `hypergrad.tune.tune`; the contract a problem sees is in that module's
docstring):

- `check_space(space)` refuses what a relaxation cannot express: a condition whose
  parent is relaxed, a forbidden combination naming a relaxed dimension.
- `check_weights(pb, name, dim, where)` checks that `pb.hparams[name]` can hold the
  weights of relaxed dimension `name`: a floating array of shape `(number of values,)`.
- `Relaxation(kind, temperature)` maps weights to logits (`to_unconstrained`) and logits
  to weights (`from_unconstrained(logits, key=None)`): `softmax(logits / temperature)`,
  or with `kind="gumbel"` and a key, a Gumbel-softmax sample of them.
- `starting_weights(key, dim, population, dtype)`, `discretize(dim, weights)`.

Invariant: `from_unconstrained(to_unconstrained(w)) == w` up to rounding for weights `w`
with positive entries, and `discretize` picks the value of the largest weight, which is
the value of the largest logit.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..relax import GumbelSoftmax, Softmax
from ..space import Categorical, Space

# A stream of the round's key that `_starts` (which folds in 0..99) never uses.
_STREAM = 1_000_003


def check_space(space: Space) -> None:
    """Refuse relaxed dimensions that the tuner cannot relax (before any trial)."""
    relaxed = set(space.relaxed)
    for name, conds in space.conditions.items():
        for c in conds:
            if c.parent in relaxed:
                raise ValueError(
                    f"{name!r} is conditioned on relaxed dimension {c.parent!r}: a relaxed "
                    "dimension has no single value while it is tuned; relax it only if "
                    "no dimension depends on it, or drop relax"
                )
    for f in space.forbidden:
        named = sorted(relaxed & set(f.clauses))
        if named:
            raise ValueError(
                f"forbidden combination ({f.describe()}) names relaxed dimension "
                f"{named[0]!r}: its argmax could not be kept out of it; drop relax or the "
                "combination"
            )


def size(dim) -> int:
    """The number of values of a discrete dimension: one weight (one logit) each."""
    return len(dim.values())


def check_weights(pb, name: str, dim, where: str) -> None:
    shape, dtype = np.shape(pb.hparams[name]), jnp.result_type(pb.hparams[name])
    if shape != (size(dim),) or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{where}.hparams[{name!r}] must hold the weights of relaxed dimension "
            f"{name!r}: a float array of shape ({size(dim)},), one weight per value "
            f"{_values(dim)}; got shape {shape} and dtype {dtype}"
        )


def _values(dim) -> str:
    values = list(dim.values())
    return repr(values) if len(values) <= 6 else f"[{values[0]!r}, ..., {values[-1]!r}]"


@dataclasses.dataclass(frozen=True)
class Relaxation:
    """Logits (the descent's unconstrained coordinate) to weights on the simplex.

    Equal for equal settings, so the compiled outer step is reused across rounds.
    """

    kind: str
    temperature: float

    def to_unconstrained(self, weights):
        # softmax is invariant to a shift of the logits; the zero-mean ones are returned.
        logits = self.temperature * jnp.log(weights)
        return logits - jnp.mean(logits, axis=-1, keepdims=True)

    def from_unconstrained(self, logits, key=None):
        if key is None or self.kind == "softmax":
            return Softmax().weights(None, logits, self.temperature)
        return GumbelSoftmax().weights(key, logits, self.temperature)


def relaxation(dim) -> Relaxation:
    return Relaxation(dim.relax, float(dim.temperature))


def keys(seed: int, round_number: int) -> tuple[jax.Array, jax.Array]:
    """The round's keys for starting weights and for Gumbel noise."""
    base = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), round_number), _STREAM)
    start, noise = jax.random.split(base)
    return start, noise


def starting_weights(key, dim, population: int, dtype) -> np.ndarray:
    """`(population, n)` starting weights: uniform for the first member, then
    `softmax(z / temperature)` with standard normal logits `z`, spread around it."""
    z = np.array(jax.random.normal(key, (population, size(dim)), dtype))
    z[0] = 0.0
    return np.asarray(relaxation(dim).from_unconstrained(jnp.asarray(z)))


def discretize(dim, weights):
    """The value of the largest weight (a choice, or an `Int`'s integer)."""
    return dim.values()[int(np.argmax(np.asarray(weights)))]


def describe(dim, start) -> dict:
    """What `replay` needs to rebuild a relaxed dimension (JSON)."""
    return {
        "values": list(dim.values()),
        "relax": dim.relax,
        "temperature": float(dim.temperature),
        "start": np.asarray(start).tolist(),
    }


def rebuild(spec: dict) -> Categorical:
    """The dimension of `describe`, as a `Categorical` over its values (an `Int`'s too)."""
    return Categorical(tuple(spec["values"]), relax=spec["relax"], temperature=spec["temperature"])
