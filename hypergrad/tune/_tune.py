"""The tuner: hypergradient descent inside, black-box search outside, every trial recorded.

Interface: `tune(problem, space, ...) -> TuneResult`.

`problem` is a `BilevelProblem` whose `hparams` is a dict with one entry per continuous
dimension of `space`, or, when the space has discrete dimensions or several seeds are
wanted, a module-level function `problem(config, *, seed) -> BilevelProblem` that builds
the problem for the discrete choices in `config` and a seed (a data split, an
initialization). A `Real` dimension may stand for an array-valued hyperparameter (one
penalty per feature): its bounds then hold elementwise and a starting value fills the
array.

Each round, the proposer (random search by default; any `hypergrad.search` proposer over
the discrete dimensions, `OptunaSearch` included) proposes one discrete configuration.
For it, `population` starting points of the continuous dimensions, times `seeds`
problems, are descended together in one compiled program (`descend` with `vmap`): the
members of a configuration share their hyperparameters across seeds and descend on the
seed mean of the validation objective, so the choice rests on the seed-aggregated value.
With `halving`, successive halving drops the worse part of the population at rungs of
geometrically growing length. The round's value (the best member's seed mean) goes back
to the proposer.

Invariant: every member of every round is one trial of `records`, created (`RUNNING`)
before its round starts and completed after it; an interrupted run (Ctrl-C) fails only
the trials of the round in flight, and `tune(..., records=same)` again resumes: finished
rounds are read back from the study (the proposer observes them) and not run again.
With a problem factory, each trial can be re-run alone by `hypergrad reproduce`; the
population's `vmap` may change the last bits of a value, so the match is within the
stated tolerance rather than bit-for-bit.

Relaxed dimensions: an `Int` or a `Categorical` with `relax="softmax"` or `"gumbel"` (and
a `temperature`) is not proposed; its logits, one per value, descend together with the
continuous dimensions in the same outer steps. The contract with the factory:

- for the descent, `problem(config, seed=...)` receives `config[name] is
  hypergrad.space.RELAXED` and returns a problem whose `hparams[name]` is a float array
  of shape `(n,)`, `n` the number of values (the choices, or the integers `low..high`).
  The tuner fills it with weights on the simplex: `softmax(logits / temperature)`, or
  with `"gumbel"` a Gumbel-softmax sample of them drawn afresh at each outer step. The
  model mixes its options with these weights (`hypergrad.relax.mix(hparams[name],
  outputs)`, or each option's features scaled by its weight), so that a one-hot weight
  is exactly that option.
- at the end, each member's weights are discretized (argmax); the factory, called with
  the chosen value in `config[name]`, builds the exact problem (no `hparams[name]`),
  and the tuner evaluates it at the member's continuous hyperparameters (no further
  descent). Members, rounds, the proposer and `TuneResult.value` see these exact values;
  `relaxed_value` keeps the relaxed objective (with `"gumbel"`, that of the best step's
  sample). The first member starts from uniform weights, the others around them.

A relaxed dimension may be conditional on a proposed one; none may be conditional on a
relaxed one, nor a forbidden combination name it. A relaxed problem with the wrong
weights leaf, or an exact one whose continuous hyperparameters differ from it, is
refused before the round's trials start.
"""

import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optuna
from optuna.trial import TrialState

from .. import methods as _methods
from .._bilevel import BilevelProblem
from ..methods import Implicit, outer_loss, solve
from ..methods._base import AbstractMethod
from ..records import EXACT_ATTR, Outcome, Records, reference, resolve, trial_seed
from ..records import to_optuna_distributions as _distributions
from ..search import (
    AbstractProposer,
    GridSearch,
    OptunaSearch,
    Proposal,
    RandomSearch,
    grid_points,
)
from ..space import RELAXED, Int, Real, Space
from . import _relaxed
from ._aggregate import aggregate_seeds
from ._descent import decades, descend, stack_problems

ROUND_ATTR = "tune.round"
KIND = "gradient"


class Member(NamedTuple):
    """One starting point of one round, after its descent.

    Attributes:
      trial: its trial number in the records.
      start: the starting configuration (discrete choices and continuous start).
      hparams: the best hyperparameters it visited (natural coordinates, NumPy).
      value: the seed mean of the validation objective there.
      per_seed: each seed's value there.
      curve: the seed mean at each outer step it ran.
      steps: the outer steps it ran (fewer when successive halving dropped it).
      relaxed_value: with relaxed dimensions, the relaxed objective at `hparams` (whose
        relaxed entries are weights); `value` and `per_seed` are then those of the
        discretized configuration, evaluated exactly. `None` without.
      choice: with relaxed dimensions, the value each one was discretized to.
    """

    trial: int
    start: dict
    hparams: dict
    value: float
    per_seed: np.ndarray
    curve: np.ndarray
    steps: int
    relaxed_value: float | None = None
    choice: dict | None = None


class Round(NamedTuple):
    """One discrete configuration and its population."""

    number: int  # the round's number in the records
    config: dict
    members: list[Member]
    value: float  # the best member's value
    resumed: bool  # read back from the records, not run by this call


class TuneResult(NamedTuple):
    """What `tune` returns.

    Attributes:
      config: the best configuration: discrete choices (relaxed dimensions discretized)
        and the tuned continuous values (floats, or lists for array-valued ones).
      value: its validation value, the mean over seeds (with relaxed dimensions, of the
        exact problem of the discretized configuration).
      std, ci_low, ci_high: the across-seed standard deviation and 95% Student-t
        interval of that mean (NaN / infinite with one seed).
      per_seed: its validation value on each seed.
      test_value: the mean over seeds of the outer objective on each problem's `test`
        data at the best configuration (`None` without test data).
      rounds: every round, in order (resumed ones included).
      records: where the trials are.
      num_inner_solves: inner solves this call ran.
      wall_time_s: this call's wall time.
      relaxed_value: with relaxed dimensions, the relaxed objective (seed mean) of the
        member whose discretization `config` is; `None` without.
    """

    config: dict
    value: float
    std: float
    ci_low: float
    ci_high: float
    per_seed: np.ndarray
    test_value: float | None
    rounds: list[Round]
    records: Records
    num_inner_solves: int
    wall_time_s: float
    relaxed_value: float | None = None


# -- checks ------------------------------------------------------------------------------


def _positive_int(value, name, allow_none=False):
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {name}={value!r}")


@functools.lru_cache(maxsize=16)
def _named_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """`optax.<name>(learning_rate)`, one object per setting (compiled steps are reused)."""
    make = getattr(optax, name, None)
    if not callable(make):
        raise ValueError(f"optimizer must name an optax optimizer, got optimizer={name!r}")
    tx = make(learning_rate)
    if not isinstance(tx, optax.GradientTransformation):
        raise ValueError(f"optax.{name}(learning_rate) is not an optimizer")
    return tx


def _optimizer(optimizer, learning_rate):
    """The optax transformation and, when it can be rebuilt from a record, its spec."""
    if not (isinstance(learning_rate, float | int) and learning_rate > 0):
        raise ValueError(f"learning_rate must be positive, got learning_rate={learning_rate!r}")
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer, None
    if isinstance(optimizer, str):
        tx = _named_optimizer(optimizer, float(learning_rate))
        return tx, {"name": optimizer, "learning_rate": float(learning_rate)}
    raise TypeError(
        f"optimizer must be an optax optimizer name or GradientTransformation, got {optimizer!r}"
    )


def _subspace(space: Space, names) -> Space | None:
    if not names:
        return None
    conditions = {k: v for k, v in space.conditions.items() if k in names}
    return Space({k: space.dims[k] for k in names}, conditions, space.forbidden)


def _discrete_space(space: Space) -> Space | None:
    """The dimensions the proposer proposes: the discrete ones not relaxed."""
    return _subspace(space, [n for n in space.discrete if n not in space.relaxed])


def _check_hparams(pb, space, discrete_config, where, relaxed=()):
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


# -- building one round ------------------------------------------------------------------


def _seeds(run_seed: int, num: int) -> list[int]:
    """The seeds a run's problems are built with: the same for every round."""
    return [trial_seed(run_seed, s) for s in range(num)]


def _build(problem, discrete, seeds):
    if isinstance(problem, BilevelProblem):
        return stack_problems([problem])
    pbs = [problem(dict(discrete), seed=s) for s in seeds]
    for s, pb in zip(seeds, pbs, strict=True):
        if not isinstance(pb, BilevelProblem):
            raise TypeError(f"problem(config, seed={s}) must return a BilevelProblem, got {pb!r}")
    try:
        return stack_problems(pbs)
    except ValueError:
        raise ValueError(
            "problem(config, seed=...) must return problems of one structure and shapes "
            "for every seed of a configuration"
        ) from None


def _starts(space, names, discrete, key, population):
    """`population` valid starting points of the continuous dimensions."""
    starts = []
    for r in range(100):
        u = np.asarray(jax.random.uniform(jax.random.fold_in(key, r), (population, len(names))))
        for row in u:
            cfg = dict(discrete)
            cfg.update({n: float(space.dims[n].from_unit(row[j])) for j, n in enumerate(names)})
            if space.is_valid(cfg):
                starts.append(cfg)
            if len(starts) == population:
                return starts
    raise ValueError(f"could not draw {population} valid starting points for {discrete}")


def _initial_hparams(pb, names, starts):
    """Stacked starting hyperparameters, each value broadcast to its leaf's shape."""
    return {
        n: jnp.stack(
            [
                jnp.full(jnp.shape(pb.hparams[n]), s[n], jnp.result_type(pb.hparams[n]))
                for s in starts
            ]
        )
        for n in names
    }


@dataclasses.dataclass(frozen=True)
class _ToUnconstrained:
    """The space's map to unconstrained coordinates; equal for equal dimensions, so the
    compiled outer step is reused across rounds (see `descend`)."""

    dims: tuple[tuple[str, Real], ...]

    def __call__(self, h):
        return {n: dim.to_unconstrained(h[n]) for n, dim in self.dims}


@dataclasses.dataclass(frozen=True)
class _FromUnconstrained:
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


def _coordinates(space, names):
    relaxed = set(space.relaxed)
    dims = tuple(
        (n, _relaxed.relaxation(space.dims[n]) if n in relaxed else space.dims[n]) for n in names
    )
    return _ToUnconstrained(dims), _FromUnconstrained(dims)


def _rungs(population, steps, halving):
    """`[(members kept, cumulative steps), ...]` of successive halving."""
    if halving is None or population == 1:
        return [(population, steps)]
    sizes = [population]
    while sizes[-1] > 1:
        sizes.append(math.ceil(sizes[-1] / halving))
    ends = [max(1, round(steps / halving ** (len(sizes) - 1 - i))) for i in range(len(sizes))]
    rungs = []
    for size, end in zip(sizes, ends, strict=True):
        if rungs and end <= rungs[-1][1]:
            rungs[-1] = (size, rungs[-1][1])  # too few steps to separate rungs: merge
        else:
            rungs.append((size, end))
    rungs[-1] = (rungs[-1][0], steps)
    return rungs


def _take(tree, index):
    return jax.tree.map(lambda x: x[index], tree)


def _py(x):
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else a.tolist()


class _Progress:
    def __init__(self, enabled, rounds):
        self.enabled = enabled
        self.rounds = rounds

    def __call__(self, r, step, total, best):
        if self.enabled:
            sys.stderr.write(
                f"\rtune: round {r + 1}/{self.rounds}  step {step}/{total}  best {best:.6g}   "
            )
            sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")


def _descend_population(pbs, h0, space, names, **kwargs):
    """`descend` a population (leading axis of `h0`) pooled over the seeds of `pbs`."""
    to_u, from_u = _coordinates(space, names)
    return descend(
        pbs,
        h0,
        to_unconstrained=to_u,
        from_unconstrained=from_u,
        batch_hparams=True,
        batch_problem=True,
        pool_seeds=True,
        **kwargs,
    )


def _descend_round(
    pbs,
    h0,
    names,
    space,
    *,
    steps,
    halving,
    method,
    tx,
    opts,
    progress,
    r,
    best,
    key=None,
    schedule=None,
):
    """Descend a population with successive halving; the kept members' descents."""
    population = len(jax.tree.leaves(h0)[0])
    alive = np.arange(population)
    state, done = None, 0
    curves = [[] for _ in range(population)]
    hparams = {n: np.array(h0[n]) for n in names}
    value = np.full(population, np.inf)
    per_seed = np.full((population, _num_seeds(pbs)), np.inf)
    ran = np.zeros(population, int)
    solves = 0
    for size, end in _rungs(population, steps, halving):
        if size < len(alive):
            order = np.argsort(value[alive], kind="stable")[:size]
            state = _take(state, order)
            alive = alive[order]
        planned = end - done
        res = _descend_population(
            pbs,
            _take(h0, alive),
            space,
            names,
            steps=planned,
            optimizer=tx,
            method=method,
            state=state,
            key=key,
            callback=lambda t, stats, d=done: progress(
                r, d + t + 1, steps, min(best, float(np.min(np.mean(stats["value"], -1))))
            ),
            inner_tol=None if schedule is None else (lambda t, d=done: schedule(d + t)),
            **opts,
        )
        state, done = res.state, done + res.num_steps
        solves += res.num_inner_solves
        mean_curve = np.mean(res.history["value"], axis=-1)  # (steps, members)
        for j, m in enumerate(alive):
            curves[m].extend(mean_curve[:, j].tolist())
        found = jax.device_get(res.hparams)
        for n in names:
            hparams[n][alive] = found[n]
        value[alive] = np.asarray(res.value)
        per_seed[alive] = np.asarray(res.per_seed)
        ran[alive] = done
        if res.num_steps < planned:  # stopped early (tol, min_improvement): no more rungs
            break
    return hparams, value, per_seed, curves, ran, solves


def _schedule(inner_tol, steps):
    if inner_tol is None:
        return None
    if not (isinstance(inner_tol, tuple | list) and len(inner_tol) == 2):
        raise ValueError(f"inner_tol must be a pair (start, end), got inner_tol={inner_tol!r}")
    return decades(float(inner_tol[0]), float(inner_tol[1]), steps)


def _num_seeds(pbs) -> int:
    return int(jax.tree.leaves(pbs.val)[0].shape[0])


# -- records -----------------------------------------------------------------------------


def _completed_rounds(records, space):
    """Rounds of earlier calls whose every member completed: `{round: Round}`."""
    by_round: dict[int, list] = {}
    for t in records.trials():
        r = t.user_attrs.get(ROUND_ATTR)
        if r is not None and t.user_attrs.get("kind") == KIND:
            by_round.setdefault(int(r), []).append(t)
    done = {}
    for r, trials in by_round.items():
        size = trials[0].user_attrs.get("tune.population")
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if len(complete) != size:
            continue
        members = []
        for t in sorted(complete, key=lambda t: t.number):
            curve = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
            members.append(
                Member(
                    t.number,
                    dict(t.params),
                    {k: np.asarray(v) for k, v in t.user_attrs["result.hparams"].items()},
                    float(t.value),
                    np.asarray(t.user_attrs["result.per_seed"]),
                    np.asarray(curve),
                    len(curve),
                    t.user_attrs.get("result.relaxed_value"),
                    t.user_attrs.get("result.choice"),
                )
            )
        discrete = {k: v for k, v in members[0].start.items() if k in space.discrete}
        done[r] = (
            Round(r, discrete, members, min(m.value for m in members), True),
            trials[0].user_attrs.get("proposal_info") or {},
        )
    return done


def replay(config, *, seed, budget):
    """Re-run one recorded tuner trial alone (the objective `hypergrad reproduce` calls).

    `budget` holds the tuner's settings as recorded: the problem factory, the number of
    seeds and outer steps, the method and the outer optimizer.
    """
    problem = resolve(budget["problem"])
    method = _method_from_repr(budget["method"])
    spec = budget.get("optimizer")
    if spec is None:
        raise ValueError("this trial used a custom optimizer object; it cannot be rebuilt")
    tx, _ = _optimizer(spec["name"], spec["learning_rate"])
    space_dims = {n: Real(lo, hi, log=log) for n, (lo, hi, log) in budget["continuous"].items()}
    names = sorted(space_dims)
    discrete = {k: v for k, v in config.items() if k not in space_dims}
    relaxed_spec = budget.get("relaxed") or {"dims": {}}
    relaxed = sorted(relaxed_spec["dims"])
    space_dims.update({n: _relaxed.rebuild(d) for n, d in relaxed_spec["dims"].items()})
    seeds = _seeds(seed, budget["seeds"])
    pbs = _build(problem, {**discrete, **dict.fromkeys(relaxed, RELAXED)}, seeds)
    first = jax.tree.map(lambda x: x[0], pbs)
    h0 = _initial_hparams(first, names, [config])
    for n in relaxed:
        start = relaxed_spec["dims"][n]["start"]
        h0[n] = jnp.asarray([start], jnp.result_type(first.hparams[n]))
    space = Space(space_dims)
    res = _descend_population(
        pbs,
        h0,
        space,
        sorted(space_dims),
        steps=budget["steps"],
        optimizer=tx,
        method=method,
        key=_noise_key(space, relaxed, seed, relaxed_spec.get("round")),
        inner_tol=_schedule(budget.get("inner_tol"), budget.get("total_steps")),
    )
    curve = tuple(np.mean(res.history["value"], axis=-1)[:, 0].tolist())
    if not relaxed:
        return Outcome(float(res.value[0]), curve, res.num_inner_solves)
    found = jax.device_get(res.hparams)
    choice = {n: _relaxed.discretize(space.dims[n], found[n][0]) for n in relaxed}
    per_seed = _exact_values(problem, space, discrete, [choice], found, names, seeds)
    return Outcome(float(np.mean(per_seed)), curve, res.num_inner_solves + len(seeds))


def _noise_key(space, relaxed, seed, round_number):
    """The Gumbel noise of a round, or `None` when no relaxation draws any."""
    if not any(space.dims[n].relax == "gumbel" for n in relaxed):
        return None
    return _relaxed.keys(seed, round_number)[1]


# One program per problem structure, reused across rounds: (members, seeds) values.
_member_values = jax.jit(jax.vmap(jax.vmap(outer_loss, in_axes=(0, None)), in_axes=(None, 0)))


def _exact_values(problem, space, discrete, choices, hparams, names, seeds):
    """Each member's validation value per seed at its discretized configuration,
    `(members, seeds)`: the factory builds the exact problem of each distinct choice,
    evaluated at the members' continuous hyperparameters `hparams[names]`."""
    out = np.empty((len(choices), len(seeds)))
    groups: dict[tuple, list[int]] = {}
    for j, choice in enumerate(choices):
        groups.setdefault(tuple(choice.items()), []).append(j)
    for items, members in groups.items():
        config = {**discrete, **dict(items)}
        pbs = _build(problem, config, seeds)
        first = jax.tree.map(lambda x: x[0], pbs)
        _check_hparams(first, space, config, f"problem({config})")
        h = {
            n: jnp.asarray(np.stack([hparams[n][j] for j in members]), first.hparams[n].dtype)
            for n in names
        }
        out[members] = np.asarray(_member_values(pbs, h))
    return out


def _check_exact(problem, space, discrete, relaxed, relaxed_pb, seed):
    """The exact problem of the first values of the relaxed dimensions takes the same
    continuous hyperparameters as the relaxed one (checked before any trial)."""
    config = {**discrete, **{n: space.dims[n].values()[0] for n in relaxed}}
    first = jax.tree.map(lambda x: x[0], _build(problem, config, [seed]))
    for n in _check_hparams(first, space, config, f"problem({config})"):
        got, want = jnp.shape(first.hparams[n]), jnp.shape(relaxed_pb.hparams[n])
        if got != want:
            raise ValueError(
                f"problem({config}).hparams[{n!r}] has shape {got}, but the relaxed "
                f"problem's has shape {want}: the continuous hyperparameters tuned with "
                "the relaxation must fit the exact problem"
            )


def _method_from_repr(text: str) -> AbstractMethod:
    names = {n: getattr(_methods, n) for n in dir(_methods) if not n.startswith("_")}
    try:
        method = eval(text, {"__builtins__": {}}, names)  # noqa: S307 - hypergrad names only
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot rebuild the method {text!r}: {e}") from None
    if not isinstance(method, AbstractMethod):
        raise ValueError(f"{text!r} is not a hypergrad method")
    return method


# -- the tuner ---------------------------------------------------------------------------


def tune(
    problem: BilevelProblem | Callable[..., BilevelProblem],
    space: Space,
    *,
    rounds: int = 1,
    population: int = 8,
    seeds: int = 1,
    steps: int = 30,
    halving: int | None = None,
    method: AbstractMethod | None = None,
    optimizer: str | optax.GradientTransformation = "adam",
    learning_rate: float = 0.1,
    tol: float = 0.0,
    min_improvement: float = 0.0,
    inner_tol: tuple[float, float] | None = None,
    proposer: AbstractProposer | None = None,
    records: Records | None = None,
    time_budget_s: float | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> TuneResult:
    """Tune `problem`'s hyperparameters over `space`; see the module docstring.

    Args:
      problem: a `BilevelProblem` (continuous spaces, one seed), or a module-level
        factory `problem(config, *, seed) -> BilevelProblem`.
      space: the search space; its continuous dimensions must be exactly the keys of the
        problem's `hparams` (for the active ones, given the discrete choices), plus its
        relaxed dimensions in the relaxed problem (see the module docstring).
      rounds: discrete configurations to try (one is enough without discrete dimensions;
        fewer run if the proposer runs out, as a grid does).
      population: starting points of the continuous dimensions per round (K).
      seeds: problems per configuration (S), built by the factory with different seeds.
      steps: outer steps of a member that is never dropped.
      halving: keep the best `1/halving` of the population at each rung of successive
        halving; `None` runs every member for `steps`.
      method: how hypergradients are computed (default `Implicit()`).
      optimizer, learning_rate: the outer optimizer: an optax optimizer's name, called
        with `learning_rate` (recorded, so `hypergrad reproduce` can rebuild it), or a
        `GradientTransformation` (not rebuilt by `reproduce`). Steps are taken in the
        space's unconstrained coordinates (logit of the (log-)position in the bounds).
      inner_tol: `(start, end)`: inexact inner solves, the solver's tolerance going from
        `start` down to `end` one decade at a time over the `steps` outer steps
        (`hypergrad.tune.decades`; each decade compiles once); `None` keeps the solver's.
      tol, min_improvement: stop a round early when every member's hypergradient norm is
        at most `tol`, or when no member improved by more than `min_improvement`
        (relative) over 5 steps.
      proposer: proposes the discrete dimensions that are not relaxed (default
        `RandomSearch` over them, or a `GridSearch` when every discrete dimension has at
        most `rounds` combinations).
      records: where trials go (default `Records.open()`: the SQLite file `hypergrad.db`,
        a new study). Pass the records of an interrupted run to resume it.
      time_budget_s: start no new round after this many seconds.
      seed: the run's seed: problem `s` of every round is built with
        `hypergrad.records.trial_seed(seed, s)` (common random numbers: configurations
        are compared on the same data), and round `r` draws its starting points from
        `jax.random.fold_in(jax.random.key(seed), r)`.
      progress: a progress line on stderr (default: when stderr is a terminal).

    Returns:
      A `TuneResult`.

    Raises:
      ValueError, TypeError: bad arguments, or a space that does not match the problem's
        hyperparameters; raised before any trial starts.
    """
    start_time = time.perf_counter()
    for value, name in (
        (rounds, "rounds"),
        (population, "population"),
        (seeds, "seeds"),
        (steps, "steps"),
    ):
        _positive_int(value, name)
    _positive_int(halving, "halving", allow_none=True)
    if halving == 1:
        raise ValueError("halving must be at least 2 (the fraction 1/halving is kept), got 1")
    if time_budget_s is not None and not (
        isinstance(time_budget_s, float | int) and time_budget_s > 0
    ):
        raise ValueError(f"time_budget_s must be positive or None, got {time_budget_s!r}")
    if not isinstance(space, Space):
        raise TypeError(f"space must be a hypergrad.space.Space, got space={space!r}")
    _relaxed.check_space(space)
    method = Implicit() if method is None else method
    if not isinstance(method, AbstractMethod):
        raise TypeError(f"method must be a hypergrad method, got method={method!r}")
    tx, opt_spec = _optimizer(optimizer, learning_rate)
    schedule = _schedule(inner_tol, steps)
    if not (isinstance(tol, float | int) and tol >= 0):
        raise ValueError(f"tol must be >= 0, got tol={tol!r}")
    discrete_space = _discrete_space(space)
    # What a trial records: the dimensions that take one value (the relaxed ones do not).
    searched = _subspace(space, [n for n in space.names if n not in space.relaxed])
    if isinstance(problem, BilevelProblem):
        if space.relaxed:
            raise ValueError(
                f"space relaxes {list(space.relaxed)}: pass a factory problem(config, *, "
                "seed) that builds the relaxed problem when config[name] is RELAXED and "
                "the exact one for a value"
            )
        if discrete_space is not None:
            raise ValueError(
                f"space has discrete dimensions {list(space.discrete)}: pass a factory "
                "problem(config, *, seed) that builds the problem for each choice"
            )
        if seeds != 1:
            raise ValueError(
                f"seeds={seeds} needs a factory problem(config, *, seed); a fixed "
                "BilevelProblem has one seed"
            )
        _check_hparams(problem, space, {}, "problem")
    elif not callable(problem):
        raise TypeError(
            f"problem must be a BilevelProblem or a callable problem(config, *, seed), "
            f"got problem={problem!r}"
        )
    if discrete_space is None:
        if proposer is not None:
            raise ValueError(
                "proposer is only used for discrete dimensions that are not relaxed; the "
                "space has none"
            )
        rounds = 1
    elif proposer is None:
        proposer = _exhaustive_grid(discrete_space, rounds) or RandomSearch(
            discrete_space, seed=seed
        )
    elif not isinstance(proposer, AbstractProposer):
        raise TypeError(f"proposer must be a hypergrad.search proposer, got {proposer!r}")
    elif set(proposer.space.names) != set(discrete_space.names):
        raise ValueError(
            f"proposer's space has dimensions {list(proposer.space.names)}, but the "
            f"discrete dimensions of space (not relaxed) are {list(discrete_space.names)}"
        )
    records = Records.open() if records is None else records
    if not isinstance(records, Records):
        raise TypeError(f"records must be hypergrad.records.Records, got {records!r}")
    if progress is None:
        progress = sys.stderr.isatty()

    ref = None if isinstance(problem, BilevelProblem) else reference(problem)
    continuous_spec = {
        n: (space.dims[n].low, space.dims[n].high, space.dims[n].log)
        for n in space.continuous
        if isinstance(space.dims[n], Real)
    }
    opts = {"tol": tol, "min_improvement": min_improvement}

    # Resume: finished rounds are read back and shown to the proposer.
    records.fail_stale()
    finished = _completed_rounds(records, space)
    history: list[Round] = []
    for r in sorted(finished):
        rnd, info = finished[r]
        history.append(rnd)
        if proposer is not None:
            _observe(proposer, rnd, info, discrete_space)

    show = _Progress(progress, rounds)
    solves = 0
    best_value = min((rnd.value for rnd in history), default=np.inf)
    r = max(finished, default=-1) + 1
    try:
        while len(history) < rounds:
            if time_budget_s is not None and time.perf_counter() - start_time > time_budget_s:
                break
            if proposer is None:
                proposal = Proposal({})
            else:
                asked = proposer.ask(1)
                if not asked:
                    break
                proposal = asked[0]
            discrete = dict(proposal.config)
            relaxed = [n for n in space.relaxed if space.is_active(n, discrete)]
            # The same seeds for every round: configurations compared on the same data.
            pbs = _build(
                problem, {**discrete, **dict.fromkeys(relaxed, RELAXED)}, _seeds(seed, seeds)
            )
            first = jax.tree.map(lambda x: x[0], pbs)
            names = _check_hparams(first, space, discrete, "the problem", relaxed)
            continuous = [n for n in names if n not in relaxed]
            if searched is None:  # every dimension is relaxed: nothing to draw
                starts = [{} for _ in range(population)]
            else:
                key = jax.random.fold_in(jax.random.key(seed), r)
                starts = _starts(searched, continuous, discrete, key, population)
            h0 = _initial_hparams(first, continuous, starts)
            if relaxed:
                _check_exact(problem, space, discrete, relaxed, first, _seeds(seed, 1)[0])
                start_key = _relaxed.keys(seed, r)[0]
                for i, n in enumerate(relaxed):
                    h0[n] = jnp.asarray(
                        _relaxed.starting_weights(
                            jax.random.fold_in(start_key, i),
                            space.dims[n],
                            population,
                            jnp.result_type(first.hparams[n]),
                        )
                    )
            numbers = []
            for s in starts:
                number, _ = records.start(
                    s,
                    space=searched,
                    seed=seed,
                    objective=None if ref is None else "hypergrad.tune._tune:replay",
                    proposer=None if proposer is None else proposer.describe(),
                    proposal_info=proposal.info,
                    kind=KIND,
                    attrs={
                        ROUND_ATTR: r,
                        "tune.population": population,
                        "tune.problem": ref,
                        "tune.method": repr(method),
                        # Re-run alone, a member of a vmap-ed population may differ in
                        # the last bits: reproduce compares within a tolerance.
                        EXACT_ATTR: population == 1,
                    },
                )
                numbers.append(number)
            round_start = time.perf_counter()
            try:
                hparams, value, per_seed, curves, ran, n_solves = _descend_round(
                    pbs,
                    h0,
                    names,
                    space,
                    steps=steps,
                    halving=halving,
                    method=method,
                    tx=tx,
                    opts=opts,
                    schedule=schedule,
                    progress=show,
                    r=r,
                    best=best_value,
                    key=_noise_key(space, relaxed, seed, r),
                )
                relaxed_value, choices = value, [None] * population
                if relaxed:  # discretize, then evaluate each member's choice exactly
                    choices = [
                        {n: _relaxed.discretize(space.dims[n], hparams[n][j]) for n in relaxed}
                        for j in range(population)
                    ]
                    per_seed = _exact_values(
                        problem, space, discrete, choices, hparams, continuous, _seeds(seed, seeds)
                    )
                    value = per_seed.mean(axis=1)
                    n_solves += population * seeds
            except BaseException as e:
                for number in numbers:
                    records.fail(number, f"{type(e).__name__}: {e}")
                raise
            solves += n_solves
            round_time = time.perf_counter() - round_start  # members ran together
            members = []
            for j, (number, s) in enumerate(zip(numbers, starts, strict=True)):
                found = {n: _py(hparams[n][j]) for n in names}
                budget = {
                    "steps": int(ran[j]),
                    "seeds": seeds,
                    "problem": ref,
                    "method": repr(method),
                    "optimizer": opt_spec,
                    "continuous": {n: continuous_spec[n] for n in continuous},
                    "inner_tol": None if inner_tol is None else list(inner_tol),
                    "total_steps": steps,
                }
                attrs = {"hparams": found, "per_seed": per_seed[j].tolist()}
                if relaxed:
                    budget["relaxed"] = {
                        "round": r,
                        "dims": {n: _relaxed.describe(space.dims[n], h0[n][j]) for n in relaxed},
                    }
                    attrs.update(relaxed_value=float(relaxed_value[j]), choice=choices[j])
                records.annotate(number, budget=budget)
                outcome = Outcome(
                    float(value[j]),
                    tuple(curves[j]),
                    (int(ran[j]) + bool(relaxed)) * seeds,
                    attrs,
                )
                records.finish(number, outcome, round_time)
                members.append(
                    Member(
                        number,
                        s,
                        {n: np.asarray(found[n]) for n in names},
                        float(value[j]),
                        per_seed[j],
                        np.asarray(curves[j]),
                        int(ran[j]),
                        float(relaxed_value[j]) if relaxed else None,
                        choices[j],
                    )
                )
            rnd = Round(r, discrete, members, float(np.min(value)), False)
            history.append(rnd)
            best_value = min(best_value, rnd.value)
            if proposer is not None:
                proposer.tell([proposal], [rnd.value])
            r += 1
    finally:
        show.close()
    if not history:
        raise RuntimeError("no round ran: the proposer had nothing to propose")
    return _result(problem, space, history, records, seeds, seed, solves, start_time)


def _exhaustive_grid(space: Space, rounds: int) -> GridSearch | None:
    """A grid over every discrete combination, if there are at most `rounds` of them."""
    widest = max(
        [len(space.dims[n].values()) for n in space.names if isinstance(space.dims[n], Int)],
        default=2,
    )
    if math.prod(len(space.dims[n].values()) for n in space.names) > 10 * rounds:
        return None
    if len(grid_points(space, resolution=max(widest, 2))) > rounds:
        return None
    return GridSearch(space, resolution=max(widest, 2))


def _observe(proposer, rnd, info, discrete_space):
    proposal = Proposal(dict(rnd.config), info=dict(info))
    if isinstance(proposer, OptunaSearch):
        proposer.study.add_trial(
            optuna.trial.create_trial(
                params=dict(rnd.config),
                distributions={
                    k: v for k, v in _distributions(discrete_space).items() if k in rnd.config
                },
                value=rnd.value,
            )
        )
    else:
        proposer.observe(proposal, rnd.value)


def _result(problem, space, history, records, seeds, seed, solves, start_time):
    best_round = min(range(len(history)), key=lambda i: history[i].value)
    rnd = history[best_round]
    member = min(rnd.members, key=lambda m: m.value)
    summary = aggregate_seeds(np.asarray(member.per_seed)[None, :])
    choice = member.choice or {}
    continuous = {n: v for n, v in member.hparams.items() if n not in choice}
    config = dict(rnd.config)
    config.update({n: _py(v) for n, v in continuous.items()})
    config.update(choice)
    discrete = {**rnd.config, **choice}
    test_value = _test_value(problem, discrete, continuous, _seeds(seed, seeds))
    return TuneResult(
        config=config,
        value=float(summary.mean[0]),
        std=float(summary.std[0]),
        ci_low=float(summary.ci_low[0]),
        ci_high=float(summary.ci_high[0]),
        per_seed=np.asarray(member.per_seed),
        test_value=test_value,
        rounds=history,
        records=records,
        num_inner_solves=solves,
        wall_time_s=time.perf_counter() - start_time,
        relaxed_value=member.relaxed_value,
    )


def _test_value(problem, discrete, hparams, seeds):
    """The outer objective on the test data at the best configuration, mean over seeds."""
    pbs = _build(problem, discrete, seeds)
    if pbs.test is None:
        return None

    h = {n: jnp.asarray(hparams[n], jnp.result_type(pbs.hparams[n])) for n in hparams}
    return float(jnp.mean(_test_outer(pbs, h)))


@jax.jit
@functools.partial(jax.vmap, in_axes=(0, None))
def _test_outer(pb, h):
    """Each seed's outer objective on its test data at `h` (compiled once per shapes)."""
    sol = solve(pb.inner, pb.init_params, h, pb.train, solver=pb.solver)
    return pb.outer(sol.params, h, pb.test)
