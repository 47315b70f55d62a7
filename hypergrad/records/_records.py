"""Records of runs: every trial is an Optuna trial in an Optuna study in an Optuna storage.

Interface:

    records = Records.open("runs.db", "ridge")            # created, or continued
    outcome = record_trial(records, objective, config, seed=0)   # run and record one trial
    reproduce("runs.db", "ridge", trial=0)                # re-run it from its record

An objective is a module-level function `objective(config, *, seed[, budget]) -> value`
(`budget` is passed only when the trial has one). The value is a float, a sequence of
floats (several objectives), or an `Outcome` that adds the intermediate values (for a
gradient-based run, the validation loss at each outer step), the number of inner solves
and extra attributes.

What a trial holds: its configuration as Optuna parameters (inactive conditional
dimensions absent) with their distributions; its value(s); its intermediate values; and
as user attributes `seed`, `budget`, `objective` (the importable reference
`"package.module:function"`), `proposer` and `proposal_info`, `kind` (`"black-box"` or
`"gradient"`), `wall_time_s`, `inner_solves`, `format`, the library versions, device, CPU,
host, pid, git commit of the objective's repository, and the command
(`hypergrad.records.environment`). Nothing else is needed to re-run it, so Optuna's own
tools (optuna-dashboard, `optuna.visualization`, `optuna.importance`) read these studies
as they read any other.

Invariants: a trial of a built-in proposer is created with its configuration and
attributes in one storage write (its seed, derived from the number the storage assigns,
follows in a second; `run_seed` is in the first); a trial an Optuna sampler made gets
its worker and host first, then its parameters and attributes one write at a time, as
Optuna's API gives them. A trial becomes `COMPLETE` only in its last write, with its values, so a
worker killed on the way leaves a `RUNNING` trial, never a completed one with missing
parts; `Records.open` marks such trials of dead local workers `FAIL` and the study goes
on. Trial numbers come from the storage, so workers sharing a study never duplicate one.
"""

import importlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.trial import TrialState

from ._distributions import to_optuna_distributions
from ._environment import environment
from ._storage import (
    IncompatibleRecordError,
    RecordsError,
    StorageError,
    StudyNotFoundError,
    describe_storage,
    open_storage,
    translate,
)

FORMAT = 1  # of the attributes above; a reader refuses records from a later format
FORMAT_ATTR = "hypergrad.format"
FORBIDDEN_ATTR = "hypergrad.forbidden"
# False on a trial whose re-run may differ in the last bits even on the same machine.
EXACT_ATTR = "hypergrad.exact_rerun"


class Outcome(NamedTuple):
    """What one run of an objective produced.

    Attributes:
      value: a float, or a tuple of floats for several objectives; `None` if it failed.
      intermediate: values along the run (the validation loss at each outer step).
      inner_solves: how many inner problems the run solved.
      attrs: more JSON-serializable facts to record (the hyperparameters found, say).
    """

    value: float | tuple[float, ...] | None
    intermediate: tuple[float, ...] = ()
    inner_solves: int = 0
    attrs: Mapping[str, Any] = {}


def _as_value(value):
    if value is None:
        return None
    arr = np.asarray(value, np.float64)
    if arr.ndim == 0:
        return float(arr)
    if arr.ndim == 1 and arr.size:
        return tuple(float(v) for v in arr)
    raise TypeError(f"an objective's value must be a number or a 1-d sequence, got {value!r}")


def as_outcome(result) -> Outcome:
    """An `Outcome` from what an objective returned."""
    if isinstance(result, Outcome):
        return Outcome(
            _as_value(result.value),
            tuple(float(v) for v in np.asarray(result.intermediate, np.float64).reshape(-1)),
            int(result.inner_solves),
            dict(result.attrs),
        )
    return Outcome(_as_value(result))


def _finite(value) -> bool:
    if value is None:
        return False
    vals = value if isinstance(value, tuple) else (value,)
    return all(math.isfinite(v) for v in vals)


# -- objectives by reference -----------------------------------------------------------


def reference(fn: Callable) -> str | None:
    """`"module:qualname"` if `fn` can be imported back by that name, else `None`."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    if module == "__main__":
        spec = getattr(importlib.import_module("__main__"), "__spec__", None)
        if spec is None:  # a script run by path: its name does not import
            return None
        module = spec.name
    ref = f"{module}:{qualname}"
    try:
        return ref if resolve(ref) is fn else None
    except RecordsError:
        return None


def resolve(ref: str) -> Callable:
    """Import the objective `"package.module:function"` (nested names allowed)."""
    module, _, qualname = ref.partition(":")
    if not module or not qualname:
        raise RecordsError(f"objective reference must be 'module:function', got {ref!r}")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise RecordsError(f"cannot import the objective {ref!r}: {e}") from None
    return obj


def call_objective(fn: Callable, config, seed: int, budget) -> tuple[Outcome, float]:
    """Run `fn` once; return its outcome and the wall time in seconds."""
    start = time.perf_counter()
    if budget is None:
        result = fn(dict(config), seed=seed)
    else:
        result = fn(dict(config), seed=seed, budget=budget)
    outcome = as_outcome(result)
    # Values may be lazy JAX arrays; as_outcome made them Python floats, so the clock
    # stops after the computation has finished.
    return outcome, time.perf_counter() - start


def trial_seed(run_seed: int, number: int) -> int:
    """The seed of trial `number` of a run started with `run_seed` (32 bits)."""
    return int(np.random.SeedSequence([int(run_seed), int(number)]).generate_state(1)[0])


# -- the study -------------------------------------------------------------------------


class Records:
    """An Optuna study holding hypergrad's trials; make one with `Records.open`.

    Attributes:
      study: the `optuna.Study` (give it to Optuna's tools unchanged).
      storage: its `optuna.storages.BaseStorage`.
      name: the study name.
    """

    def __init__(self, study: optuna.Study, storage, where: str):
        self.study = study
        self.storage = storage
        self.name = study.study_name
        self.where = where
        self._study_id = storage.get_study_id_from_name(self.name)

    @classmethod
    def open(
        cls,
        storage=None,
        study: str | None = None,
        *,
        directions: Sequence[str] = ("minimize",),
        create: bool = True,
    ) -> "Records":
        """Open a study, creating it if `create` and it does not exist; see `open_storage`.

        Raises:
          StorageError: the storage cannot be opened or read.
          StudyNotFoundError: `create=False` and there is no such study (the message
            lists the studies there).
          IncompatibleRecordError: the study was written by a later record format, or
            has other directions than asked for.
        """
        if isinstance(directions, str):
            directions = (directions,)
        if not directions or any(d not in ("minimize", "maximize") for d in directions):
            raise ValueError(
                f"directions must be 'minimize' or 'maximize' for each objective, got "
                f"{directions!r}"
            )
        # Workers started together on a new SQLite file race to create its tables and
        # the study; the loser sees "already exists" or a lock, and simply tries again.
        for attempt in range(3):
            try:
                return cls._open(storage, study, tuple(directions), create)
            except StorageError as e:
                if attempt == 2 or not any(w in str(e) for w in ("already exists", "locked")):
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    @classmethod
    def _open(cls, storage, study, directions, create) -> "Records":
        where = describe_storage(storage)
        st = open_storage(storage, must_exist=not create)
        try:
            if create:
                s = optuna.create_study(
                    storage=st,
                    study_name=study,
                    directions=list(directions),
                    load_if_exists=True,
                    sampler=optuna.samplers.RandomSampler(),
                )
            else:
                s = _load(st, study, where)
            attrs = s.user_attrs
        except RecordsError:
            raise
        except (KeyError, ValueError, RuntimeError, OSError) as e:
            raise translate(e, where) from None
        except Exception as e:  # SQLAlchemy's errors, without importing SQLAlchemy here
            if type(e).__module__.startswith("sqlalchemy"):
                raise translate(e, where) from None
            raise
        fmt = attrs.get(FORMAT_ATTR)
        if fmt is None and create and not s.get_trials(deepcopy=False):
            s.set_user_attr(FORMAT_ATTR, FORMAT)
        elif fmt is not None and (not isinstance(fmt, int) or fmt > FORMAT):
            raise IncompatibleRecordError(
                f"study {s.study_name!r} in {where} has record format {fmt!r}; this hypergrad "
                f"reads formats up to {FORMAT}: upgrade hypergrad to read it"
            )
        got = tuple(d.name.lower() for d in s.directions)
        if create and got != tuple(directions):
            raise IncompatibleRecordError(
                f"study {s.study_name!r} in {where} has directions {got}, not {tuple(directions)}"
            )
        return cls(s, st, where)

    # -- writing -------------------------------------------------------------------

    def start(
        self,
        config: Mapping[str, Any],
        *,
        space=None,
        seed: int | None = None,
        run_seed: int = 0,
        budget=None,
        objective: str | None = None,
        proposer: Mapping | None = None,
        proposal_info: Mapping | None = None,
        kind: str = "black-box",
        trial_number: int | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> tuple[int, int]:
        """Create a `RUNNING` trial holding everything needed to re-run it; `(number, seed)`.

        With `trial_number`, the trial exists already (an Optuna sampler made it) and only
        the attributes are added. `seed=None` takes `trial_seed(run_seed, number)`.
        """
        source = None
        if objective:
            mod = importlib.import_module(objective.partition(":")[0])
            source = getattr(mod, "__file__", None)
        env = environment(source)
        user_attrs = {
            # Who runs it first: with these, a restart can tell a dead worker's trial.
            "host": env["host"],
            "pid": os.getpid(),
            FORMAT_ATTR: FORMAT,
            "format": FORMAT,
            "run_seed": int(run_seed),
            "objective": objective,
            "budget": budget,
            "proposer": dict(proposer or {}),
            "proposal_info": dict(proposal_info or {}),
            "kind": kind,
            **env,
            **dict(attrs or {}),
        }
        if trial_number is None:
            dists = {} if space is None else to_optuna_distributions(space)
            if space is not None:
                config = space.validate(config)
            params = dict(config)
            template = optuna.trial.create_trial(
                state=TrialState.RUNNING,
                params=params,
                distributions={k: dists.get(k) or _guess(v) for k, v in params.items()},
                user_attrs=user_attrs if seed is None else {**user_attrs, "seed": int(seed)},
            )
            trial_id = self.storage.create_new_trial(self._study_id, template_trial=template)
            number = self.storage.get_trial_number_from_id(trial_id)
            if seed is None:
                seed = trial_seed(run_seed, number)
                self.storage.set_trial_user_attr(trial_id, "seed", int(seed))
        else:
            number = trial_number
            trial_id = self._trial_id(number)
            if seed is None:
                seed = trial_seed(run_seed, number)
            for k, v in {**user_attrs, "seed": int(seed)}.items():
                self.storage.set_trial_user_attr(trial_id, k, v)
        return number, int(seed)

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    def finish(self, number: int, outcome: Outcome, wall_time_s: float) -> None:
        """Write the outcome; `COMPLETE` if its value is finite, else `FAIL`."""
        trial_id = self._trial_id(number)
        for step, v in enumerate(outcome.intermediate):
            self.storage.set_trial_intermediate_value(trial_id, step, v)
        attrs = {
            "wall_time_s": float(wall_time_s),
            "inner_solves": int(outcome.inner_solves),
            **{f"result.{k}": v for k, v in outcome.attrs.items()},
        }
        for k, v in attrs.items():
            self.storage.set_trial_user_attr(trial_id, k, _jsonable(v))
        if _finite(outcome.value):
            v = list(outcome.value) if isinstance(outcome.value, tuple) else outcome.value
            self.study.tell(number, v, skip_if_finished=True)
        else:
            self.storage.set_trial_user_attr(
                trial_id, "failed_reason", f"non-finite value {outcome.value!r}"
            )
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def annotate(self, number: int, **attrs: Any) -> None:
        """Add JSON-serializable attributes to trial `number` (what became known late)."""
        trial_id = self._trial_id(number)
        for k, v in attrs.items():
            self.storage.set_trial_user_attr(trial_id, k, _jsonable(v))

    def fail(self, number: int, reason: str) -> None:
        self.storage.set_trial_user_attr(self._trial_id(number), "failed_reason", reason)
        self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def fail_stale(self) -> list[int]:
        """Mark `FAIL` the running trials of workers on this host that no longer exist.

        Such a trial was cut off (the worker was killed); its inputs are intact, its value
        never came. Workers on other hosts cannot be checked from here and are left alone.
        Returns the trial numbers marked.
        """
        host = environment()["host"]
        marked = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = t.user_attrs.get("pid")
            if t.user_attrs.get("host") != host or not isinstance(pid, int):
                continue
            if pid != os.getpid() and not _alive(pid):
                self.fail(t.number, f"worker pid {pid} on {host} stopped before it finished")
                marked.append(t.number)
        return marked

    # -- reading -------------------------------------------------------------------

    def trials(self, states=None) -> list[optuna.trial.FrozenTrial]:
        """The study's trials, without Optuna's failed proposals of forbidden combinations."""
        return [
            t
            for t in self.study.get_trials(deepcopy=False, states=states)
            if FORBIDDEN_ATTR not in t.user_attrs
        ]

    def trial(self, number: int) -> optuna.trial.FrozenTrial:
        trials = self.study.get_trials(deepcopy=False)
        if not isinstance(number, int) or not 0 <= number < len(trials):
            raise RecordsError(
                f"study {self.name!r} in {self.where} has no trial {number!r} "
                f"(it has trials 0 to {len(trials) - 1})"
            )
        return trials[number]


def _load(storage, name, where) -> optuna.Study:
    names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
    if name is None:
        if len(names) == 1:
            name = names[0]
        else:
            raise StudyNotFoundError(
                f"{where} holds {len(names)} studies; name one with --study: "
                + (", ".join(repr(n) for n in names) or "(none)")
            )
    if name not in names:
        raise StudyNotFoundError(
            f"no study named {name!r} in {where}; studies there: "
            + (", ".join(repr(n) for n in names) or "(none)")
        )
    return optuna.load_study(study_name=name, storage=storage)


def _guess(value):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    # Without a space, a value records as a one-point distribution of its own type, which
    # Optuna stores faithfully; a space gives the real ranges.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return CategoricalDistribution((value,))
    if isinstance(value, int):
        return IntDistribution(value, value)
    return FloatDistribution(value, value)


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def record_trial(
    records: Records,
    objective: Callable,
    config: Mapping[str, Any],
    *,
    seed: int | None = None,
    run_seed: int = 0,
    budget=None,
    space=None,
    kind: str = "black-box",
    proposer: Mapping | None = None,
    proposal_info: Mapping | None = None,
    trial_number: int | None = None,
) -> tuple[int, Outcome]:
    """Run `objective` on `config` and record the trial; `(trial number, outcome)`.

    If the objective raises, the trial is marked `FAIL` with the error as
    `failed_reason`, and the error propagates.

    Example:
      >>> import optuna
      >>> from hypergrad.records import Outcome, Records, record_trial
      >>> def descent(config, *, seed):
      ...     losses = [config["x"] / (k + 1) for k in range(3)]
      ...     return Outcome(losses[-1], intermediate=losses, inner_solves=3)
      >>> records = Records.open(optuna.storages.InMemoryStorage(), "demo")
      >>> number, outcome = record_trial(records, descent, {"x": 3.0}, seed=7, kind="gradient")
      >>> t = records.trial(number)
      >>> t.value, t.intermediate_values, t.user_attrs["seed"], t.user_attrs["inner_solves"]
      (1.0, {0: 3.0, 1: 1.5, 2: 1.0}, 7, 3)
    """
    ref = reference(objective)
    number, seed = records.start(
        config,
        space=space,
        seed=seed,
        run_seed=run_seed,
        budget=budget,
        objective=ref,
        proposer=proposer,
        proposal_info=proposal_info,
        kind=kind,
        trial_number=trial_number,
    )
    try:
        outcome, wall = call_objective(objective, config, seed, budget)
    except BaseException as e:
        records.fail(number, f"{type(e).__name__}: {e}")
        raise
    records.finish(number, outcome, wall)
    return number, outcome
