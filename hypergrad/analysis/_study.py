"""Reading the analyses' inputs out of a recorded study.

Interface:

- `seed_table(study, objective=0)`: each configuration's values over seeds, from what
  the record holds: the tuner's members carry their per-seed values
  (`PER_SEED_ATTR`, the same seeds for every member); otherwise completed trials with
  equal parameters and different seeds are grouped. `None` when no configuration has
  two seeds.
- `reseed(records, top=5, seeds=5, objective=0)`: re-runs the recorded objective of the
  `top` best configurations on `seeds` new seeds (the seeds `trial_seed(RESEED_RUN,
  s)`, the same for every configuration) and returns their `SeedTable`. This runs code:
  the objective named in the record.
- `test_values(study, objective=0)`: `(trial, validation value, test value)` for every
  completed trial that recorded a test value (`TEST_VALUE_ATTR`: an objective returns
  `Outcome(value, attrs={"test_value": ...})`).
- `recorded_problem(trial, factory=None)`: the `BilevelProblem`, the space of its
  continuous dimensions and the configuration of a trial, rebuilt from a tuner record
  (`hypergrad.tune.tune` with a problem factory) or, with `factory`, from any trial
  whose continuous parameters are the problem's hyperparameters.

Invariant: nothing here writes to the study.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from .._bilevel import BilevelProblem
from ..records import Outcome, RecordsError, resolve, trial_seed
from ..space import Real, Space
from ._checks import as_study, check_int, check_objective

# The user attributes an objective's `Outcome.attrs` become (`result.` + key).
TEST_VALUE_ATTR = "result.test_value"
PER_SEED_ATTR = "result.per_seed"
HPARAMS_ATTR = "result.hparams"
# The run seed of re-seeded evaluations: far from the small run seeds people pick.
RESEED_RUN = 2**31 - 1


class SeedTable(NamedTuple):
    """Configurations x seeds.

    Attributes:
      labels: a short name per configuration ("trial 12", "trials 3, 7").
      configs: the configurations.
      values: the matrix of values (configurations x seeds).
      seeds: the seed of each column when every configuration ran on the same seeds,
        else `None` (columns are then each configuration's first seeds, unpaired).
      source: `"per_seed"` (the tuner's members), `"grouped"` (equal configurations
        recorded with several seeds) or `"reseeded"` (`reseed`).
    """

    labels: list[str]
    configs: list[dict]
    values: np.ndarray
    seeds: list[int] | None
    source: str


def _complete(study: optuna.Study, objective: int):
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None and math.isfinite(t.values[objective])
    ]


def _pick(value, objective: int):
    if isinstance(value, list | tuple):
        return value[objective] if objective < len(value) else None
    return value if objective == 0 else None


def seed_table(study, objective: int = 0) -> SeedTable | None:
    """The configurations of `study` that ran on several seeds; see the module."""
    study = as_study(study)
    objective = check_objective(study, objective)
    trials = _complete(study, objective)
    members = [t for t in trials if isinstance(t.user_attrs.get(PER_SEED_ATTR), list)]
    if members and len(study.directions) == 1:
        width = max(len(t.user_attrs[PER_SEED_ATTR]) for t in members)
        rows = [t for t in members if len(t.user_attrs[PER_SEED_ATTR]) == width]
        values = np.array([t.user_attrs[PER_SEED_ATTR] for t in rows], np.float64)
        keep = np.all(np.isfinite(values), axis=1)
        rows = [t for t, k in zip(rows, keep, strict=True) if k]
        if rows and width >= 2:
            configs = [{**t.params, **(t.user_attrs.get(HPARAMS_ATTR) or {})} for t in rows]
            return SeedTable(
                [f"trial {t.number}" for t in rows],
                configs,
                values[keep],
                None,
                "per_seed",
            )
    groups: dict[str, list] = {}
    for t in trials:
        groups.setdefault(repr(sorted(t.params.items())), []).append(t)
    groups = {k: g for k, g in groups.items() if len({t.user_attrs.get("seed") for t in g}) >= 2}
    if not groups:
        return None
    width = min(len(g) for g in groups.values())
    rows, seed_sets = [], []
    for g in groups.values():
        g = sorted(g, key=lambda t: (t.user_attrs.get("seed") is None, t.user_attrs.get("seed")))
        rows.append(g[:width])
        seed_sets.append([t.user_attrs.get("seed") for t in g[:width]])
    paired = all(s == seed_sets[0] for s in seed_sets)
    return SeedTable(
        [f"trials {', '.join(str(t.number) for t in g)}" for g in rows],
        [dict(g[0].params) for g in rows],
        np.array([[t.values[objective] for t in g] for g in rows], np.float64),
        seed_sets[0] if paired else None,
        "grouped",
    )


def _value(result, objective: int) -> float:
    if isinstance(result, Outcome):
        result = result.value
    v = np.asarray(result, np.float64).reshape(-1)
    return float(v[objective]) if v.size > objective else float("nan")


def reseed(records, *, top: int = 5, seeds: int = 5, objective: int = 0) -> SeedTable:
    """Re-run the `top` best configurations on `seeds` fresh seeds; see the module.

    Raises:
      RecordsError: the best trials record no importable objective.
    """
    study = as_study(records)
    objective = check_objective(study, objective)
    check_int("top", top)
    check_int("seeds", seeds)
    sign = 1.0 if study.directions[objective] == optuna.study.StudyDirection.MINIMIZE else -1.0
    best = sorted(_complete(study, objective), key=lambda t: sign * t.values[objective])
    chosen, seen = [], set()
    for t in best:
        key = repr(sorted(t.params.items()))
        if key not in seen:
            seen.add(key)
            chosen.append(t)
        if len(chosen) == top:
            break
    if not chosen:
        raise RecordsError("no completed trial to re-seed")
    new_seeds = [trial_seed(RESEED_RUN, s) for s in range(seeds)]
    values = np.full((len(chosen), seeds), np.nan)
    for i, t in enumerate(chosen):
        ref = t.user_attrs.get("objective")
        if not ref:
            raise RecordsError(
                f"trial {t.number} records no importable objective: it cannot be re-seeded"
            )
        fn: Callable = resolve(ref)
        budget = t.user_attrs.get("budget")
        for j, s in enumerate(new_seeds):
            kwargs = {"seed": s} if budget is None else {"seed": s, "budget": budget}
            values[i, j] = _value(fn(dict(t.params), **kwargs), objective)
    return SeedTable(
        [f"trial {t.number}" for t in chosen],
        [dict(t.params) for t in chosen],
        values,
        new_seeds,
        "reseeded",
    )


def test_values(study, objective: int = 0) -> list[tuple[int, float, float]]:
    """`(trial number, validation value, test value)` of the trials that recorded one."""
    study = as_study(study)
    objective = check_objective(study, objective)
    out = []
    for t in _complete(study, objective):
        test = _pick(t.user_attrs.get(TEST_VALUE_ATTR), objective)
        if isinstance(test, int | float) and math.isfinite(test):
            out.append((t.number, float(t.values[objective]), float(test)))
    return out


def recorded_problem(
    trial: optuna.trial.FrozenTrial, factory: Callable | str | None = None
) -> tuple[BilevelProblem, Space, dict]:
    """`(problem, space, config)` of `trial` for `sensitivity` and `held_out_recheck`.

    A tuner trial names its problem factory and continuous bounds in its budget, and its
    best continuous hyperparameters in `HPARAMS_ATTR`; the problem is built for its
    discrete choices and its first seed. Any other trial needs `factory`
    (`factory(config, *, seed) -> BilevelProblem`, or its `"module:function"` name): its
    float parameters are the continuous dimensions, at their recorded values.

    Raises:
      RecordsError: the record does not say how to build the problem.
    """
    budget = trial.user_attrs.get("budget")
    budget = budget if isinstance(budget, dict) else {}
    if isinstance(factory, str):
        factory = resolve(factory)
    tuner = factory is None and budget.get("problem") and HPARAMS_ATTR in trial.user_attrs
    if tuner:
        factory = resolve(budget["problem"])
        bounds = budget.get("continuous") or {}
        dims = {n: Real(lo, hi, log=bool(log)) for n, (lo, hi, log) in bounds.items()}
        found = trial.user_attrs[HPARAMS_ATTR]
        config = {n: found[n] for n in dims if n in found}
        discrete = {k: v for k, v in trial.params.items() if k not in dims}
        discrete.update(trial.user_attrs.get("result.choice") or {})
        seed = trial_seed(int(trial.user_attrs.get("seed", 0)), 0)
    elif factory is not None:
        dims = {
            n: Real(d.low, d.high, log=d.log)
            for n, d in trial.distributions.items()
            if isinstance(d, FloatDistribution) and d.low < d.high
        }
        config = {n: trial.params[n] for n in dims}
        discrete = {k: v for k, v in trial.params.items() if k not in dims}
        seed = int(trial.user_attrs.get("seed", 0))
    else:
        raise RecordsError(
            f"trial {trial.number} was not recorded by the tuner with a problem factory: "
            "give the factory that builds its BilevelProblem (report --problem module:function)"
        )
    if not dims:
        raise RecordsError(f"trial {trial.number} has no continuous dimension to differentiate")
    if not callable(factory):
        raise TypeError(f"factory must be callable or 'module:function', got {factory!r}")
    problem = factory(discrete, seed=seed)
    if not isinstance(problem, BilevelProblem):
        raise TypeError(f"the factory must return a BilevelProblem, got {problem!r}")
    return problem, Space(dims), config
