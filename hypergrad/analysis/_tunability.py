"""Tunability of a family of problems over several data sets, after Probst, Boulesteix
and Bischl (2019).

Interface: `tunability(objective, space, datasets, *, candidates=64, default=None,
resolution=9, seed=0) -> Tunability`, with `objective(config, dataset) -> float`
(lower is better unless `direction="maximize"`).

Definitions (the paper's, with its risks `R^(j)` the objective on data set `j`):

- default `theta*`: given, or the *optimal default* of the family, the candidate
  configuration with the best mean value over the data sets (their Eq. 2 with the mean
  as aggregate); the candidates are `candidates` draws from `space`;
- tunability of the family on data set `j`: `d^(j) = R^(j)(theta*) - min_theta R^(j)`,
  the gain of tuning everything against the default, the minimum taken over every
  configuration evaluated (the candidates and the one-dimensional designs below);
- tunability of dimension `i` on `j`: `d_i^(j) = R^(j)(theta*) - min_v R^(j)(theta*
  with dimension i set to v)`, the gain of tuning `i` alone, the others at the default,
  over a design of `resolution` values of `i` (evenly spaced in its own linear or log
  coordinate; every choice of a categorical; up to `resolution` integers);
- relative tunability `d_i^(j) / d^(j)`.

Invariants: `0 <= d_i^(j) <= d^(j)` (the default is in every design and every design is
among the evaluated configurations); a dimension the objective ignores has `d_i = 0`.
A dimension inactive at the default has no one-dimensional design (NaN); when setting a
parent activates a child, the child takes the midpoint of its range (`from_unit(0.5)`).

Reference: Probst, Boulesteix, Bischl, "Tunability: importance of hyperparameters of
machine learning algorithms", JMLR 20(53), 2019, https://arxiv.org/abs/1802.09596.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from ..space import Categorical, Int, Space
from ._checks import check_int, direction_sign


class Tunability(NamedTuple):
    """What `tunability` measured; per-data-set arrays follow `datasets`.

    Attributes:
      names: the dimensions.
      datasets: the data sets' labels.
      default: the default configuration.
      default_values: `R^(j)(theta*)` per data set.
      best_values: the best value found per data set.
      overall: `d^(j)` per data set.
      per_dim: dimension -> `d_i^(j)` per data set (NaN where inactive at the default).
      relative: dimension -> `d_i^(j) / d^(j)` (NaN where `d^(j) = 0`).
      evaluations: how many objective calls it took.
      direction: `"minimize"` or `"maximize"`.
    """

    names: tuple[str, ...]
    datasets: tuple[str, ...]
    default: dict
    default_values: np.ndarray
    best_values: np.ndarray
    overall: np.ndarray
    per_dim: dict[str, np.ndarray]
    relative: dict[str, np.ndarray]
    evaluations: int
    direction: str

    def mean(self) -> dict[str, float]:
        """Each dimension's tunability averaged over the data sets."""
        return {n: float(np.mean(v)) for n, v in self.per_dim.items()}

    def ranking(self) -> list[str]:
        """The dimensions by decreasing mean tunability (inactive ones last)."""
        m = self.mean()
        return sorted(self.names, key=lambda n: -m[n] if np.isfinite(m[n]) else np.inf)

    def as_dict(self) -> dict[str, Any]:
        """Plain Python (for JSON)."""
        return {
            "datasets": list(self.datasets),
            "default": self.default,
            "default_values": self.default_values.tolist(),
            "best_values": self.best_values.tolist(),
            "overall": self.overall.tolist(),
            "overall_mean": float(np.mean(self.overall)),
            "per_dim": {n: v.tolist() for n, v in self.per_dim.items()},
            "per_dim_mean": self.mean(),
            "relative": {n: v.tolist() for n, v in self.relative.items()},
            "ranking": self.ranking(),
            "evaluations": self.evaluations,
            "direction": self.direction,
        }


def _design(dim, resolution: int) -> list:
    if isinstance(dim, Categorical):
        return list(dim.values())
    if isinstance(dim, Int):
        return dim.grid(resolution)
    return [float(v) for v in dim.from_unit(np.linspace(0.0, 1.0, resolution))]


def _with(space: Space, config: Mapping, name: str, value) -> dict | None:
    """`config` with `name` set to `value`, the children's activity made consistent."""
    out = dict(config)
    out[name] = value
    for n in space.names:  # parents before children
        if n == name:
            continue
        active = space.is_active(n, out)
        if active and n not in out:
            out[n] = space.dims[n].to_python(space.dims[n].from_unit(np.array([0.5]))[0])
        elif not active:
            out.pop(n, None)
    return out if space.is_valid(out) else None


def tunability(
    objective: Callable[[dict, Any], float],
    space: Space,
    datasets: Sequence,
    *,
    candidates: int = 64,
    default: Mapping | None = None,
    resolution: int = 9,
    seed: int = 0,
    direction: str = "minimize",
) -> Tunability:
    """Tunability of each dimension of `space` for the family `objective` over `datasets`.

    Args:
      objective: `objective(config, dataset) -> float` (a validation loss, say).
      space: the search space.
      datasets: the data sets (anything `objective` takes; labelled by `str`).
      candidates: random configurations evaluated on every data set to find the optimal
        default and the per-data-set best.
      default: a default configuration to measure against instead of the optimal one.
      resolution: values in each dimension's one-dimensional design.
      seed: draws the candidates (`space.sample_configs(jax.random.key(seed), ...)`).
      direction: `"minimize"` or `"maximize"`.

    Returns:
      A `Tunability`; see the module docstring for the definitions.

    Example:
      >>> from hypergrad.space import Real, Space
      >>> space = Space({"a": Real(0.0, 1.0), "b": Real(0.0, 1.0)})
      >>> def f(c, shift):  # only `a` matters, its best value moves with the data set
      ...     return (c["a"] - shift) ** 2
      >>> t = tunability(f, space, [0.0, 1.0], candidates=16, resolution=5)
      >>> t.ranking(), t.mean()["b"]
      (['a', 'b'], 0.0)
    """
    sign = direction_sign(direction)
    if not isinstance(space, Space):
        raise TypeError(f"space must be a hypergrad.space.Space, got space={space!r}")
    datasets = list(datasets)
    if not datasets:
        raise ValueError("datasets must name at least one data set")
    check_int("candidates", candidates)
    check_int("resolution", resolution, 2)
    configs = space.sample_configs(jax.random.key(seed), candidates)
    if default is not None:
        configs.insert(0, space.validate(default, "default"))
    calls = 0

    def evaluate(config) -> np.ndarray:
        nonlocal calls
        calls += len(datasets)
        vals = np.array([float(objective(dict(config), d)) for d in datasets])
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"objective returned a non-finite value at {config}: {vals}")
        return sign * vals  # minimized from here on

    table = np.stack([evaluate(c) for c in configs])  # candidates x data sets
    k = 0 if default is not None else int(np.argmin(table.mean(axis=1)))
    theta = configs[k]
    base = table[k]
    best = table.min(axis=0)
    per_dim = {}
    for name in space.names:
        if name not in theta:
            per_dim[name] = np.full(len(datasets), np.nan)
            continue
        gain = np.zeros(len(datasets))
        for v in _design(space.dims[name], resolution):
            c = _with(space, theta, name, v)
            if c is None or c == theta:
                continue
            vals = evaluate(c)
            best = np.minimum(best, vals)
            gain = np.maximum(gain, base - vals)
        per_dim[name] = gain
    overall = base - best
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = {n: np.where(overall > 0, d / overall, np.nan) for n, d in per_dim.items()}
    return Tunability(
        names=space.names,
        datasets=tuple(str(d) for d in datasets),
        default=dict(theta),
        default_values=sign * base,
        best_values=sign * best,
        overall=overall,
        per_dim=per_dim,
        relative=relative,
        evaluations=calls,
        direction=direction,
    )
