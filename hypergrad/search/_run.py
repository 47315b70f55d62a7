"""The black-box loop: ask a proposer, evaluate, record every trial, tell.

Interface: `run(objective, proposer, n_trials, records=..., batch_size=1, seed=0)
-> SearchResult`. `objective(config, *, seed[, budget])` is a module-level function (so
its record names it and `hypergrad reproduce` can re-run it) returning a value, a tuple
of values, or a `hypergrad.records.Outcome`.

Invariant: every evaluation is one trial of `records.study`, recorded before the
objective starts and finished after it returns. A run on a study that already has trials
continues it: trials of local workers that died are marked failed, and the proposer
`observe`s the earlier trials it (or a proposer of its kind) made, so random and Sobol
draws move past them, a grid skips the points done, and successive halving keeps its
rungs. An `OptunaSearch` asks from the recorded study itself.

Several workers (processes, machines) may run `run` on one study at once; each gives
the proposer the study (`proposer.attach(records)`), so a `GridSearch` splits its
points among them and an `OptunaSearch` learns from all of their trials. A proposal
whose `claim` another worker's trial holds is withdrawn before it runs and does not
count towards `n_trials`. `hypergrad worker STORAGE STUDY` is this loop as a command.
"""

from collections.abc import Callable
from typing import NamedTuple

from optuna.trial import TrialState

from ..records import ClaimTakenError, Records, record_trial
from ._base import AbstractProposer, Proposal, check_count


class SearchResult(NamedTuple):
    """What `run` did.

    Attributes:
      records: the study's `Records`.
      trials: numbers of the trials this call ran.
      best_config, best_value: the best completed trial of the whole study (single
        objective; `None` for several objectives or when none completed).
    """

    records: Records
    trials: list[int]
    best_config: dict | None
    best_value: float | None


def _history(records: Records, proposer: AbstractProposer):
    for t in records.trials():
        described = t.user_attrs.get("proposer") or {}
        if described.get("name") != proposer.name:
            continue
        value = None
        if t.state == TrialState.COMPLETE:
            value = t.value if len(t.values) == 1 else tuple(t.values)
        yield (
            Proposal(
                dict(t.params),
                t.user_attrs.get("budget"),
                dict(t.user_attrs.get("proposal_info") or {}),
                t.number,
            ),
            value,
        )


def run(
    objective: Callable,
    proposer: AbstractProposer,
    n_trials: int,
    *,
    records: Records | None = None,
    batch_size: int = 1,
    seed: int = 0,
    resume: bool = True,
) -> SearchResult:
    """Evaluate up to `n_trials` proposals in batches of `batch_size`, recording each.

    Args:
      objective: `objective(config, *, seed[, budget])`, importable by name.
      proposer: any `AbstractProposer`.
      n_trials: evaluations this call runs (fewer if the proposer runs out).
      records: where trials go; default `Records.open()` (SQLite `hypergrad.db`, a new
        study).
      batch_size: proposals asked at once (a batch is asked before any is told).
      seed: the run's seed; trial `k` gets `hypergrad.records.trial_seed(seed, k)`.
      resume: continue a study that has trials (see the module docstring).

    Example:
      >>> import optuna
      >>> from hypergrad.records import Records
      >>> from hypergrad.search import RandomSearch, run
      >>> from hypergrad.space import Real, Space
      >>> def sphere(config, *, seed):
      ...     return config["x"] ** 2
      >>> records = Records.open(optuna.storages.InMemoryStorage(), "doc")
      >>> result = run(sphere, RandomSearch(Space({"x": Real(-1.0, 1.0)})), 8, records=records)
      >>> len(result.trials), result.best_value < 0.1
      (8, True)
    """
    check_count(n_trials, "n_trials")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(proposer, AbstractProposer):
        raise TypeError(f"proposer must be an AbstractProposer, got {proposer!r}")
    if not callable(objective):
        raise TypeError(f"objective must be callable, got {objective!r}")
    records = Records.open() if records is None else records
    proposer.attach(records)
    if resume:
        records.fail_stale()
        for proposal, value in _history(records, proposer):
            proposer.observe(proposal, value)
    described = proposer.describe()
    numbers = []
    while len(numbers) < n_trials:
        proposals = proposer.ask(min(batch_size, n_trials - len(numbers)))
        if not proposals:
            break
        ran, values = [], []
        for p in proposals:
            try:
                number, outcome = record_trial(
                    records,
                    objective,
                    p.config,
                    run_seed=seed,
                    budget=p.budget,
                    space=proposer.space,
                    proposer=described,
                    proposal_info=p.info,
                    trial_number=p.trial_number,
                    claim=p.claim,
                )
            except ClaimTakenError:
                continue  # another worker runs it; the next ask reads the study again
            numbers.append(number)
            ran.append(p)
            values.append(outcome.value)
        proposer.tell(ran, values)
    best_config = best_value = None
    if len(records.study.directions) == 1:
        done = records.trials(states=(TrialState.COMPLETE,))
        if done:
            sign = 1 if records.study.direction.name == "MINIMIZE" else -1
            best = min(done, key=lambda t: sign * t.value)
            best_config, best_value = dict(best.params), best.value
    return SearchResult(records, numbers, best_config, best_value)
