"""Aggregation of results across seeds: mean, standard deviation, confidence interval.

A configuration is judged by its seed-aggregated value, never by its best seed.
"""

from typing import NamedTuple

import numpy as np
import scipy.stats


class SeedSummary(NamedTuple):
    """Across-seed summary of each configuration's values.

    Attributes:
      mean: the mean over seeds.
      std: the sample standard deviation (ddof=1; NaN with one seed).
      ci_low, ci_high: the two-sided Student-t confidence interval of the mean.
      num_seeds: the number of seeds.
      best: the index of the configuration with the lowest mean.
    """

    mean: np.ndarray
    std: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    num_seeds: int
    best: int


def aggregate_seeds(values, *, axis: int = -1, confidence: float = 0.95) -> SeedSummary:
    """Summarize `values` (configurations x seeds) along the seed `axis`.

    The interval is `mean +- t_{(1+confidence)/2, S-1} * std / sqrt(S)`, the Student-t
    interval for the mean of S independent seeds.
    """
    values = np.asarray(values, dtype=np.float64)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got confidence={confidence!r}")
    if values.ndim == 0 or values.shape[axis] == 0:
        raise ValueError(
            f"values must have at least one seed along axis={axis}, got {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite; a diverged member should be dropped first")
    s = values.shape[axis]
    mean = values.mean(axis=axis)
    if s > 1:
        std = values.std(axis=axis, ddof=1)
        half = scipy.stats.t.ppf(0.5 + confidence / 2, df=s - 1) * std / np.sqrt(s)
    else:
        std = np.full_like(mean, np.nan)
        half = np.full_like(mean, np.inf)
    best = int(np.argmin(mean)) if mean.ndim else 0
    return SeedSummary(mean, std, mean - half, mean + half, s, best)
