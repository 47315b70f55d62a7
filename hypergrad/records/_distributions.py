"""Search spaces as Optuna distributions.

Interface: `to_optuna_distributions(space) -> {name: BaseDistribution}`, one per dimension,
conditional ones included (Optuna records only the active ones of each trial).

Invariant: a configuration of the space is a valid set of Optuna parameters under these
distributions, and reads back from a record unchanged.
"""

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ..space import Categorical, Int, Real, Space


def to_optuna_distributions(space: Space) -> dict[str, BaseDistribution]:
    """One Optuna distribution per dimension (conditional ones included).

    Example:
      >>> from hypergrad.space import Int, Space
      >>> to_optuna_distributions(Space({"k": Int(1, 8, log=True)}))
      {'k': IntDistribution(high=8, log=True, low=1, step=1)}
    """
    out = {}
    for name in space.names:
        dim = space.dims[name]
        if isinstance(dim, Real):
            out[name] = FloatDistribution(float(dim.low), float(dim.high), log=dim.log)
        elif isinstance(dim, Int):
            out[name] = IntDistribution(int(dim.low), int(dim.high), log=dim.log)
        else:
            assert isinstance(dim, Categorical)
            out[name] = CategoricalDistribution(dim.choices)
    return out
