"""The tuner's search side: its proposer, and one trial per member of every round.

Interface: `choose_proposer` checks the proposer of the discrete dimensions (a grid over
every combination by default when there are at most `rounds` of them, else random
search); `start_members` creates a round's trials (`RUNNING`) before its descent;
`finish_members` writes each member's budget and outcome and returns the `Member`s;
`fail_members` marks them failed; `completed_rounds` reads back the rounds of earlier
calls whose every member completed (to resume), and `observe_rounds` shows them to a
proposer through its own `observe`.

What a member's trial holds, besides what every record holds: its starting point as
parameters; `ROUND_ATTR`, `POPULATION_ATTR` and `REFINE_ATTR`; the budget `{"steps": steps it ran,
"problem": the factory, "continuous": bounds, "settings": TuneSettings.to_json(),
"relaxed": ...}` from which `replay` re-runs it; its value (the seed mean), the curve
as intermediate values, and as results `hparams`, `per_seed`, `inner_failures`,
`inner_status`, with relaxed dimensions `relaxed_value` and `choice`, and for the best
member of its round `test_value` (the key `hypergrad.analysis` reads).
"""

import math
from typing import NamedTuple

import numpy as np
from optuna.trial import TrialState

from ..records import EXACT_ATTR, reference
from ..search import AbstractProposer, GridSearch, Proposal, RandomSearch, grid_points
from ..space import Int, Space
from . import _relaxed
from ._evaluate import replay
from ._plan import discrete_space

ROUND_ATTR = "tune.round"
POPULATION_ATTR = "tune.population"
REFINE_ATTR = "tune.refine"  # a refinement round's level (absent or 0: a proposed round)
KIND = "gradient"


class Member(NamedTuple):
    """One starting point of one round, after its descent.

    Attributes:
      trial: its trial number in the records.
      start: the starting configuration (discrete choices and continuous start).
      hparams: the best hyperparameters it visited (natural coordinates, NumPy).
      value: the seed mean of the validation objective there.
      per_seed: each seed's value there.
      curve: the seed mean at each outer step it ran.
      steps: the outer steps it ran (fewer when successive halving dropped it).
      relaxed_value: with relaxed dimensions, the relaxed objective at `hparams` (whose
        relaxed entries are weights); `value` and `per_seed` are then those of the
        discretized configuration, evaluated exactly. `None` without.
      choice: with relaxed dimensions, the value each one was discretized to.
      inner_failures: its inner solves that did not converge (all seeds and steps).
      test_value: the seed mean of the outer objective on the test data, for the best
        member of its round when the problems have test data; else `None`.
    """

    trial: int
    start: dict
    hparams: dict
    value: float
    per_seed: np.ndarray
    curve: np.ndarray
    steps: int
    relaxed_value: float | None = None
    choice: dict | None = None
    inner_failures: int = 0
    test_value: float | None = None


class Round(NamedTuple):
    """One discrete configuration and its population."""

    number: int  # the round's number in the records
    config: dict
    members: list[Member]
    value: float  # the best member's value
    resumed: bool  # read back from the records, not run by this call
    level: int = 0  # 0: proposed; k: the k-th refinement (see `tune`'s `refine`)


def exhaustive_grid(space: Space, rounds: int) -> GridSearch | None:
    """A grid over every discrete combination, if there are at most `rounds` of them."""
    widest = max(
        [len(space.dims[n].values()) for n in space.names if isinstance(space.dims[n], Int)],
        default=2,
    )
    if math.prod(len(space.dims[n].values()) for n in space.names) > 10 * rounds:
        return None
    if len(grid_points(space, resolution=max(widest, 2))) > rounds:
        return None
    return GridSearch(space, resolution=max(widest, 2))


def choose_proposer(proposer, space: Space, settings):
    """The proposer of the discrete dimensions not relaxed, or None without any."""
    proposed = discrete_space(space)
    if proposed is None:
        if proposer is not None:
            raise ValueError(
                "proposer is only used for discrete dimensions that are not relaxed; the "
                "space has none"
            )
        return None
    if proposer is None:
        grid = exhaustive_grid(proposed, settings.rounds)
        return grid or RandomSearch(proposed, seed=settings.seed)
    if not isinstance(proposer, AbstractProposer):
        raise TypeError(f"proposer must be a hypergrad.search proposer, got {proposer!r}")
    if set(proposer.space.names) != set(proposed.names):
        raise ValueError(
            f"proposer's space has dimensions {list(proposer.space.names)}, but the "
            f"discrete dimensions of space (not relaxed) are {list(proposed.names)}"
        )
    return proposer


def start_members(records, plan, starts, settings, *, searched, ref, proposer, proposal, level=0):
    """A `RUNNING` trial per starting point of the round `plan` (a refinement round's at
    `level` > 0); their numbers."""
    numbers = []
    for s in starts:
        number, _ = records.start(
            s,
            space=searched,
            seed=settings.seed,
            objective=None if ref is None else reference(replay),
            proposer=None if proposer is None else proposer.describe(),
            proposal_info=proposal.info,
            kind=KIND,
            attrs={
                ROUND_ATTR: plan.number,
                POPULATION_ATTR: settings.population,
                "tune.problem": ref,
                # Re-run alone, a member of a vmap-ed population may differ in the last
                # bits: reproduce compares within a tolerance.
                EXACT_ATTR: settings.population == 1,
                REFINE_ATTR: level,
            },
        )
        numbers.append(number)
    return numbers


def fail_members(records, numbers, reason: str) -> None:
    for number in numbers:
        records.fail(number, reason)


def _budget(plan, j, ran, settings, ref, space):
    budget = {
        "steps": int(ran),
        "problem": ref,
        "continuous": {
            n: (space.dims[n].low, space.dims[n].high, space.dims[n].log) for n in plan.continuous
        },
        "settings": settings.to_json(),
    }
    if plan.relaxed:
        budget["relaxed"] = {
            "round": plan.number,
            "dims": {n: _relaxed.describe(space.dims[n], plan.h0[n][j]) for n in plan.relaxed},
        }
    return budget


def finish_members(records, numbers, starts, plan, out, settings, ref, wall_time_s):
    """Write each member's budget and outcome (`out`: the round's `RoundOutcome`); the
    `Member`s."""
    members = []
    for j, (number, start) in enumerate(zip(numbers, starts, strict=True)):
        budget = _budget(plan, j, out.ran[j], settings, ref, plan.space)
        outcome = out.outcome(j)
        records.finish(number, outcome, wall_time_s, annotations={"budget": budget})
        members.append(
            Member(
                number,
                start,
                {n: np.asarray(v) for n, v in outcome.attrs["hparams"].items()},
                float(out.value[j]),
                out.per_seed[j],
                np.asarray(out.curves[j]),
                int(out.ran[j]),
                outcome.attrs.get("relaxed_value"),
                out.choices[j],
                outcome.attrs["inner_failures"],
                outcome.attrs.get("test_value"),
            )
        )
    return members


def _member(t) -> Member:
    curve = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
    a = t.user_attrs
    return Member(
        t.number,
        dict(t.params),
        {k: np.asarray(v) for k, v in a["result.hparams"].items()},
        float(t.value),
        np.asarray(a["result.per_seed"]),
        np.asarray(curve),
        len(curve),
        a.get("result.relaxed_value"),
        a.get("result.choice"),
        int(a.get("result.inner_failures", 0)),
        a.get("result.test_value"),
    )


def completed_rounds(records, space) -> dict[int, tuple[Round, dict]]:
    """Rounds of earlier calls whose every member completed: `{round: (Round, info)}`,
    `info` the proposer's bookkeeping of the round's proposal."""
    by_round: dict[int, list] = {}
    for t in records.trials():
        r = t.user_attrs.get(ROUND_ATTR)
        if r is not None and t.user_attrs.get("kind") == KIND:
            by_round.setdefault(int(r), []).append(t)
    done = {}
    for r, trials in by_round.items():
        size = trials[0].user_attrs.get(POPULATION_ATTR)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if len(complete) != size:
            continue
        members = [_member(t) for t in sorted(complete, key=lambda t: t.number)]
        discrete = {k: v for k, v in members[0].start.items() if k in space.discrete}
        level = int(trials[0].user_attrs.get(REFINE_ATTR) or 0)
        done[r] = (
            Round(r, discrete, members, min(m.value for m in members), True, level),
            trials[0].user_attrs.get("proposal_info") or {},
        )
    return done


def observe_rounds(proposer, finished) -> None:
    """Show the finished proposed rounds to `proposer`, in order: its `observe` moves it
    past them (a draw index, a grid point); a proposer with a history of its own
    (Optuna's) adds them to it. Refinement rounds were not proposed: not shown."""
    if proposer is None:
        return
    for r in sorted(finished):
        rnd, info = finished[r]
        if rnd.level:
            continue
        proposer.observe(Proposal(dict(rnd.config), info=dict(info)), rnd.value)
