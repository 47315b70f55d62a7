"""Successive halving, synchronous and asynchronous (ASHA), over a budget the objective reads.

Interface: `SuccessiveHalving(space, n_configs, min_budget, max_budget, eta)` and
`ASHA(space, min_budget, max_budget, eta)`. Each `Proposal.budget` is the budget of its
rung: an int (inner steps, epochs) when both bounds are ints, else a float (a data
fraction in `(0, 1]`, say). The objective must honor it; the proposer only ranks.

Rungs: `budget_k = max_budget * eta ** (k - K)`, `k = 0..K`, `K = floor(log_eta(max /
min))`, so the top rung runs at `max_budget` and the bottom at `min_budget` or just above.

- `SuccessiveHalving`: `n_configs` new configurations at rung 0; when a rung has all its
  results, the best `1/eta` of them go up one rung; `ask` returns nothing while a rung
  waits, and nothing once the top rung (or a rung of one) is done (`finished`).
- `ASHA`: a configuration goes up as soon as it is in the best `1/eta` of the results
  its rung has so far; otherwise `ask` starts a new configuration. It never waits.

Invariant: a configuration is evaluated at most once per rung; a promoted configuration
is unchanged; `info` records `rung` and `config_id`, which `observe` restores.

Reference: L. Li, K. Jamieson, A. Rostamizadeh, E. Gonina, M. Hardt, B. Recht,
A. Talwalkar, "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020,
https://arxiv.org/abs/1810.05934; K. Jamieson, A. Talwalkar, "Non-stochastic Best Arm
Identification and Hyperparameter Optimization", AISTATS 2016.
"""

import math
import numbers

from ..space import Space
from ._base import AbstractProposer, Proposal, check_count
from ._random import RandomSearch


def rung_budgets(min_budget, max_budget, eta) -> list:
    """The budget of each rung, bottom to top (ints when both bounds are ints)."""
    for arg, v in (("min_budget", min_budget), ("max_budget", max_budget), ("eta", eta)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"{arg} must be a finite number, got {v!r}")
    if not min_budget > 0:
        raise ValueError(f"min_budget must be positive, got {min_budget!r}")
    if not max_budget >= min_budget:
        raise ValueError(
            f"max_budget must be at least min_budget, got max_budget={max_budget!r}, "
            f"min_budget={min_budget!r}"
        )
    if not eta > 1:
        raise ValueError(f"eta must be above 1, got {eta!r}")
    top = math.floor(math.log(max_budget / min_budget) / math.log(eta) + 1e-9)
    budgets = [max_budget * eta ** (k - top) for k in range(top + 1)]
    if isinstance(min_budget, numbers.Integral) and isinstance(max_budget, numbers.Integral):
        budgets = sorted({max(int(min_budget), round(b)) for b in budgets})
    return budgets


class _Halving(AbstractProposer):
    """Rung bookkeeping shared by the synchronous and the asynchronous rule."""

    def __init__(self, space, min_budget, max_budget, eta, seed, direction, sampler):
        if not isinstance(space, Space):
            raise TypeError(f"space must be a hypergrad.space.Space, got {space!r}")
        if direction not in ("minimize", "maximize"):
            raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
        self.space = space
        self.budgets = rung_budgets(min_budget, max_budget, eta)
        self.eta = eta
        self.direction = direction
        self.sampler = RandomSearch(space, seed) if sampler is None else sampler
        if self.sampler.space != space:
            raise ValueError("sampler must propose from the same space")
        self._configs: dict[int, dict] = {}
        self._results: list[dict[int, float | None]] = [{} for _ in self.budgets]
        self._promoted: list[set[int]] = [set() for _ in self.budgets]
        self._next_id = 0

    # -- the rule --------------------------------------------------------------------

    def _quota(self, k: int) -> int | None:
        """How many of rung k's best may go up now (None: none, rung not ready)."""
        raise NotImplementedError

    def _may_start(self) -> bool:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------

    def _ranked(self, k: int) -> list[int]:
        sign = 1.0 if self.direction == "minimize" else -1.0
        done = [(sign * v, i) for i, v in self._results[k].items() if v is not None]
        return [i for _, i in sorted(done)]

    def _promotion(self) -> Proposal | None:
        for k in reversed(range(len(self.budgets) - 1)):
            quota = self._quota(k)
            if not quota:
                continue
            for i in self._ranked(k)[:quota]:
                if i not in self._promoted[k]:
                    self._promoted[k].add(i)
                    return self._proposal(i, k + 1)
        return None

    def _proposal(self, config_id: int, rung: int, sampler_info=None) -> Proposal:
        info = {"rung": rung, "config_id": config_id}
        if sampler_info:
            info["sampler"] = sampler_info
        return Proposal(dict(self._configs[config_id]), budget=self.budgets[rung], info=info)

    def ask(self, n: int) -> list[Proposal]:
        out = []
        while len(out) < check_count(n):
            p = self._promotion()
            if p is None:
                break
            out.append(p)
        while len(out) < n and self._may_start():
            (new,) = self.sampler.ask(1)
            i, self._next_id = self._next_id, self._next_id + 1
            self._configs[i] = new.config
            out.append(self._proposal(i, 0, new.info))
        return out

    def _tell_one(self, proposal, value) -> None:
        if isinstance(value, tuple):
            raise ValueError(f"{self.name} ranks one objective; got the values {value!r}")
        self._results[int(proposal.info["rung"])][int(proposal.info["config_id"])] = value

    def observe(self, proposal, value) -> None:
        # A trial cut off (value None) is forgotten, so the restarted run evaluates it again.
        if value is None or "config_id" not in proposal.info:
            return
        i, k = int(proposal.info["config_id"]), int(proposal.info["rung"])
        self._configs[i] = dict(proposal.config)
        self._next_id = max(self._next_id, i + 1)
        if k > 0:
            self._promoted[k - 1].add(i)
        else:
            self.sampler.observe(
                Proposal(proposal.config, info=proposal.info.get("sampler", {})), value
            )
        self._tell_one(proposal, value)

    @property
    def best(self) -> tuple[dict, float, float] | None:
        """`(config, value, budget)` of the best result on the highest rung that has one."""
        for k in reversed(range(len(self.budgets))):
            ranked = self._ranked(k)
            if ranked:
                return dict(self._configs[ranked[0]]), self._results[k][ranked[0]], self.budgets[k]
        return None

    def describe(self):
        return {
            "name": self.name,
            "budgets": list(self.budgets),
            "eta": self.eta,
            "direction": self.direction,
            "sampler": self.sampler.describe(),
        }


class ASHA(_Halving):
    """Asynchronous successive halving: promote as soon as a result is in the top `1/eta`.

    Args:
      space: the search space.
      min_budget, max_budget: the bottom and top rung budgets.
      eta: the reduction factor (3 keeps a third at each rung).
      seed: seed of the default sampler of new configurations (`RandomSearch`).
      direction: `"minimize"` or `"maximize"`.
      sampler: another proposer for new configurations (e.g. `SobolSearch`).

    Example:
      >>> from hypergrad.space import Real, Space
      >>> from hypergrad.search import ASHA
      >>> asha = ASHA(Space({"x": Real(0.0, 1.0)}), min_budget=1, max_budget=9)
      >>> asha.budgets
      [1, 3, 9]
      >>> first = asha.ask(3)
      >>> asha.tell(first, [p.config["x"] for p in first])
      >>> [p.budget for p in asha.ask(2)]  # the best third goes up; the rest are new
      [3, 1]
    """

    def __init__(
        self, space, min_budget, max_budget, eta=3, seed=0, direction="minimize", sampler=None
    ):
        super().__init__(space, min_budget, max_budget, eta, seed, direction, sampler)

    def _quota(self, k):
        return math.floor(len(self._results[k]) / self.eta)

    def _may_start(self):
        return True


class SuccessiveHalving(_Halving):
    """Synchronous successive halving of `n_configs` configurations.

    Rung `k` holds `floor(n_configs / eta**k)` configurations; the bracket ends at the top
    rung or at a rung of one. `ask` returns fewer than asked (or none) while a rung waits
    for its results; `finished` says when the bracket is done.

    Example:
      >>> from hypergrad.space import Real, Space
      >>> from hypergrad.search import SuccessiveHalving
      >>> sh = SuccessiveHalving(Space({"x": Real(0.0, 1.0)}), 9, min_budget=1, max_budget=9)
      >>> rung0 = sh.ask(20)
      >>> len(rung0), sh.ask(1)  # nine at budget 1, then wait for their values
      (9, [])
      >>> sh.tell(rung0, [p.config["x"] for p in rung0])
      >>> [p.budget for p in sh.ask(20)]
      [3, 3, 3]
    """

    def __init__(
        self,
        space,
        n_configs,
        min_budget,
        max_budget,
        eta=3,
        seed=0,
        direction="minimize",
        sampler=None,
    ):
        super().__init__(space, min_budget, max_budget, eta, seed, direction, sampler)
        if isinstance(n_configs, bool) or not isinstance(n_configs, int) or n_configs < 1:
            raise ValueError(f"n_configs must be a positive int, got {n_configs!r}")
        self.n_configs = n_configs
        sizes = [math.floor(n_configs / eta**k + 1e-9) for k in range(len(self.budgets))]
        self.sizes = [s for s in sizes if s >= 1]

    def _quota(self, k):
        if k + 1 >= len(self.sizes) or len(self._results[k]) < self.sizes[k]:
            return None
        return self.sizes[k + 1]

    def _may_start(self):
        return self._next_id < self.n_configs

    @property
    def finished(self) -> bool:
        top = len(self.sizes) - 1
        return len(self._results[top]) >= self.sizes[top]

    def describe(self):
        return {**super().describe(), "n_configs": self.n_configs}
