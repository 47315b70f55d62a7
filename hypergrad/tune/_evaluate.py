"""One round of the tuner: a population descended on its seeds, then scored.

Interface: `evaluate(problems, plan, settings) -> RoundOutcome`: the population `plan.h0`
descends together (`descend`'s outer solver, seeds pooled: each member is judged by its
seed mean) with successive halving when `settings.halving` is set; with relaxed
dimensions, each member's weights are discretized and its exact configuration evaluated;
the round's best member is evaluated on the test data when there is one.
`RoundOutcome.outcome(j)` is member `j`'s `hypergrad.records.Outcome`.

`replay(config, *, seed, budget)` is the objective a tuner trial records: it rebuilds
the trial's settings (`TuneSettings.from_json`) and plan from its record and calls
`evaluate` on that one member, which is how `hypergrad reproduce` re-runs it.

Invariant: the loop and the replay run the same code on the same compiled programs (the
history's length is the settings' `steps` in both), so a replayed member matches its
record to the last bits, or within a tolerance when it ran in a population.
"""

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _exported
from ..methods import outer_loss, problem_method, solve
from ..records import Outcome, resolve
from ..solvers._batched import population_solver
from ..space import RELAXED, Real, Space
from . import _relaxed
from ._descent import _Static, run_descent
from ._outer import failed_solves, inner_failure_message, status_counts
from ._plan import Plan, Problems, check_hparams, coordinates, first, initial_hparams, noise_key
from ._plan import seeds_of as seeds_of
from ._settings import TuneSettings

PATIENCE = 5  # steps without improvement before `min_improvement` stops a member


class RoundOutcome(NamedTuple):
    """What one round's population reached (arrays over its P members).

    Attributes:
      hparams: name -> the best hyperparameters each member visited, `(P, ...)`.
      value: each member's seed mean, exact for relaxed dimensions, `(P,)`.
      per_seed: `(P, S)`.
      curves: each member's seed mean at every outer step it ran.
      ran: the outer steps each member ran.
      relaxed_value: with relaxed dimensions, each member's relaxed value; else None.
      choices: with relaxed dimensions, each member's discretized values; else Nones.
      inner_status: each member's inner solves by status, `(P, len(Status.NAMES))`.
      num_inner_solves: inner solves of the round (descent and exact evaluations).
      best: the index of the best member.
      test_value: the best member's seed mean on the test data, or None.
      solver: the inner solver the population ran (`repr`): `population_solver` of the
        problem's, recorded with every member.
    """

    hparams: dict
    value: np.ndarray
    per_seed: np.ndarray
    curves: list
    ran: np.ndarray
    relaxed_value: np.ndarray | None
    choices: list
    inner_status: np.ndarray
    num_inner_solves: int
    best: int
    test_value: float | None
    solver: str

    def outcome(self, j: int) -> Outcome:
        """Member `j` as a record's `Outcome`."""
        counts = status_counts(self.inner_status[j])
        attrs = {
            "hparams": {n: _py(v[j]) for n, v in self.hparams.items()},
            "per_seed": self.per_seed[j].tolist(),
            "inner_failures": failed_solves(counts),
            "inner_status": counts,
            "solver": self.solver,
        }
        if self.relaxed_value is not None:
            attrs.update(relaxed_value=float(self.relaxed_value[j]), choice=self.choices[j])
        if j == self.best and self.test_value is not None:
            attrs["test_value"] = self.test_value
        seeds = self.per_seed.shape[1]
        steps = int(self.ran[j]) + (self.relaxed_value is not None)
        return Outcome(float(self.value[j]), tuple(self.curves[j]), steps * seeds, attrs)

    def failure(self) -> str | None:
        """Why the round must raise with `throw=True`: its inner solves that did not
        converge; None when all did."""
        return inner_failure_message(status_counts(self.inner_status), "tune")


def _py(x):
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else a.tolist()


def _take(tree, index):
    if np.array_equal(index, np.arange(len(jax.tree.leaves(tree)[0]))):
        return tree  # everyone (an eager gather would compile a program per leaf)
    return jax.tree.map(lambda x: x[index], tree)


def rungs(population, steps, halving):
    """`[(members kept, cumulative steps), ...]` of successive halving."""
    if halving is None or population == 1:
        return [(population, steps)]
    sizes = [population]
    while sizes[-1] > 1:
        sizes.append(math.ceil(sizes[-1] / halving))
    ends = [max(1, round(steps / halving ** (len(sizes) - 1 - i))) for i in range(len(sizes))]
    out = []
    for size, end in zip(sizes, ends, strict=True):
        if out and end <= out[-1][1]:
            out[-1] = (size, out[-1][1])  # too few steps to separate rungs: merge
        else:
            out.append((size, end))
    out[-1] = (out[-1][0], steps)
    return out


def _static(plan: Plan, settings: TuneSettings, method, key, one) -> _Static:
    to_u, from_u = coordinates(plan.space, plan.names)
    return _Static(
        optimizer=settings.optimizer_transformation(),
        method=method,
        # Every round is a population (even of one member: a replayed trial runs the
        # same solver as its round), so it runs the population solver.
        solver=population_solver(one.solver, one.init_params),
        to_unconstrained=to_u,
        from_unconstrained=from_u,
        batch_problem=True,
        batch_hparams=True,
        pool_seeds=True,
        stochastic=key is not None,
        max_steps=settings.steps,
    )


def _descend(pbs, plan: Plan, settings: TuneSettings, steps: int, progress):
    """The population's descents with successive halving: per member its best
    hyperparameters, value, per-seed values, curve, steps, inner statuses, and the
    solver the population ran."""
    population = len(jax.tree.leaves(plan.h0)[0])
    key = noise_key(plan.space, plan.relaxed, settings.seed, plan.number)
    static = _static(plan, settings, problem_method(first(pbs), settings.method), key, first(pbs))
    schedule = settings.schedule()
    options = dict(
        tol=settings.tol,
        min_improvement=settings.min_improvement,
        patience=PATIENCE,
        learning_rate=settings.descent_learning_rate(),
    )
    num_seeds = int(jax.tree.leaves(pbs.val)[0].shape[0])
    hparams = {n: np.array(plan.h0[n]) for n in plan.names}
    value, per_seed = np.full(population, np.inf), np.full((population, num_seeds), np.inf)
    curves, ran = [[] for _ in range(population)], np.zeros(population, int)
    status = 0
    alive, state, done = np.arange(population), None, 0
    for size, end in rungs(population, steps, settings.halving):
        if size < len(alive):
            order = np.argsort(value[alive], kind="stable")[:size]
            state, alive = _take(state, order), alive[order]
        inner_tol = None if schedule is None else (lambda t, d=done: schedule(d + t))
        callback = None
        if progress is not None:
            callback = lambda t, stats, d=done: progress(  # noqa: E731
                d + t + 1, float(np.nanmin(np.mean(stats["value"], -1)))
            )
        h0, planned = _take(plan.h0, alive), end - done
        res = run_descent(static, pbs, h0, state, key, planned, inner_tol, options, callback)
        state, done = res.state, done + res.num_steps
        mean_curve = np.mean(res.history["value"], axis=-1)  # (steps, members)
        took = np.asarray(res.state.k)  # each member's steps: it stops on its own
        for j, m in enumerate(alive):
            curves[m].extend(mean_curve[: took[j], j].tolist())
        found = jax.device_get(res.hparams)
        for n in plan.names:
            hparams[n][alive] = found[n]
        value[alive], per_seed[alive] = np.asarray(res.value), np.asarray(res.per_seed)
        ran[alive] += took
        counts = np.zeros((population, res.history["inner_status"].shape[-1]), np.int64)
        counts[alive] = res.history["inner_status"].sum(axis=0)
        status = status + counts
        if res.num_steps < planned:  # stopped early (tol, min_improvement): no more rungs
            break
    return hparams, value, per_seed, curves, ran, status, static.solver


# One program per problem structure, reused across rounds: (members, seeds) values.
_member_values = jax.jit(jax.vmap(jax.vmap(outer_loss, in_axes=(0, None)), in_axes=(None, 0)))


def _exact(problems: Problems, plan: Plan, choices, hparams):
    """Each member's validation value per seed at its discretized configuration,
    `(members, seeds)`: the exact problem of each distinct choice, evaluated at the
    members' continuous hyperparameters."""
    out = np.empty((len(choices), len(problems.seeds)))
    groups: dict[tuple, list[int]] = {}
    for j, choice in enumerate(choices):
        groups.setdefault(tuple(choice.items()), []).append(j)
    for items, members in groups.items():
        config = {**plan.discrete, **dict(items)}
        pbs = problems.get(config)
        one = first(pbs)
        check_hparams(one, plan.space, config, f"problem({config})")
        h = {
            n: jnp.asarray(np.stack([hparams[n][j] for j in members]), one.hparams[n].dtype)
            for n in plan.continuous
        }
        out[members] = np.asarray(_member_values(pbs, h))
    return out


@jax.jit
@functools.partial(jax.vmap, in_axes=(0, None))
def _test_outer(pb, h):
    """Each seed's outer objective on its test data at `h` (compiled once per shapes)."""
    sol = solve(pb.inner, pb.init_params, h, pb.train, solver=pb.solver)
    return pb.outer(sol.params, h, pb.test)


def _test_value(pbs, hparams, names, j):
    """Member `j`'s seed mean of the outer objective on the test data, or None."""
    if pbs.test is None:
        return None
    h = {n: jnp.asarray(hparams[n][j], jnp.result_type(pbs.hparams[n])) for n in names}
    return float(jnp.mean(_exported.call("tune-test", _test_outer, pbs, h)))


def evaluate(
    problems: Problems,
    plan: Plan,
    settings: TuneSettings,
    *,
    steps: int | None = None,
    progress=None,
    with_test: bool = True,
) -> RoundOutcome:
    """Descend the population `plan.h0` and score it (see the module docstring).

    `steps` runs that many outer steps without halving (a replayed member) instead of
    `settings.steps`; `progress(step, best seed mean)` is called after each step.
    """
    pbs = problems.get({**plan.discrete, **dict.fromkeys(plan.relaxed, RELAXED)})
    run = settings.steps if steps is None else steps
    hparams, value, per_seed, curves, ran, status, solver = _descend(
        pbs, plan, settings, run, progress
    )
    population, num_seeds = per_seed.shape
    solves = int(np.sum(status))
    relaxed_value, choices, test_pbs = None, [None] * population, pbs
    if plan.relaxed:  # discretize, then evaluate each member's choice exactly
        choices = [
            {n: _relaxed.discretize(plan.space.dims[n], hparams[n][j]) for n in plan.relaxed}
            for j in range(population)
        ]
        relaxed_value = value
        per_seed = _exact(problems, plan, choices, hparams)
        value = per_seed.mean(axis=1)
        solves += population * num_seeds
    best = int(np.argmin(value))
    test = None
    if with_test:
        if plan.relaxed:
            test_pbs = problems.get({**plan.discrete, **choices[best]})
        test = _test_value(test_pbs, hparams, plan.continuous, best)
    return RoundOutcome(
        hparams,
        value,
        per_seed,
        curves,
        ran,
        relaxed_value,
        choices,
        status,
        solves,
        best,
        test,
        repr(solver),
    )


def replay(config, *, seed, budget):
    """Re-run one recorded tuner trial alone (the objective `hypergrad reproduce` calls).

    `budget` holds what the trial ran with: the problem factory, the bounds of its
    continuous dimensions, the tuner's settings (`TuneSettings.to_json`), the steps it
    ran and, with relaxed dimensions, their values and starting weights.
    """
    if "settings" not in budget:
        raise ValueError(
            "this trial was recorded by an earlier hypergrad, which wrote its method as "
            "text; it cannot be rebuilt"
        )
    settings = TuneSettings.from_json(budget["settings"])
    # Alone, a member runs the steps it ran in its population (which stopped together).
    settings = dataclasses.replace(settings, population=1, tol=0.0, min_improvement=0.0)
    dims = {n: Real(lo, hi, log=log) for n, (lo, hi, log) in budget["continuous"].items()}
    continuous = sorted(dims)
    discrete = {k: v for k, v in config.items() if k not in dims}
    relaxed_spec = budget.get("relaxed") or {"dims": {}}
    relaxed = sorted(relaxed_spec["dims"])
    dims.update({n: _relaxed.rebuild(d) for n, d in relaxed_spec["dims"].items()})
    problems = Problems(resolve(budget["problem"]), seeds_of(seed, settings.seeds))
    pbs = problems.get({**discrete, **dict.fromkeys(relaxed, RELAXED)})
    h0 = initial_hparams(first(pbs), continuous, [config])
    for n in relaxed:
        start = relaxed_spec["dims"][n]["start"]
        h0[n] = jnp.asarray([start], jnp.result_type(first(pbs).hparams[n]))
    plan = Plan(relaxed_spec.get("round"), discrete, Space(dims), sorted(dims), relaxed, h0)
    out = evaluate(problems, plan, settings, steps=budget["steps"], with_test=False)
    return out.outcome(0)
