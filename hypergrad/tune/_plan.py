"""What one round of the tuner descends: its problems, starting points and coordinates.

Interface: `Problems(problem, seeds)` builds the stacked problems of a configuration,
calling the factory once per configuration and seed (`get` remembers: the descent, the
checks, the exact evaluation of relaxed choices and the test value of a round share
them; `keep` forgets the ones no longer needed, `tune` all of them after each round);
`check_problem`, `check_hparams` and `check_exact` refuse a problem that does not fit
the space before any trial starts; `draw_starts` and `initial_hparams` give a round's
starting points; `coordinates` the maps between the space's dimensions and unconstrained
coordinates; `Plan` is one round's descent.

Invariant: equal dimensions give equal coordinate maps (frozen dataclasses), so the
compiled outer step is reused across rounds and calls.
"""

import dataclasses
import functools
import weakref
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _exported
from .._bilevel import BilevelProblem
from ..records import trial_seed
from ..space import RELAXED, Real, Space
from . import _relaxed
from ._descent import stack_problems


def seeds_of(run_seed: int, num: int) -> list[int]:
    """The seeds a run's problems are built with: the same for every round."""
    return [trial_seed(run_seed, s) for s in range(num)]


def subspace(space: Space, names) -> Space | None:
    if not names:
        return None
    conditions = {k: v for k, v in space.conditions.items() if k in names}
    return Space({k: space.dims[k] for k in names}, conditions, space.forbidden)


def discrete_space(space: Space) -> Space | None:
    """The dimensions the proposer proposes: the discrete ones not relaxed."""
    return subspace(space, [n for n in space.discrete if n not in space.relaxed])


def _key(config) -> tuple:
    return tuple(sorted((k, "<relaxed>" if v is RELAXED else v) for k, v in config.items()))


class Problems:
    """Problems stacked over the seeds of a run, built once per configuration.

    A fixed `BilevelProblem` is its own (single-seed) stack for every configuration.
    """

    def __init__(self, problem, seeds: list[int]):
        self.problem, self.seeds = problem, list(seeds)
        self._built: dict[tuple, BilevelProblem] = {}

    def get(self, config: Mapping) -> BilevelProblem:
        """The problems of `config` (discrete choices; `RELAXED` for relaxed dimensions),
        one per seed, stacked on a leading axis."""
        key = _key(config)
        if key not in self._built:
            self._built[key] = self._build(dict(config))
        return self._built[key]

    def keep(self, configs) -> None:
        """Forget every configuration but `configs` (their data may be large)."""
        wanted = {_key(c) for c in configs}
        self._built = {k: v for k, v in self._built.items() if k in wanted}

    def _build(self, config):
        if isinstance(self.problem, BilevelProblem):
            return _remember_first(stack_problems([self.problem]), self.problem)
        pbs = [self.problem(dict(config), seed=s) for s in self.seeds]
        for s, pb in zip(self.seeds, pbs, strict=True):
            if not isinstance(pb, BilevelProblem):
                raise TypeError(
                    f"problem(config, seed={s}) must return a BilevelProblem, got {pb!r}"
                )
        try:
            stacked = stack_problems(pbs)
        except ValueError:
            raise ValueError(
                "problem(config, seed=...) must return problems of one structure and shapes "
                "for every seed of a configuration"
            ) from None
        return _remember_first(stacked, pbs[0])


def check_problem(problem, space: Space, settings) -> None:
    """Refuse a fixed problem where the space or the settings need a factory."""
    if not isinstance(problem, BilevelProblem):
        if not callable(problem):
            raise TypeError(
                "problem must be a BilevelProblem or a callable problem(config, *, seed), "
                f"got problem={problem!r}"
            )
        return
    if space.relaxed:
        raise ValueError(
            f"space relaxes {list(space.relaxed)}: pass a factory problem(config, *, seed) "
            "that builds the relaxed problem when config[name] is RELAXED and the exact one "
            "for a value"
        )
    if discrete_space(space) is not None:
        raise ValueError(
            f"space has discrete dimensions {list(space.discrete)}: pass a factory "
            "problem(config, *, seed) that builds the problem for each choice"
        )
    if settings.seeds != 1:
        raise ValueError(
            f"seeds={settings.seeds} needs a factory problem(config, *, seed); a fixed "
            "BilevelProblem has one seed"
        )
    check_hparams(problem, space, {}, "problem")


_FIRST: dict[int, tuple] = {}  # id(stack) -> (weak reference to it, its first problem)


def _remember_first(stacked: BilevelProblem, one: BilevelProblem) -> BilevelProblem:
    """Let `first(stacked)` return `one`, for as long as `stacked` lives."""
    key = id(stacked)
    _FIRST[key] = (weakref.ref(stacked), one)
    weakref.finalize(stacked, _FIRST.pop, key, None)
    return stacked


def first(pbs: BilevelProblem) -> BilevelProblem:
    """The first seed's problem of a stack (the factory's own, for a stack `Problems`
    built: slicing each leaf eagerly would compile a program per shape)."""
    ref, one = _FIRST.get(id(pbs), (None, None))
    if ref is not None and ref() is pbs:
        return one
    return jax.tree.map(lambda x: x[0], pbs)


def check_hparams(pb, space, discrete_config, where, relaxed=()):
    """The names of `pb.hparams`: the active continuous dimensions and `relaxed`."""
    if not isinstance(pb, BilevelProblem):
        raise TypeError(f"{where} must be a BilevelProblem, got {pb!r}")
    if not isinstance(pb.hparams, Mapping):
        raise ValueError(
            f"{where}.hparams must be a dict with one entry per continuous dimension of the "
            f"space, got {type(pb.hparams).__name__}"
        )
    active = {n for n in space.continuous if space.is_active(n, discrete_config)}
    keys = set(pb.hparams)
    for n in relaxed:
        if n not in keys:
            raise ValueError(
                f"{where}.hparams has no entry {n!r} for relaxed dimension {n!r}: built with "
                f"config[{n!r}] = RELAXED, the problem must hold the weights of its "
                f"{_relaxed.size(space.dims[n])} values in hparams[{n!r}]"
            )
        _relaxed.check_weights(pb, n, space.dims[n], where)
    active |= set(relaxed)
    if keys != active:
        missing, extra = sorted(active - keys), sorted(keys - active)
        raise ValueError(
            f"space does not match {where}.hparams for {discrete_config}: "
            f"continuous dimensions without a hyperparameter {missing}, hyperparameters "
            f"without a continuous dimension {extra}"
        )
    return sorted(active)


def check_exact(problems: Problems, space, discrete, relaxed, relaxed_pb):
    """The exact problem of the first values of the relaxed dimensions takes the same
    continuous hyperparameters as the relaxed one (checked before any trial)."""
    config = {**discrete, **{n: space.dims[n].values()[0] for n in relaxed}}
    exact = first(problems.get(config))
    for n in check_hparams(exact, space, config, f"problem({config})"):
        got, want = jnp.shape(exact.hparams[n]), jnp.shape(relaxed_pb.hparams[n])
        if got != want:
            raise ValueError(
                f"problem({config}).hparams[{n!r}] has shape {got}, but the relaxed "
                f"problem's has shape {want}: the continuous hyperparameters tuned with "
                "the relaxation must fit the exact problem"
            )


def _uniform(seed, round_number, attempt, *, shape):
    """`uniform(fold_in(fold_in(key(seed), round_number), attempt), shape)`: one program
    (eagerly, each of the three operations would compile one of its own), exported within
    `hypergrad._exported.enabled()`."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), round_number), attempt)
    return jax.random.uniform(key, shape)


@functools.cache
def _uniform_of(shape):
    """`_uniform` of `shape`, compiled (the shape bound: it keys an exported program)."""
    return jax.jit(functools.partial(_uniform, shape=shape))


def draw_starts(space, names, discrete, seed, round_number, population):
    """`population` valid starting points of the continuous dimensions: round
    `round_number` of run `seed` draws from `fold_in(key(seed), round_number)`."""
    starts = []
    for r in range(100):
        draw = _uniform_of((population, len(names)))
        u = np.asarray(_exported.call("tune-starts", draw, seed, round_number, r))
        for row in u:
            cfg = dict(discrete)
            cfg.update({n: float(space.dims[n].from_unit(row[j])) for j, n in enumerate(names)})
            if space.is_valid(cfg):
                starts.append(cfg)
            if len(starts) == population:
                return starts
    raise ValueError(f"could not draw {population} valid starting points for {discrete}")


def initial_hparams(pb, names, starts):
    """Stacked starting hyperparameters, each value broadcast to its leaf's shape."""
    return {
        n: jax.device_put(
            np.stack([np.full(np.shape(pb.hparams[n]), s[n], pb.hparams[n].dtype) for s in starts])
        )
        for n in names
    }


@dataclasses.dataclass(frozen=True)
class ToUnconstrained:
    """The space's map to unconstrained coordinates; equal for equal dimensions, so the
    compiled outer step is reused across rounds (see `descend`)."""

    dims: tuple[tuple[str, Real], ...]

    def __call__(self, h):
        return {n: dim.to_unconstrained(h[n]) for n, dim in self.dims}


@dataclasses.dataclass(frozen=True)
class FromUnconstrained:
    dims: tuple[tuple[str, Real | _relaxed.Relaxation], ...]

    def __call__(self, u, key=None):
        if key is None:
            return {n: dim.from_unconstrained(u[n]) for n, dim in self.dims}
        return {
            n: dim.from_unconstrained(u[n], jax.random.fold_in(key, i))
            if isinstance(dim, _relaxed.Relaxation)
            else dim.from_unconstrained(u[n])
            for i, (n, dim) in enumerate(self.dims)
        }


def coordinates(space, names):
    relaxed = set(space.relaxed)
    dims = tuple(
        (n, _relaxed.relaxation(space.dims[n]) if n in relaxed else space.dims[n]) for n in names
    )
    return ToUnconstrained(dims), FromUnconstrained(dims)


def noise_key(space, relaxed, seed, round_number):
    """The Gumbel noise of a round, or `None` when no relaxation draws any."""
    if not any(space.dims[n].relax == "gumbel" for n in relaxed):
        return None
    return _relaxed.keys(seed, round_number)[1]


class Plan(NamedTuple):
    """One round's descent: what `evaluate` needs besides the settings.

    Attributes:
      number: the round's number (it picks the Gumbel noise).
      discrete: the proposed discrete choices.
      space: the dimensions of `names` (continuous and relaxed).
      names: the hyperparameters descended, sorted.
      relaxed: the relaxed ones among them.
      h0: the starting hyperparameters, stacked over the population.
    """

    number: int
    discrete: dict
    space: Space
    names: list[str]
    relaxed: list[str]
    h0: dict

    @property
    def continuous(self) -> list[str]:
        return [n for n in self.names if n not in self.relaxed]
