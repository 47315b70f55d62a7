"""Grid search over a space, conditions and forbidden combinations included.

Interface: `GridSearch(space, resolution=5)`; `ask(n)` gives the next `n` grid points not
yet asked for, and none once the grid is exhausted; `tell` marks points done.

Invariant: the grid is the product of each dimension's values (every choice, every
integer or `resolution` spread out, `resolution` reals spaced evenly or geometrically,
ends included), where a dimension enters only under the parent values that make it
active, so no configuration appears twice, and forbidden ones not at all.
"""

import numpy as np

from ..space import Categorical, Config, Int, Real, Space
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
    return [c for c in partial if space.is_valid(c)]


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
        self._points = grid_points(space, resolution)
        if seed is not None:
            order = np.random.default_rng(seed).permutation(len(self._points))
            self._points = [self._points[i] for i in order]
        self._todo = list(range(len(self._points)))  # indices not yet asked for
        self._done: set[int] = set()

    def __len__(self) -> int:
        return len(self._points)

    @property
    def exhausted(self) -> bool:
        return not self._todo

    def ask(self, n: int) -> list[Proposal]:
        take, self._todo = self._todo[: check_count(n)], self._todo[n:]
        return [Proposal(dict(self._points[i]), info={"index": i}) for i in take]

    def _tell_one(self, proposal, value) -> None:
        self._done.add(int(proposal.info["index"]))

    def observe(self, proposal, value) -> None:
        # A completed point is done; one that failed or was cut off is asked again.
        i = int(proposal.info.get("index", -1))
        if value is not None and 0 <= i < len(self._points):
            self._done.add(i)
            self._todo = [j for j in self._todo if j != i]

    def describe(self):
        return {"name": self.name, "resolution": self.resolution, "seed": self.seed}
