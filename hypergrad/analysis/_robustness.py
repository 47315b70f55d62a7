"""How robust a choice of configuration is to the seed.

Interface:

- `seed_robustness(values, *, top_k=3, direction="minimize", confidence=0.95)` takes a
  matrix of objective values, configurations x seeds, and returns a `SeedRobustness`:
  each configuration's mean over seeds with its spread (standard deviation, Student-t
  interval of the mean); the rank stability of the top configurations (for each, the
  fraction of seeds on which it is among the `top_k` of that seed alone, with a
  Clopper-Pearson interval: how often a re-seeded run would still rank it so); and the
  probability that each competitor beats the chosen configuration (the best mean) on a
  fresh seed, with a bootstrap interval.
- `probability_better(chosen, competitor, ...)` is that last number for two samples:
  `P(Y < X) + P(Y = X) / 2` for a minimized objective, `X` the chosen configuration's
  value on a random seed and `Y` the competitor's, estimated by the Mann-Whitney
  statistic `U / (n m)` with a percentile-bootstrap interval (scipy).

Invariant: the chosen configuration is the one with the best mean, never the best single
seed; with one seed there is no spread (NaN) and intervals are the whole range.

References:
  Agarwal, Schwarzer, Castro, Courville, Bellemare, "Deep reinforcement learning at the
  edge of the statistical precipice", NeurIPS 2021, https://arxiv.org/abs/2108.13264
  (probability of improvement). Bouthillier et al., "Accounting for variance in machine
  learning benchmarks", MLSys 2021, https://arxiv.org/abs/2103.03098.
"""

import warnings
from typing import NamedTuple

import numpy as np
import scipy.stats

from ._checks import check_int, direction_sign


def _check_confidence(confidence) -> None:
    if not (isinstance(confidence, float) and 0 < confidence < 1):
        raise ValueError(f"confidence must be a float in (0, 1), got confidence={confidence!r}")


class ProbabilityBetter(NamedTuple):
    """`P(competitor better than chosen on one fresh seed)` and its interval."""

    estimate: float
    low: float
    high: float


def _p_lower(y, x, axis=-1):
    # U of x against y counts the pairs with x > y (ties count a half): P(Y < X).
    return scipy.stats.mannwhitneyu(x, y, axis=axis).statistic / (x.shape[axis] * y.shape[axis])


def probability_better(
    chosen,
    competitor,
    *,
    direction: str = "minimize",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> ProbabilityBetter:
    """The probability that `competitor` beats `chosen` on an independent seed.

    Args:
      chosen, competitor: each configuration's values over seeds (1-d).
      direction: `"minimize"` (lower is better) or `"maximize"`.
      confidence: of the percentile-bootstrap interval (seeds resampled within each).
      n_resamples, seed: the bootstrap's resamples and random seed.

    Returns:
      `ProbabilityBetter(estimate, low, high)`; `(0, 1)` as interval with a single seed
      on either side.

    Example:
      >>> round(probability_better([1.0, 1.1, 1.2], [0.5, 0.6, 0.7]).estimate, 3)
      1.0
      >>> round(probability_better([1.0, 2.0], [1.5, 1.5]).estimate, 3)
      0.5
    """
    sign = direction_sign(direction)
    _check_confidence(confidence)
    x = sign * np.asarray(chosen, np.float64).reshape(-1)
    y = sign * np.asarray(competitor, np.float64).reshape(-1)
    if x.size == 0 or y.size == 0 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("chosen and competitor must hold at least one finite value each")
    est = float(_p_lower(y, x))
    if x.size < 2 or y.size < 2:
        return ProbabilityBetter(est, 0.0, 1.0)
    with warnings.catch_warnings():
        # Identical resamples make a degenerate distribution; its interval is a point.
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        res = scipy.stats.bootstrap(
            (y, x),
            _p_lower,
            paired=False,
            vectorized=True,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    lo, hi = res.confidence_interval
    return ProbabilityBetter(est, float(min(lo, est)), float(max(hi, est)))


class SeedRobustness(NamedTuple):
    """What `seed_robustness` found; arrays have one entry per configuration.

    Attributes:
      mean, std, ci_low, ci_high: the seed mean, standard deviation (ddof 1) and
        Student-t interval of the mean (`hypergrad.tune.aggregate_seeds`).
      num_seeds: seeds per configuration.
      order: configuration indices by mean, best first.
      chosen: the best mean's index (`order[0]`).
      top_k: the `k` of the rank-stability columns.
      in_top_k, in_top_k_low, in_top_k_high: the fraction of seeds on which the
        configuration ranks among the `top_k` of that seed's values, and its
        Clopper-Pearson interval.
      p_better, p_better_low, p_better_high: `probability_better(chosen, config)`
        (0.5 for the chosen configuration against itself).
      confidence: the level of every interval.
      direction: `"minimize"` or `"maximize"`.
    """

    mean: np.ndarray
    std: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    num_seeds: int
    order: np.ndarray
    chosen: int
    top_k: int
    in_top_k: np.ndarray
    in_top_k_low: np.ndarray
    in_top_k_high: np.ndarray
    p_better: np.ndarray
    p_better_low: np.ndarray
    p_better_high: np.ndarray
    confidence: float
    direction: str

    def as_dict(self, labels=None) -> dict:
        """Plain Python (for JSON), configurations best first, named by `labels`."""
        rows = []
        for i in self.order:
            rows.append(
                {
                    "config": int(i) if labels is None else labels[i],
                    "mean": float(self.mean[i]),
                    "std": float(self.std[i]),
                    "ci": [float(self.ci_low[i]), float(self.ci_high[i])],
                    "in_top_k": float(self.in_top_k[i]),
                    "in_top_k_ci": [float(self.in_top_k_low[i]), float(self.in_top_k_high[i])],
                    "p_better": float(self.p_better[i]),
                    "p_better_ci": [float(self.p_better_low[i]), float(self.p_better_high[i])],
                }
            )
        return {
            "num_seeds": self.num_seeds,
            "top_k": self.top_k,
            "confidence": self.confidence,
            "direction": self.direction,
            "chosen": int(self.chosen) if labels is None else labels[self.chosen],
            "configs": rows,
        }


def seed_robustness(
    values,
    *,
    top_k: int = 3,
    direction: str = "minimize",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> SeedRobustness:
    """Spread over seeds, rank stability and probability of being beaten; see the module.

    Args:
      values: configurations x seeds; column `s` holds every configuration's value on
        seed `s` (the same seed for all, so that a column ranks them as one re-seeded
        run would).
      top_k: the rank-stability cut (clipped to the number of configurations).
      direction: `"minimize"` or `"maximize"`.
      confidence: the level of every interval.
      n_resamples, seed: the bootstrap of `probability_better`.

    Example:
      >>> import numpy as np
      >>> v = np.array([[1.0, 1.1, 0.9], [2.0, 2.1, 1.9], [1.05, 0.8, 1.3]])
      >>> r = seed_robustness(v, top_k=1)
      >>> int(r.chosen), r.in_top_k.round(2).tolist()
      (0, [0.67, 0.0, 0.33])
    """
    sign = direction_sign(direction)
    _check_confidence(confidence)
    v = np.asarray(values, np.float64)
    if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 1:
        raise ValueError(
            f"values must be a non-empty matrix (configurations x seeds), got shape {v.shape}"
        )
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite; drop the diverged runs first")
    check_int("top_k", top_k)
    n, s = v.shape
    k = min(top_k, n)
    # Imported here: hypergrad.tune reports validation gaps through this package, so
    # a module-level import would make the two import each other.
    from ..tune import aggregate_seeds

    summary = aggregate_seeds(sign * v, confidence=confidence)
    mean = sign * summary.mean
    lo, hi = sign * summary.ci_low, sign * summary.ci_high
    ci_low, ci_high = np.minimum(lo, hi), np.maximum(lo, hi)
    order = np.argsort(sign * mean, kind="stable")
    chosen = int(order[0])
    # Per seed, rank the configurations on that seed alone (ties by index: stable).
    per_seed_rank = np.argsort(np.argsort(sign * v, axis=0, kind="stable"), axis=0)
    hits = (per_seed_rank < k).sum(axis=1)
    cis = [scipy.stats.binomtest(int(h), s).proportion_ci(confidence, "exact") for h in hits]
    p = [
        probability_better(
            v[chosen],
            v[i],
            direction=direction,
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
        )
        for i in range(n)
    ]
    return SeedRobustness(
        mean=mean,
        std=summary.std,
        ci_low=ci_low,
        ci_high=ci_high,
        num_seeds=s,
        order=order,
        chosen=chosen,
        top_k=k,
        in_top_k=hits / s,
        in_top_k_low=np.array([c.low for c in cis]),
        in_top_k_high=np.array([c.high for c in cis]),
        p_better=np.array([q.estimate for q in p]),
        p_better_low=np.array([q.low for q in p]),
        p_better_high=np.array([q.high for q in p]),
        confidence=confidence,
        direction=direction,
    )
