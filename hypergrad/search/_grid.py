"""Grid search over a space, conditions and forbidden combinations included.

Interface: `GridSearch(space, resolution=5)`; `ask(n)` gives the next `n` grid points not
yet asked for, and none once the grid is exhausted; `tell` marks points done. A space
that forbids every grid point is refused (`InvalidSpaceError`), as the other searches do.

Several workers: attached to a shared study (`attach(records)`, which `search.run`
does), the grid is partitioned among them. Each `ask` reads the study and proposes only
points that no live trial holds (complete, or running in any worker) and that this
process has not tried yet; each proposal carries the point as its `claim`, and when two
workers claim a point at once only the first trial runs (the other is withdrawn and the
worker asks again; see `hypergrad.records.record_trial`). A point whose trial failed in
another worker, or whose worker was killed (failed on resume), is proposed again. A
worker alone takes the points in order; once it sees another worker's trial running, or
has lost a claim, it draws among the free points at random (seeded by its host and pid),
so that workers seldom claim the same point at once.

Invariant: the grid is the product of each dimension's values (every choice, every
integer or `resolution` spread out, `resolution` reals spaced evenly or geometrically,
ends included), where a dimension enters only under the parent values that make it
active, so no configuration appears twice, and forbidden ones not at all. Workers
sharing a study complete each point once.
"""

import json
import random

import numpy as np
from optuna.trial import TrialState

from ..records import CLAIM_ATTR, WITHDRAWN_ATTR, worker
from ..space import Categorical, Config, Int, InvalidSpaceError, Real, Space
from ._base import AbstractProposer, Proposal, check_count


def _values(dim, resolution: int) -> list:
    if isinstance(dim, Categorical):
        return list(dim.choices)
    if isinstance(dim, Int):
        return dim.grid(resolution)
    assert isinstance(dim, Real)
    pts = (np.geomspace if dim.log else np.linspace)(dim.low, dim.high, resolution)
    # geomspace's ends can be an ulp off; the bounds themselves are grid points.
    pts[0], pts[-1] = dim.low, dim.high
    return [float(x) for x in pts]


def grid_points(space: Space, resolution: int = 5, limit: int = 1_000_000) -> list[Config]:
    """Every grid point of `space`, parents varying slowest, forbidden ones left out."""
    return [c for c in _all_points(space, resolution, limit) if space.is_valid(c)]


def _all_points(space: Space, resolution: int, limit: int) -> list[Config]:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an int >= 2, got {resolution!r}")
    partial = [{}]
    for name in space.names:
        values = _values(space.dims[name], resolution)
        nxt = []
        for config in partial:
            if space.is_active(name, config):
                nxt.extend({**config, name: v} for v in values)
            else:
                nxt.append(config)
        if len(nxt) > limit:
            raise ValueError(
                f"the grid has more than limit={limit} points by dimension {name!r}; "
                "lower resolution or use RandomSearch / SobolSearch"
            )
        partial = nxt
    return partial


def claim_key(config: Config) -> str:
    """The claim of a grid point: the configuration as JSON (floats exactly, by repr)."""
    return "grid:" + json.dumps(config, sort_keys=True, default=repr)


class GridSearch(AbstractProposer):
    """The points of a grid, in order (or shuffled by `seed`).

    Example:
      >>> from hypergrad.space import Categorical, Condition, Int, Space
      >>> from hypergrad.search import GridSearch
      >>> space = Space({"kernel": Categorical(("linear", "poly")), "degree": Int(2, 3)},
      ...               conditions={"degree": Condition("kernel", ("poly",))})
      >>> [p.config for p in GridSearch(space).ask(10)]
      [{'kernel': 'linear'}, {'kernel': 'poly', 'degree': 2}, {'kernel': 'poly', 'degree': 3}]
    """

    def __init__(self, space: Space, resolution: int = 5, seed: int | None = None):
        if not isinstance(space, Space):
            raise TypeError(f"space must be a hypergrad.space.Space, got {space!r}")
        self.space = space
        self.resolution = resolution
        self.seed = seed
        every = _all_points(space, resolution, 1_000_000)
        self._points = [c for c in every if space.is_valid(c)]
        if not self._points:
            raise InvalidSpaceError(
                f"space forbids every grid point: all {len(every)} points at "
                f"resolution={resolution} are forbidden combinations (the first: "
                f"{'; '.join(space.problems(every[0]))}); forbidden={list(space.forbidden)!r}"
            )
        if seed is not None:
            order = np.random.default_rng(seed).permutation(len(self._points))
            self._points = [self._points[i] for i in order]
        self._todo = list(range(len(self._points)))  # indices not yet asked for
        self._done: set[int] = set()
        self._keys = {claim_key(c): i for i, c in enumerate(self._points)}
        self._records = None

    def __len__(self) -> int:
        return len(self._points)

    @property
    def exhausted(self) -> bool:
        return not self._free()[0] if self._records is not None else not self._todo

    def attach(self, records) -> None:
        """Partition the grid with the other workers of `records`' study."""
        self._records = records
        me = worker()
        self._rng = random.Random("{host}:{pid}".format(**me))
        self._contended = False

    def _free(self) -> tuple[list[int], bool]:
        """Indices no live trial of the study holds and this process has not tried, and
        whether other workers compete for them."""
        me = worker()
        taken = set()
        for t in self._records.study.get_trials(deepcopy=False):
            mine = all(t.user_attrs.get(k) == v for k, v in me.items())
            if WITHDRAWN_ATTR in t.user_attrs:
                self._contended = self._contended or mine
                continue
            self._contended = self._contended or (t.state == TrialState.RUNNING and not mine)
            i = self._keys.get(t.user_attrs.get(CLAIM_ATTR))
            if i is not None and (t.state in (TrialState.RUNNING, TrialState.COMPLETE) or mine):
                taken.add(i)
        return [i for i in range(len(self._points)) if i not in taken], self._contended

    def ask(self, n: int) -> list[Proposal]:
        if self._records is not None:
            free, others = self._free()
            n = min(check_count(n), len(free))
            take = self._rng.sample(free, n) if others else free[:n]
        else:
            take, self._todo = self._todo[: check_count(n)], self._todo[n:]
        return [
            Proposal(dict(self._points[i]), info={"index": i}, claim=claim_key(self._points[i]))
            for i in take
        ]

    def _tell_one(self, proposal, value) -> None:
        self._done.add(int(proposal.info["index"]))

    def observe(self, proposal, value) -> None:
        # A completed point is done; one that failed or was cut off is asked again. The
        # point is found by its configuration: a grid shuffled by another seed numbers
        # its points differently.
        i = self._keys.get(claim_key(dict(proposal.config)), -1)
        if value is not None and 0 <= i < len(self._points):
            self._done.add(i)
            self._todo = [j for j in self._todo if j != i]

    def describe(self):
        return {"name": self.name, "resolution": self.resolution, "seed": self.seed}
