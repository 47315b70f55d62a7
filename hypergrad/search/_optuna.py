"""Optuna's samplers behind the batched `ask` / `tell` interface.

Interface: `OptunaSearch(space, sampler, seed=0, directions=("minimize",))`, the sampler
one of `"tpe"`, `"gp"` (needs torch), `"cmaes"` (needs cmaes), `"nsga2"`, `"random"` or
any `optuna.samplers.BaseSampler`. `to_optuna_distributions` (from `hypergrad.records`)
converts a space, one Optuna distribution per dimension, and `suggest(trial, space)` draws
a configuration from any Optuna trial, suggesting a conditional dimension only while its
parents make it active, so Optuna sees the tree as its define-by-run API would.

A batch is `n` trials asked before any is told: TPE runs with `constant_liar=True` and
the GP sampler conditions on running trials, so a batch spreads out instead of being `n`
copies of one point; CMA-ES and NSGA-II draw populations anyway. A configuration that hits
a forbidden combination is told as failed (user attribute `hypergrad.forbidden`) and
asked again, so forbidden combinations are never proposed.

Invariant: `proposal.trial_number` is the Optuna trial that produced the proposal, in
`proposer.study`; telling it twice is harmless (`skip_if_finished`). The trial carries
its worker's host and pid from its creation in a storage `hypergrad.records` opened (and
from the next write in any other), so a restart fails it if this worker dies.
"""

import importlib.util
import warnings
from collections.abc import Sequence

import optuna
from optuna.trial import TrialState

from ..records import FORBIDDEN_ATTR, quiet_optuna, worker
from ..records import to_optuna_distributions as to_optuna_distributions
from ..space import Config, Int, Real, Space
from ._base import AbstractProposer, Proposal, check_count


def suggest(trial: optuna.Trial, space: Space) -> Config:
    """Draw a configuration of `space` from an Optuna trial, parents before children.

    Use it inside an ordinary Optuna objective: `config = suggest(trial, space)`.
    """
    config = {}
    for name in space.names:
        if not space.is_active(name, config):
            continue
        dim = space.dims[name]
        if isinstance(dim, Real):
            config[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
        elif isinstance(dim, Int):
            config[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log)
        else:
            config[name] = trial.suggest_categorical(name, dim.choices)
    return config


# Optuna's CMA-ES and GP samplers import these packages when they first sample; say so up
# front rather than fail in the middle of a run.
_NEEDS = {"cmaes": ("cmaes", "cmaes"), "gp": ("torch", "torch")}


def make_sampler(sampler, seed: int | None) -> optuna.samplers.BaseSampler:
    """An Optuna sampler from its short name (or the sampler itself)."""
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return sampler
    if sampler in _NEEDS and importlib.util.find_spec(_NEEDS[sampler][0]) is None:
        module, package = _NEEDS[sampler]
        raise ImportError(
            f"sampler={sampler!r} needs the {module!r} package, which Optuna's sampler "
            f"imports: pip install {package}"
        )
    with warnings.catch_warnings():
        # multivariate TPE and the QMC sampler are flagged experimental by Optuna.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if sampler == "tpe":
            # multivariate + group: TPE models the dimensions of each branch of a
            # conditional space jointly (Optuna's advice for define-by-run trees).
            return optuna.samplers.TPESampler(
                seed=seed,
                constant_liar=True,
                multivariate=True,
                group=True,
            )
        if sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
        if sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        if sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(
        "sampler must be 'tpe', 'gp', 'cmaes', 'nsga2', 'random' or an "
        f"optuna.samplers.BaseSampler, got {sampler!r}"
    )


class OptunaSearch(AbstractProposer):
    """Optuna's samplers (TPE, GP, CMA-ES, NSGA-II, ...) as a batched proposer.

    Args:
      space: the search space.
      sampler: a short name or an Optuna sampler.
      seed: the sampler's seed (ignored when a sampler object is given).
      directions: one `"minimize"` / `"maximize"` per objective (several for NSGA-II).
      study: an Optuna study to ask from (a recorded one, see `hypergrad.records`);
        by default an in-memory study is made on the first `ask`.

    Example:
      >>> from hypergrad.space import Categorical, Real, Space
      >>> from hypergrad.search import OptunaSearch
      >>> space = Space({"act": Categorical(("relu", "tanh")), "lr": Real(1e-3, 1.0, log=True)})
      >>> proposer = OptunaSearch(space, "tpe", seed=0)
      >>> batch = proposer.ask(4)
      >>> proposer.tell(batch, [p.config["lr"] for p in batch])
      >>> len(proposer.study.trials)
      4
    """

    def __init__(
        self,
        space: Space,
        sampler="tpe",
        *,
        seed: int | None = 0,
        directions: Sequence[str] = ("minimize",),
        study: optuna.Study | None = None,
        max_retries: int = 100,
    ):
        if not isinstance(space, Space):
            raise TypeError(f"space must be a hypergrad.space.Space, got {space!r}")
        if isinstance(directions, str):
            directions = (directions,)
        directions = tuple(directions)
        for d in directions:
            if d not in ("minimize", "maximize"):
                raise ValueError(f"directions must hold 'minimize' or 'maximize', got {d!r}")
        if not directions:
            raise ValueError("directions must name at least one objective")
        self.space = space
        self.sampler_name = sampler if isinstance(sampler, str) else type(sampler).__name__
        self.sampler = make_sampler(sampler, seed)
        self.seed = seed
        self.directions = directions
        self.max_retries = max_retries
        self._study = None
        self._trials: dict[int, optuna.Trial] = {}
        if study is not None:
            self.bind(study)

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            with quiet_optuna():
                study = optuna.create_study(
                    directions=list(self.directions), study_name=f"{self.name}-in-memory"
                )
            self.bind(study)
        return self._study

    def attach(self, records) -> None:
        """Ask from the recorded study (see `bind`)."""
        self.bind(records.study)

    def bind(self, study: optuna.Study) -> None:
        """Ask from `study` (whose sampler becomes this proposer's sampler)."""
        if self._study is study:
            return
        if self._study is not None:
            raise ValueError("this OptunaSearch is already bound to another study")
        dirs = tuple(d.name.lower() for d in study.directions)
        if dirs != self.directions:
            raise ValueError(
                f"the study's directions {dirs} differ from the proposer's {self.directions}"
            )
        study.sampler = self.sampler
        self._study = study

    def ask(self, n: int) -> list[Proposal]:
        out = []
        study = self.study
        for _ in range(check_count(n)):
            for _ in range(self.max_retries):
                trial = study.ask()
                # hypergrad's storages record the worker with the trial itself; others
                # get it before anything else, so a restart fails the trial if we die.
                for k, v in worker().items():
                    if k not in trial.user_attrs:
                        trial.set_user_attr(k, v)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    config = suggest(trial, self.space)
                problems = self.space.problems(config)
                if not problems:
                    break
                # Optuna has no forbidden combinations: fail the trial so the sampler
                # learns nothing from it, say why, and ask again.
                trial.set_user_attr(FORBIDDEN_ATTR, "; ".join(problems))
                with quiet_optuna():
                    study.tell(trial, state=TrialState.FAIL)
            else:
                raise ValueError(
                    f"{self.max_retries} proposals in a row hit forbidden combinations"
                )
            self._trials[trial.number] = trial
            out.append(Proposal(config, trial_number=trial.number))
        return out

    def _tell_one(self, proposal, value) -> None:
        number = proposal.trial_number
        if number is None:
            raise ValueError("OptunaSearch can only be told about proposals it made")
        with quiet_optuna():
            if value is None:
                self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            else:
                values = list(value) if isinstance(value, tuple) else value
                self.study.tell(number, values, skip_if_finished=True)
        self._trials.pop(number, None)

    def observe(self, proposal, value) -> None:
        # A trial of the study (`proposal.trial_number`, as `search.run` reads back the
        # records this proposer is attached to) is already Optuna's history. A result
        # from elsewhere (a tuner's round read back from its own records) is added to
        # it, so that the sampler learns from it; one that did not complete is not.
        if proposal.trial_number is not None or value is None:
            return
        dists = to_optuna_distributions(self.space)
        values = list(value) if isinstance(value, tuple) else [value]
        with quiet_optuna():
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=dict(proposal.config),
                    distributions={k: dists[k] for k in proposal.config},
                    values=values,
                )
            )

    def describe(self):
        return {
            "name": self.name,
            "sampler": self.sampler_name,
            "seed": self.seed,
            "directions": list(self.directions),
        }
