"""Global importance of the dimensions of a recorded study, by Optuna's own evaluators.

Interface:

- `param_importances(study, evaluator="ped_anova", *, objective=None, params=None,
  seed=0, normalize=True) -> dict` is `optuna.importance.get_param_importances` with the
  evaluator named (`"fanova"`, `"ped_anova"`) and, for a multi-objective study, the
  objective picked by index. Nothing is added to Optuna's numbers: the call is Optuna's.
- `importances(study, evaluators=("fanova", "ped_anova"), *, seed=0)` runs every
  evaluator on every objective and returns one `Importance` per (evaluator, objective),
  with the dimensions the evaluator could not assess listed (fANOVA assesses only the
  dimensions present in every completed trial, so conditional ones are left out;
  conditional PED-ANOVA assesses them).

Invariant: `param_importances(s, "fanova", seed=k) == get_param_importances(s,
evaluator=FanovaImportanceEvaluator(seed=k))` exactly, and likewise for PED-ANOVA with
its default settings; for objective `i` of several, the target is `t.values[i]`
(negated for a maximized objective under PED-ANOVA, which ranks lower targets better;
fANOVA explains variance and is unchanged by the sign).

References:
  Hutter, Hoos, Leyton-Brown, "An efficient approach for assessing hyperparameter
  importance", ICML 2014 (fANOVA). Watanabe, Bansal, Hutter, "PED-ANOVA: Efficiently
  quantifying hyperparameter importance in arbitrary subspaces", IJCAI 2023,
  https://arxiv.org/abs/2304.10255. Conditional PED-ANOVA: https://arxiv.org/abs/2601.20800.
"""

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import optuna
from optuna.importance import (
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
    get_param_importances,
)
from optuna.study import StudyDirection
from optuna.trial import TrialState

from ._checks import as_study, check_objective

EVALUATORS = ("fanova", "ped_anova")


class Importance(NamedTuple):
    """The importances one evaluator gives for one objective of a study.

    Attributes:
      evaluator: `"fanova"` or `"ped_anova"`.
      objective: the objective's index (0 for a single objective).
      values: dimension -> importance, largest first (Optuna's order); normalized to sum
        to 1 unless asked otherwise.
      not_assessed: the study's dimensions the evaluator left out (for fANOVA, those
        absent from some completed trial: the conditional ones).
      num_trials: the completed trials with a finite value for this objective.
      error: why the evaluator gave nothing (too few trials, scikit-learn missing), or
        `None`.
    """

    evaluator: str
    objective: int
    values: dict[str, float]
    not_assessed: tuple[str, ...]
    num_trials: int
    error: str | None = None


def make_evaluator(name: str, seed: int | None = 0) -> optuna.importance.BaseImportanceEvaluator:
    """Optuna's evaluator by name, with its default settings (fANOVA seeded by `seed`)."""
    if name == "fanova":
        return FanovaImportanceEvaluator(seed=seed)
    if name == "ped_anova":
        return PedAnovaImportanceEvaluator()
    raise ValueError(f"evaluator must be one of {EVALUATORS}, got evaluator={name!r}")


def _target(study: optuna.Study, evaluator: str, objective: int | None):
    n = len(study.directions)
    if objective is None:
        if n > 1 and evaluator == "fanova":
            raise ValueError(
                f"the study has {n} objectives: pass objective= (0 to {n - 1}) for fANOVA"
            )
        return None
    check_objective(study, objective)
    if n == 1:
        return None  # the study's own value and direction, as Optuna reads them
    flip = evaluator == "ped_anova" and study.directions[objective] == StudyDirection.MAXIMIZE
    if flip:
        return lambda t, i=objective: -t.values[i]
    return lambda t, i=objective: t.values[i]


def param_importances(
    study,
    evaluator: str = "ped_anova",
    *,
    objective: int | None = None,
    params: Sequence[str] | None = None,
    seed: int | None = 0,
    normalize: bool = True,
) -> dict[str, float]:
    """Optuna's importance of each dimension of `study` by `evaluator`.

    Args:
      study: an `optuna.Study` or a hypergrad `Records`.
      evaluator: `"fanova"` (variance explained by each dimension's main effect in a
        random forest fit to the trials) or `"ped_anova"` (how differently each
        dimension is distributed among the best `10%` of trials than among all).
      objective: for a multi-objective study, which objective (`None` asks PED-ANOVA for
        the importance of reaching the Pareto front, Optuna's default).
      params: the dimensions to assess (default: Optuna's choice, see `Importance`).
      seed: fANOVA's forest seed (its result is random otherwise).
      normalize: importances summing to 1 (Optuna's default); `False` gives fANOVA's
        fraction of the total variance.

    Returns:
      `get_param_importances(study, evaluator=..., params=params, target=...,
      normalize=normalize)`, unchanged.

    Example:
      >>> import optuna
      >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
      >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
      >>> study.optimize(
      ...     lambda t: 10 * t.suggest_float("x", 0, 1) ** 2 + 0.01 * t.suggest_float("y", 0, 1),
      ...     n_trials=60)
      >>> imp = param_importances(study, "ped_anova")
      >>> next(iter(imp)), imp == optuna.importance.get_param_importances(study)
      ('x', True)
    """
    study = as_study(study)
    target = _target(study, evaluator, objective)
    ev = make_evaluator(evaluator, seed)
    with warnings.catch_warnings():
        # PED-ANOVA warns that a target is ranked lower-is-better; `_target` negated the
        # maximized objectives for that. `normalize=False` is marked experimental.
        warnings.filterwarnings("ignore", message=".*computes the importances of params.*")
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return get_param_importances(
            study,
            evaluator=ev,
            params=None if params is None else list(params),
            target=target,
            normalize=normalize,
        )


def _finite_trials(study: optuna.Study, objective: int) -> int:
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None and math.isfinite(t.values[objective])
    )


def importances(
    study,
    evaluators: Sequence[str] = EVALUATORS,
    *,
    seed: int | None = 0,
    normalize: bool = True,
) -> list[Importance]:
    """Every evaluator on every objective of `study`; see `param_importances`.

    An evaluator that cannot run (fewer than two completed trials, fANOVA without
    scikit-learn) gives an `Importance` whose `error` says why, not an exception, so a
    report shows the rest.
    """
    study = as_study(study)
    for name in evaluators:
        if name not in EVALUATORS:
            raise ValueError(f"evaluators must be among {EVALUATORS}, got {name!r}")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    every = sorted({k for t in complete for k in t.distributions})
    out = []
    for i in range(len(study.directions)):
        n = _finite_trials(study, i)
        for name in evaluators:
            if n < 2:
                out.append(
                    Importance(name, i, {}, tuple(every), n, f"{n} completed trial(s); need 2")
                )
                continue
            try:
                values = param_importances(study, name, objective=i, seed=seed, normalize=normalize)
            except ImportError as e:
                out.append(Importance(name, i, {}, tuple(every), n, f"{e}"))
                continue
            missing = tuple(k for k in every if k not in values)
            out.append(Importance(name, i, dict(values), missing, n))
    return out
