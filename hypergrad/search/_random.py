"""Random and quasi-random (Sobol) search.

Interface: `RandomSearch(space, seed)` and `SobolSearch(space, seed)`; `ask(n)` gives `n`
valid configurations, `tell` is accepted and ignored (neither adapts).

Invariant: the configurations are a function of the seed and of the position in the
sequence, which each proposal records in `info` (`round` for random, `index` for Sobol);
`observe`-ing earlier proposals moves past them, so a restarted run draws new points.
"""

import warnings

import jax
import numpy as np
import scipy.stats

from ..space import Space
from ._base import AbstractProposer, Proposal, check_count


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    return seed


class RandomSearch(AbstractProposer):
    """Independent uniform (log-uniform where `log=True`) configurations.

    Batch `r` of a run is `space.sample_configs(jax.random.fold_in(jax.random.key(seed), r),
    n)`.
    Workers that share a study should be given different seeds.

    Example:
      >>> from hypergrad.space import Int, Real, Space
      >>> from hypergrad.search import RandomSearch
      >>> proposer = RandomSearch(Space({"k": Int(1, 3), "lr": Real(0.1, 1.0)}), seed=0)
      >>> [sorted(p.config) for p in proposer.ask(2)]
      [['k', 'lr'], ['k', 'lr']]
    """

    def __init__(self, space: Space, seed: int = 0):
        if not isinstance(space, Space):
            raise TypeError(f"space must be a hypergrad.space.Space, got {space!r}")
        self.space = space
        self.seed = _check_seed(seed)
        self._round = 0

    def ask(self, n: int) -> list[Proposal]:
        if check_count(n) == 0:
            return []
        key = jax.random.fold_in(jax.random.key(self.seed), self._round)
        configs = self.space.sample_configs(key, n)
        r, self._round = self._round, self._round + 1
        return [Proposal(c, info={"round": r, "row": i}) for i, c in enumerate(configs)]

    def observe(self, proposal, value) -> None:
        self._round = max(self._round, int(proposal.info.get("round", -1)) + 1)

    def describe(self):
        return {"name": self.name, "seed": self.seed}


class SobolSearch(AbstractProposer):
    """Points of a scrambled Sobol sequence, one coordinate per dimension.

    A low-discrepancy sequence covers the cube more evenly than independent draws; its
    balance holds for batches of a power of two. Points that fall on a forbidden
    combination are skipped; the coordinates of an inactive dimension go unused.

    Reference: I. M. Sobol', "On the distribution of points in a cube and the approximate
    evaluation of integrals", 1967; the scrambling is scipy's (Owen, 1998).

    Example:
      >>> from hypergrad.space import Real, Space
      >>> from hypergrad.search import SobolSearch
      >>> proposer = SobolSearch(Space({"x": Real(0.0, 1.0)}), seed=0)
      >>> xs = sorted(p.config["x"] for p in proposer.ask(4))
      >>> [int(4 * x) for x in xs]  # one point in each quarter
      [0, 1, 2, 3]
    """

    def __init__(self, space: Space, seed: int = 0, scramble: bool = True):
        if not isinstance(space, Space):
            raise TypeError(f"space must be a hypergrad.space.Space, got {space!r}")
        self.space = space
        self.seed = _check_seed(seed)
        self.scramble = bool(scramble)
        self._engine = scipy.stats.qmc.Sobol(len(space), scramble=self.scramble, seed=self.seed)
        self._index = 0  # points of the sequence consumed, forbidden ones included

    def ask(self, n: int) -> list[Proposal]:
        out = []
        # A forbidden region of measure p costs about n p extra points; cap the search so a
        # space that forbids (nearly) everything fails rather than spins.
        for _ in range(100):
            if len(out) >= check_count(n):
                break
            m = n - len(out)
            with warnings.catch_warnings():
                # Balance needs powers of two; other batch sizes are still valid points.
                warnings.filterwarnings("ignore", message=".*balance properties.*")
                u = self._engine.random(m)
            configs, allowed = self.space.configs_from_unit(u)
            for i in np.flatnonzero(allowed):
                out.append(Proposal(configs[i], info={"index": self._index + int(i)}))
            self._index += m
        if len(out) < n:
            raise ValueError("forbidden combinations rejected nearly every Sobol point")
        return out

    def observe(self, proposal, value) -> None:
        index = int(proposal.info.get("index", -1)) + 1
        if index > self._index:
            self._engine.fast_forward(index - self._index)
            self._index = index

    def describe(self):
        return {"name": self.name, "seed": self.seed, "scramble": self.scramble}
