"""The tuner: hypergradient descent inside, black-box search outside, every trial recorded.

Interface: `tune(problem, space, ...) -> TuneResult`. `problem` is a `BilevelProblem` whose
`hparams` is a dict with one entry per continuous dimension of `space`, or, when the space
has discrete dimensions or several seeds are wanted, a module-level function
`problem(config, *, seed) -> BilevelProblem` that builds the problem for the discrete
choices in `config` and a seed (a data split, an initialization), called once per
configuration and seed of a round. A `Real` dimension may stand for an array-valued
hyperparameter (one penalty per feature): its bounds hold elementwise.

Each round, the proposer (random search by default; any `hypergrad.search` proposer over
the discrete dimensions, `OptunaSearch` included) proposes one discrete configuration.
For it, `population` starting points of the continuous dimensions, times `seeds`
problems, are descended together in one compiled program (`descend`'s outer solver under
`vmap`, see `hypergrad.tune._evaluate`): the members of a configuration share their
hyperparameters across seeds and descend on the seed mean of the validation objective,
so the choice rests on the seed-aggregated value. With `halving`, successive halving
drops the worse part of the population at rungs of geometrically growing length. The
round's value (the best member's seed mean) goes back to the proposer (`tell`). With
`refine=k`, up to `k` refinement rounds follow the proposed ones: the best configuration
again, its population started at the best points found so far, at a third of the
previous learning rate (data of the same compiled descent: nothing new is compiled),
until one gains at most `min_improvement` or the time budget is spent. Adam's steps are
about the learning rate long whatever the gradient's size, so a fixed rate circles a
minimum it cannot close on; refinement closes on it. Refinement rounds are trials like
any (`tune.refine` says the level); they are not shown to the proposer.

Invariant: every member of every round is one trial of `records` (`_trials`), created
(`RUNNING`) before its round starts and completed after it; an interrupted run (Ctrl-C)
fails only the trials of the round in flight, and `tune(..., records=same)` again
resumes: finished rounds are read back from the study, shown to the proposer through its
`observe` (the resume path of `hypergrad.search.run`), and not run again. Each trial
records the tuner's settings as JSON (`TuneSettings`), so that with a problem factory it
can be re-run alone by `hypergrad reproduce` (`replay`); the population's `vmap` may
change the last bits of a value, so the match is within the stated tolerance.

Inner solves that do not converge are counted per member and trial and in `TuneResult`;
with `throw=True` the round's trials fail and a `RuntimeError` names the status. Each
round's best member is evaluated on the test data if any (`test_value`, recorded where
`hypergrad.analysis` reads it); `TuneResult.gap` compares it with the validation value
(`hypergrad.analysis.validation_gap`, which warns past `gap_threshold`).

Relaxed dimensions: an `Int` or a `Categorical` with `relax="softmax"` or `"gumbel"` (and
a `temperature`) is not proposed; its logits, one per value, descend together with the
continuous dimensions in the same outer steps. The contract with the factory:

- for the descent, `problem(config, seed=...)` receives `config[name] is
  hypergrad.space.RELAXED` and returns a problem whose `hparams[name]` is a float array
  of shape `(n,)`, `n` the number of values (the choices, or the integers `low..high`).
  The tuner fills it with weights on the simplex: `softmax(logits / temperature)`, or
  with `"gumbel"` a Gumbel-softmax sample of them drawn afresh at each outer step. The
  model mixes its options with these weights (`hypergrad.relax.mix(hparams[name],
  outputs)`, or each option's features scaled by its weight), so that a one-hot weight
  is exactly that option.
- at the end, each member's weights are discretized (argmax); the factory, called with
  the chosen value in `config[name]`, builds the exact problem (no `hparams[name]`),
  and the tuner evaluates it at the member's continuous hyperparameters (no further
  descent). Members, rounds, the proposer and `TuneResult.value` see these exact values;
  `relaxed_value` keeps the relaxed objective (with `"gumbel"`, that of the best step's
  sample). The first member starts from uniform weights, the others around them.

A relaxed dimension may be conditional on a proposed one; none may be conditional on a
relaxed one, nor a forbidden combination name it. A relaxed problem with the wrong
weights leaf, or an exact one whose continuous hyperparameters differ from it, is
refused before the round's trials start.
"""

import dataclasses
import sys
import time
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._bilevel import BilevelProblem
from .._threads import serial_lapack
from ..analysis import GAP_THRESHOLD, ValidationGap, ValidationOverfitWarning, validation_gap
from ..methods._base import AbstractMethod
from ..records import Records, reference
from ..search import AbstractProposer, Proposal
from ..solvers import Status
from ..space import RELAXED, Space
from . import _plan, _relaxed, _trials
from ._aggregate import aggregate_seeds
from ._evaluate import evaluate
from ._evaluate import replay as replay
from ._outer import failed_solves, status_counts
from ._settings import TuneSettings
from ._trials import Member as Member
from ._trials import Round as Round


class TuneResult(NamedTuple):
    """What `tune` returns.

    Attributes:
      config: the best configuration: discrete choices (relaxed dimensions discretized)
        and the tuned continuous values (floats, or lists for array-valued ones).
      value: its validation value, the mean over seeds (with relaxed dimensions, of the
        exact problem of the discretized configuration).
      std, ci_low, ci_high: the across-seed standard deviation and 95% Student-t
        interval of that mean (NaN / infinite with one seed).
      per_seed: its validation value on each seed.
      test_value: the mean over seeds of the outer objective on each problem's `test`
        data at the best configuration (`None` without test data).
      rounds: every round, in order (resumed ones included).
      records: where the trials are.
      num_inner_solves: inner solves this call ran (descents and exact evaluations).
      wall_time_s: this call's wall time.
      relaxed_value: with relaxed dimensions, the relaxed objective (seed mean) of the
        member whose discretization `config` is; `None` without.
      inner_failures: inner solves of this call that did not converge.
      inner_status: `{status name: inner solves}` of this call's descents.
      gap: the validation-to-test gap at `config` (`None` without a test value).
      solver: the inner solver the populations ran (`repr`; the problem's, or for a
        solver whose control flow depends on the member, the batch-friendly one
        `hypergrad.solvers.population_solver` picks). Every trial records it too.
    """

    config: dict
    value: float
    std: float
    ci_low: float
    ci_high: float
    per_seed: np.ndarray
    test_value: float | None
    rounds: list[Round]
    records: Records
    num_inner_solves: int
    wall_time_s: float
    relaxed_value: float | None = None
    inner_failures: int = 0
    inner_status: dict | None = None
    gap: ValidationGap | None = None
    solver: str | None = None


class _Progress:
    def __init__(self, enabled, rounds, steps):
        self.enabled, self.rounds, self.steps = enabled, rounds, steps

    def at(self, r, best, level=0):
        """`progress(step, value)` for round `r`, or None when disabled."""
        if not self.enabled:
            return None
        name = f"refinement {level}" if level else f"round {r + 1}/{self.rounds}"

        def show(step, value):
            sys.stderr.write(
                f"\rtune: {name}  step {step}/{self.steps}  best {min(best, value):.6g}   "
            )
            sys.stderr.flush()

        return show

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")


REFINE_FACTOR = 3.0  # each refinement round's learning rate is the previous one's / this


def _next_level(history: list[Round], refine: int, min_improvement: float) -> int:
    """The level of the next refinement round, or 0: none (`refine` reached, no round
    yet, or the last refinement improved the best value of the rounds before it by at
    most `min_improvement`, relative)."""
    if not history:
        return 0
    last = history[-1]
    if last.level and len(history) > 1:
        before = min(h.value for h in history[:-1])
        if not last.value < before - min_improvement * abs(before):
            return 0
    level = 1 + max(h.level for h in history)
    return level if level <= refine else 0


def _refinement_starts(history: list[Round], config: dict, population: int) -> list[dict]:
    """The best `population` points of the members of every round of `config`."""
    members = [m for h in history if h.config == config for m in h.members]
    members.sort(key=lambda m: m.value)
    return [{**config, **{n: float(v) for n, v in m.hparams.items()}} for m in members[:population]]


class _Tuner:
    """One call of `tune`: the ask / evaluate / record / tell loop over rounds."""

    def __init__(self, problem, space, settings, proposer, records, progress):
        self.space, self.settings, self.records = space, settings, records
        self.proposer = proposer
        self.problems = _plan.Problems(problem, _plan.seeds_of(settings.seed, settings.seeds))
        self.ref = None if isinstance(problem, BilevelProblem) else reference(problem)
        # What a trial records: the dimensions that take one value (not the relaxed).
        self.searched = _plan.subspace(space, [n for n in space.names if n not in space.relaxed])
        self.show = _Progress(progress, settings.rounds, settings.steps)
        self.solves, self.status = 0, np.zeros(len(Status.NAMES), np.int64)
        self.solver = None

    def run(self) -> TuneResult:
        start_time = time.perf_counter()
        self.records.fail_stale()
        finished = _trials.completed_rounds(self.records, self.space)
        _trials.observe_rounds(self.proposer, finished)
        history = [finished[r][0] for r in sorted(finished)]
        r = max(finished, default=-1) + 1
        budget = self.settings.time_budget_s

        def out_of_time():
            return budget is not None and time.perf_counter() - start_time > budget

        try:
            while sum(h.level == 0 for h in history) < self.settings.rounds:
                if out_of_time():
                    break
                asked = [Proposal({})] if self.proposer is None else self.proposer.ask(1)
                if not asked:
                    break
                rnd = self._round(r, asked[0], min((h.value for h in history), default=np.inf))
                history.append(rnd)
                if self.proposer is not None:
                    self.proposer.tell(asked, [rnd.value])
                r += 1
            refine, tol = self.settings.refine, self.settings.min_improvement
            while (level := _next_level(history, refine, tol)) and not out_of_time():
                best = min(history, key=lambda h: h.value)
                starts = _refinement_starts(history, best.config, self.settings.population)
                proposal = Proposal(dict(best.config))
                history.append(self._round(r, proposal, best.value, level, starts))
                r += 1
        finally:
            self.show.close()
        if not history:
            raise RuntimeError("no round ran: the proposer had nothing to propose")
        return self._result(history, start_time)

    def _plan(self, r: int, discrete: dict, starts=None):
        """Round `r`'s plan and starting points (drawn, unless `starts` are given);
        refuses a misfit problem first."""
        space, population = self.space, self.settings.population
        relaxed = [n for n in space.relaxed if space.is_active(n, discrete)]
        one = _plan.first(self.problems.get({**discrete, **dict.fromkeys(relaxed, RELAXED)}))
        names = _plan.check_hparams(one, space, discrete, "the problem", relaxed)
        continuous = [n for n in names if n not in relaxed]
        if self.settings.refine:  # a refinement round starts from recorded points
            shaped = [n for n in continuous if jnp.ndim(one.hparams[n])]
            if shaped:
                raise ValueError(
                    f"refine restarts from points recorded as trial parameters, which hold "
                    f"numbers: hyperparameters {shaped} are arrays; pass refine=0"
                )
        if starts is None and self.searched is None:  # all relaxed: nothing to draw
            starts = [{} for _ in range(population)]
        elif starts is None:
            seed = self.settings.seed
            starts = _plan.draw_starts(self.searched, continuous, discrete, seed, r, population)
        h0 = _plan.initial_hparams(one, continuous, starts)
        if relaxed:
            _plan.check_exact(self.problems, space, discrete, relaxed, one)
            start_key = _relaxed.keys(self.settings.seed, r)[0]
            for i, n in enumerate(relaxed):
                dtype = jnp.result_type(one.hparams[n])
                weights = _relaxed.starting_weights(
                    jax.random.fold_in(start_key, i), space.dims[n], population, dtype
                )
                h0[n] = jnp.asarray(weights)
        return _plan.Plan(r, discrete, space, names, relaxed, h0), starts

    def _round(self, r: int, proposal: Proposal, best: float, level=0, starts=None) -> Round:
        plan, starts = self._plan(r, dict(proposal.config), starts)
        settings = self.settings
        if level:  # recorded with its trials: `reproduce` re-runs them at this rate
            rate = settings.learning_rate / REFINE_FACTOR**level
            settings = dataclasses.replace(settings, learning_rate=rate)
        numbers = _trials.start_members(
            self.records,
            plan,
            starts,
            settings,
            searched=self.searched,
            ref=self.ref,
            proposer=None if level else self.proposer,
            proposal=proposal,
            level=level,
        )
        round_start = time.perf_counter()
        try:
            out = evaluate(self.problems, plan, settings, progress=self.show.at(r, best, level))
        except BaseException as e:
            _trials.fail_members(self.records, numbers, f"{type(e).__name__}: {e}")
            raise
        finally:
            self.problems.keep([])  # each round builds its own; the test value is taken
        failure = out.failure()
        if self.settings.throw and failure:
            _trials.fail_members(self.records, numbers, failure)
            raise RuntimeError(failure)
        self.solves += out.num_inner_solves
        self.status = self.status + out.inner_status.sum(axis=0)
        self.solver = out.solver
        wall = time.perf_counter() - round_start  # members ran together
        members = _trials.finish_members(
            self.records, numbers, starts, plan, out, settings, self.ref, wall
        )
        return Round(r, plan.discrete, members, float(np.min(out.value)), False, level)

    def _result(self, history, start_time) -> TuneResult:
        rnd = min(history, key=lambda h: h.value)
        member = min(rnd.members, key=lambda m: m.value)
        summary = aggregate_seeds(np.asarray(member.per_seed)[None, :])
        choice = member.choice or {}
        config = dict(rnd.config)
        for n, v in member.hparams.items():
            if n not in choice:
                a = np.asarray(v)
                config[n] = float(a) if a.ndim == 0 else a.tolist()
        config.update(choice)
        test, gap = member.test_value, None
        if test is not None and np.isfinite(test) and np.isfinite(member.value):
            gap = validation_gap(
                member.value, test, threshold=self.settings.gap_threshold, warn=False
            )
            if gap.exceeds:  # at the user's call of `tune`
                warnings.warn(gap.describe(), ValidationOverfitWarning, stacklevel=4)
        counts = status_counts(self.status)
        return TuneResult(
            config=config,
            value=float(summary.mean[0]),
            std=float(summary.std[0]),
            ci_low=float(summary.ci_low[0]),
            ci_high=float(summary.ci_high[0]),
            per_seed=np.asarray(member.per_seed),
            test_value=test,
            rounds=history,
            records=self.records,
            num_inner_solves=self.solves,
            wall_time_s=time.perf_counter() - start_time,
            relaxed_value=member.relaxed_value,
            inner_failures=failed_solves(counts),
            inner_status=counts,
            gap=gap,
            solver=self.solver,
        )


def tune(
    problem: BilevelProblem | Callable[..., BilevelProblem],
    space: Space,
    *,
    rounds: int = 1,
    population: int = 8,
    seeds: int = 1,
    steps: int = 30,
    halving: int | None = None,
    method: AbstractMethod | None = None,
    optimizer: str | optax.GradientTransformation = "adam",
    learning_rate: float = 0.1,
    tol: float = 0.0,
    min_improvement: float = 0.0,
    inner_tol: tuple[float, float] | None = None,
    proposer: AbstractProposer | None = None,
    records: Records | None = None,
    time_budget_s: float | None = None,
    seed: int = 0,
    progress: bool | None = None,
    throw: bool = False,
    gap_threshold: float = GAP_THRESHOLD,
    refine: int = 0,
) -> TuneResult:
    """Tune `problem`'s hyperparameters over `space`; see the module docstring.

    Args:
      problem: a `BilevelProblem` (continuous spaces, one seed), or a module-level
        factory `problem(config, *, seed) -> BilevelProblem`.
      space: the search space; its continuous dimensions must be exactly the keys of the
        problem's `hparams` (the active ones, given the discrete choices), plus its
        relaxed dimensions in the relaxed problem (see the module docstring).
      rounds: discrete configurations to try (one without discrete dimensions; fewer run
        if the proposer runs out, as a grid does).
      population, seeds: starting points per round (K) and problems per configuration
        (S, built by the factory with different seeds).
      steps: outer steps of a member that is never dropped.
      halving: keep the best `1/halving` of the population at each rung of successive
        halving; `None` runs every member for `steps`.
      method: how hypergradients are computed (default: the problem's, else `Implicit()`).
      optimizer, learning_rate: the outer optimizer: an optax optimizer's name, run at
        `learning_rate` (recorded, so `hypergrad reproduce` can rebuild it; the rate is
        data, `optax.inject_hyperparams`: every rate runs one compiled program), or a
        `GradientTransformation` (not rebuilt by `reproduce`), stepping in the space's
        unconstrained coordinates (logit of the (log-)position in the bounds).
      tol, min_improvement: a member is done when its hypergradient norm is at most
        `tol`, or its best value improved by at most `min_improvement` (relative) over 5
        steps; a round ends when every member is done.
      inner_tol: `(start, end)`: inexact inner solves, the tolerance going from `start`
        down to `end` a decade at a time over `steps` (`hypergrad.tune.decades`; data of
        one compiled program); `None` keeps the solver's.
      proposer: proposes the discrete dimensions not relaxed (default `RandomSearch`, or
        a `GridSearch` when there are at most `rounds` combinations).
      records: where trials go (default `Records.open()`: the SQLite file `hypergrad.db`,
        a new study). Pass the records of an interrupted run to resume it.
      time_budget_s: start no new round (refinement rounds included) after this many
        seconds.
      refine: after the proposed rounds, at most this many refinement rounds: each
        restarts the best configuration's `population` best points so far (over all its
        rounds) at the learning rate of the round before divided by `REFINE_FACTOR` (3),
        for `steps` steps. Refining stops when a refinement round improves the best
        value by at most `min_improvement` (relative), or at `time_budget_s`. The
        learning rate is data of the compiled descent: refining compiles nothing new.
        Needs a named optimizer and scalar continuous hyperparameters.
      seed: the run's seed: problem `s` of every round is built with
        `hypergrad.records.trial_seed(seed, s)` (configurations compared on the same
        data); round `r` draws its starts from `fold_in(jax.random.key(seed), r)`.
      progress: a progress line on stderr (default: when stderr is a terminal).
      throw: raise a `RuntimeError` (failing the round's trials) when an inner solve did
        not converge; by default such solves are counted and reported.
      gap_threshold: the relative validation-to-test gap above which `TuneResult.gap`
        warns (`hypergrad.analysis.validation_gap`).

    Raises:
      ValueError, TypeError: bad arguments, or a space that does not match the problem's
        hyperparameters; raised before any trial starts.
    """
    settings = TuneSettings(
        rounds=rounds,
        population=population,
        seeds=seeds,
        steps=steps,
        halving=halving,
        method=method,
        optimizer=optimizer,
        learning_rate=learning_rate,
        tol=tol,
        min_improvement=min_improvement,
        inner_tol=inner_tol,
        seed=seed,
        throw=throw,
        gap_threshold=gap_threshold,
        time_budget_s=time_budget_s,
        refine=refine,
    )
    if not isinstance(space, Space):
        raise TypeError(f"space must be a hypergrad.space.Space, got space={space!r}")
    _relaxed.check_space(space)
    if refine and space.relaxed:
        raise ValueError(
            f"refine restarts from recorded points, which do not hold the weights of the "
            f"relaxed dimensions {list(space.relaxed)}; pass refine=0"
        )
    _plan.check_problem(problem, space, settings)
    proposer = _trials.choose_proposer(proposer, space, settings)
    if proposer is None:
        settings = dataclasses.replace(settings, rounds=1)
    records = Records.open() if records is None else records
    if not isinstance(records, Records):
        raise TypeError(f"records must be hypergrad.records.Records, got {records!r}")
    progress = sys.stderr.isatty() if progress is None else progress
    with serial_lapack():  # small factorizations in every step (hypergrad._threads)
        return _Tuner(problem, space, settings, proposer, records, progress).run()
