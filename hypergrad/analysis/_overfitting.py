"""Validation overfitting: the gap between the validation value that selected a
configuration and its value on data the selection never saw.

Interface:

- `validation_gap(val, test, *, direction="minimize", threshold=GAP_THRESHOLD)` ->
  `ValidationGap`, and a `ValidationOverfitWarning` when the relative gap exceeds the
  threshold (and, given per-example losses, two standard errors of the difference).
- `held_out_recheck(problem, hparams, ...)`: the outer objective of a `BilevelProblem`
  at `hparams` on its validation and its test data, as a `ValidationGap`: the re-check a
  tuning result runs when the problem has test data.
- `nested_cv(select, evaluate, n, folds=5, ...)`: nested cross-validation around any
  tuner. For each outer fold, `select(train_idx) -> (config, val_value)` tunes on the
  outer-training rows only (its own inner split or folds), and `evaluate(config,
  train_idx, test_idx) -> test_value` refits the chosen configuration on them and scores
  it on the held-out fold. The mean gap over folds, with a Student-t interval, is an
  estimate of the selection's optimism that no single split gives.

The gap is `test - val` for a minimized objective and `val - test` for a maximized one:
positive when the validation value flattered the choice. The relative gap divides by
`|val|` (floored at `1e-12`).

`GAP_THRESHOLD = 0.10`: a test loss more than 10% above the validation loss that chose
the configuration. Held-out means of per-example losses over a few hundred rows vary
from split to split by about their coefficient of variation over `sqrt(n)` (about 5-7%
for log-losses with a coefficient of variation near 1 and `n = 200-400`), so a gap above
10% is more than split noise: the search fitted the validation set. With per-example
losses the check is sharper: the warning also requires the gap to exceed two standard
errors of `mean(test) - mean(val)`.

References:
  Cawley, Talbot, "On over-fitting in model selection and subsequent selection bias in
  performance evaluation", JMLR 11, 2010. Varma, Simon, "Bias in error estimation when
  using cross-validation for model selection", BMC Bioinformatics 7, 2006.
"""

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from .._bilevel import BilevelProblem
from ..methods import outer_loss
from ..problems import fold_indices
from ._checks import check_int, direction_sign

GAP_THRESHOLD = 0.10

# Compiled once per problem structure (solvers and methods are equal by configuration).
_outer_loss = jax.jit(outer_loss, static_argnames=("solver", "method", "split"))


class ValidationOverfitWarning(UserWarning):
    """The test value of a chosen configuration is worse than its validation value by
    more than the threshold: the search fitted the validation data."""


class ValidationGap(NamedTuple):
    """Validation against test at one chosen configuration.

    Attributes:
      val, test: the two values.
      gap: `test - val` (minimize) or `val - test` (maximize): positive is optimism.
      relative_gap: `gap / |val|`.
      threshold: the relative gap that warns.
      standard_error: of `mean(test) - mean(val)` from per-example losses, or `None`.
      exceeds: the relative gap is above the threshold (and above two standard errors
        when they are known).
      direction: `"minimize"` or `"maximize"`.
    """

    val: float
    test: float
    gap: float
    relative_gap: float
    threshold: float
    standard_error: float | None
    exceeds: bool
    direction: str

    def describe(self) -> str:
        verdict = (
            f"above the {self.threshold:.0%} threshold: the search fitted the validation data"
            if self.exceeds
            else f"within the {self.threshold:.0%} threshold"
        )
        se = "" if self.standard_error is None else f", standard error {self.standard_error:.3g}"
        return (
            f"validation {self.val:.6g}, test {self.test:.6g}: gap {self.gap:+.4g} "
            f"({self.relative_gap:+.1%}{se}), {verdict}"
        )


def _check_threshold(threshold) -> None:
    if not (isinstance(threshold, int | float) and math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a non-negative number, got threshold={threshold!r}")


def _standard_error(val_losses, test_losses) -> float:
    a = np.asarray(val_losses, np.float64).reshape(-1)
    b = np.asarray(test_losses, np.float64).reshape(-1)
    if a.size < 2 or b.size < 2:
        raise ValueError(
            "val_losses and test_losses need at least two per-example values each, got "
            f"{a.size} and {b.size}"
        )
    return float(math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))


def validation_gap(
    val: float,
    test: float,
    *,
    direction: str = "minimize",
    threshold: float = GAP_THRESHOLD,
    val_losses=None,
    test_losses=None,
    warn: bool = True,
) -> ValidationGap:
    """The validation-to-test gap of a chosen configuration; see the module docstring.

    Args:
      val: the validation value that selected the configuration.
      test: its value on the test data (same metric).
      direction: `"minimize"` (a loss) or `"maximize"` (an accuracy).
      threshold: the relative gap that warns (`GAP_THRESHOLD` by default).
      val_losses, test_losses: per-example values whose means are `val` and `test`
        (optional): the warning then also needs the gap to exceed two standard errors.
      warn: issue a `ValidationOverfitWarning` when the gap exceeds the threshold.

    Example:
      >>> g = validation_gap(0.20, 0.25, warn=False)
      >>> round(g.gap, 3), round(g.relative_gap, 3), g.exceeds
      (0.05, 0.25, True)
    """
    sign = direction_sign(direction)
    _check_threshold(threshold)
    for name, v in (("val", val), ("test", test)):
        if not (isinstance(v, int | float | np.floating) and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number, got {name}={v!r}")
    gap = sign * (float(test) - float(val))
    rel = gap / max(abs(float(val)), 1e-12)
    se = None
    if (val_losses is None) != (test_losses is None):
        raise ValueError("pass both val_losses and test_losses, or neither")
    if val_losses is not None:
        se = _standard_error(val_losses, test_losses)
    exceeds = rel > threshold and (se is None or gap > 2 * se)
    out = ValidationGap(float(val), float(test), gap, rel, float(threshold), se, exceeds, direction)
    if exceeds and warn:
        warnings.warn(out.describe(), ValidationOverfitWarning, stacklevel=2)
    return out


def held_out_recheck(
    problem: BilevelProblem,
    hparams,
    *,
    solver=None,
    method=None,
    threshold: float = GAP_THRESHOLD,
    warn: bool = True,
) -> ValidationGap:
    """Re-check `hparams` on `problem`'s test data: its validation and test values.

    Both are `hypergrad.outer_loss(problem, hparams, split=...)`, the same inner solve
    (the outer objective is minimized). A tuner calls this at its chosen configuration.

    Raises:
      ValueError: the problem has no test data.
    """
    if not isinstance(problem, BilevelProblem):
        raise TypeError(f"problem must be a BilevelProblem, got problem={problem!r}")
    if problem.test is None:
        raise ValueError(
            f"problem {problem.name!r} has no test data: build it with X_test, y_test to "
            "re-check the chosen configuration on held-out rows"
        )
    val = float(_outer_loss(problem, hparams, solver=solver, method=method, split="val"))
    test = float(_outer_loss(problem, hparams, solver=solver, method=method, split="test"))
    return validation_gap(val, test, threshold=threshold, warn=warn)


class NestedCV(NamedTuple):
    """Nested cross-validation of a tuner.

    Attributes:
      configs: the configuration chosen on each outer fold.
      val: the inner (selection) value on each fold.
      test: the chosen configuration's value on each held-out outer fold.
      gap: per fold, `test - val` (minimize) or `val - test` (maximize).
      mean_gap, gap_ci_low, gap_ci_high: the mean gap and its Student-t interval.
      test_mean, test_ci_low, test_ci_high: the nested-CV estimate of the tuned model's
        value and its interval (the number to report instead of the validation value).
      overall: `validation_gap` of the fold means.
    """

    configs: list[Any]
    val: np.ndarray
    test: np.ndarray
    gap: np.ndarray
    mean_gap: float
    gap_ci_low: float
    gap_ci_high: float
    test_mean: float
    test_ci_low: float
    test_ci_high: float
    overall: ValidationGap


def nested_cv(
    select: Callable[[np.ndarray], tuple[Any, float]],
    evaluate: Callable[[Any, np.ndarray, np.ndarray], float],
    n: int,
    *,
    folds: int = 5,
    seed: int | None = 0,
    direction: str = "minimize",
    confidence: float = 0.95,
    threshold: float = GAP_THRESHOLD,
    warn: bool = True,
) -> NestedCV:
    """Nested cross-validation: tune inside each outer fold, score on its held-out rows.

    Args:
      select: `select(train_idx) -> (config, val_value)`: tune on those rows only.
      evaluate: `evaluate(config, train_idx, test_idx) -> value`: refit on `train_idx`,
        score on `test_idx`.
      n: the number of rows.
      folds: outer folds (`hypergrad.problems.fold_indices`, shuffled with `seed`).
      direction, confidence, threshold, warn: as in `validation_gap`.

    Example:
      >>> import numpy as np
      >>> y = np.random.default_rng(0).normal(size=50)
      >>> def select(tr):  # "tune" a constant prediction: the training mean
      ...     c = y[tr].mean(); return c, float(np.mean((y[tr] - c) ** 2))
      >>> def evaluate(c, tr, te):
      ...     return float(np.mean((y[te] - c) ** 2))
      >>> r = nested_cv(select, evaluate, 50, folds=5, warn=False)
      >>> len(r.configs), bool(r.mean_gap > 0)
      (5, True)
    """
    sign = direction_sign(direction)
    check_int("n", n, 2)
    configs, vals, tests = [], [], []
    for train_idx, test_idx in fold_indices(n, folds, seed):
        config, val = select(train_idx)
        test = evaluate(config, train_idx, test_idx)
        configs.append(config)
        vals.append(float(val))
        tests.append(float(test))
    vals, tests = np.asarray(vals), np.asarray(tests)
    gap = sign * (tests - vals)
    # Imported here: hypergrad.tune reports validation gaps through this package, so
    # a module-level import would make the two import each other.
    from ..tune import aggregate_seeds

    g = aggregate_seeds(gap[None, :], confidence=confidence)
    t = aggregate_seeds(tests[None, :], confidence=confidence)
    overall = validation_gap(
        float(vals.mean()), float(tests.mean()), direction=direction, threshold=threshold, warn=warn
    )
    return NestedCV(
        configs,
        vals,
        tests,
        gap,
        float(g.mean[0]),
        float(g.ci_low[0]),
        float(g.ci_high[0]),
        float(t.mean[0]),
        float(t.ci_low[0]),
        float(t.ci_high[0]),
        overall,
    )
