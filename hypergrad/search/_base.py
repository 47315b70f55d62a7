"""The batched proposer interface shared by every black-box search.

Interface:

    proposals = proposer.ask(n)          # up to n Proposals (fewer when waiting or done)
    batch = proposer.space.stack([p.config for p in proposals])   # arrays for jax.vmap
    proposer.tell(proposals, values)     # one value (or tuple of values) per proposal

A `Proposal` carries the configuration, the budget to evaluate it at (inner steps or a
data fraction, for successive halving; `None` otherwise) and `info`, the proposer's own
bookkeeping (a draw index, a rung), which a record keeps so a restarted run can hand it
back through `observe` and continue where the study stopped.

A value of `None`, NaN or infinity marks a failed evaluation: it is never ranked best.

Several workers share a study through `proposer.attach(records)` (which `search.run`
calls): a proposer that can, then proposes from what the whole study has done, not only
from what it asked itself (`GridSearch` partitions its points, `OptunaSearch` asks from
the recorded study).

Invariant: every proposed configuration passes `proposer.space.validate`; forbidden
combinations and inactive conditional dimensions never appear.
"""

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..space import Config, Space

Value = float | tuple[float, ...] | None


@dataclass(frozen=True)
class Proposal:
    """One configuration to evaluate.

    Attributes:
      config: name -> value for the active dimensions.
      budget: what the objective may spend (inner steps or a data fraction), or `None`.
      info: the proposer's bookkeeping, JSON-serializable; recorded with the trial.
      trial_number: the number of the Optuna trial already made for this proposal
        (`OptunaSearch`), else `None`.
      claim: a key that at most one live trial of a shared study may hold (a grid
        point); `None` for proposals that may repeat. See `hypergrad.records.Records.holder`.
    """

    config: Config
    budget: float | int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    trial_number: int | None = None
    claim: str | None = None


def as_value(value, argument: str = "value") -> Value:
    """A float, a tuple of floats, or `None` for a failure (NaN and infinities too)."""
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        vals = tuple(as_value(v, f"{argument}[{i}]") for i, v in enumerate(value))
        return None if any(v is None for v in vals) else vals
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"{argument} must be a number or a sequence of numbers, got {value!r}"
        ) from None
    return v if math.isfinite(v) else None


def check_count(n, argument: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{argument} must be a non-negative int, got {n!r}")
    return n


class AbstractProposer(abc.ABC):
    """Proposes configurations of `space` in batches and learns from their values."""

    space: Space

    @abc.abstractmethod
    def ask(self, n: int) -> list[Proposal]:
        """Up to `n` proposals; fewer (possibly none) while waiting for results or when done."""

    def tell(self, proposals: Sequence[Proposal], values: Sequence) -> None:
        """Report the values of earlier proposals (the same order)."""
        if len(proposals) != len(values):
            raise ValueError(
                f"tell needs one value per proposal, got {len(proposals)} proposals and "
                f"{len(values)} values"
            )
        for i, (p, v) in enumerate(zip(proposals, values, strict=True)):
            self._tell_one(p, as_value(v, f"values[{i}]"))

    def _tell_one(self, proposal: Proposal, value: Value) -> None:  # noqa: B027
        """Learn from one result; proposers that do not adapt ignore it."""

    def observe(self, proposal: Proposal, value: Value) -> None:
        """Learn from a result this proposer did not ask for: a record of an earlier run.

        `value` is `None` for a trial that did not complete. The default forwards to
        `tell`; proposers with a position in a sequence also move past `proposal.info`.
        """
        self._tell_one(proposal, as_value(value))

    def attach(self, records) -> None:  # noqa: B027
        """Propose for the study of `records`, shared with other workers (default: ignore it)."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def describe(self) -> dict[str, Any]:
        """The settings that rebuild this proposer, recorded with each trial."""
        return {"name": self.name}
