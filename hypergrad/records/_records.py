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
git commit of the objective's repository, the command (`hypergrad.records.environment`,
URL passwords masked), and its worker: `host`, `pid`, `pid_start`. Nothing else is
needed to re-run it, so Optuna's own tools (optuna-dashboard, `optuna.visualization`,
`optuna.importance`) read these studies as they read any other (a claim withdrawn by a
grid worker shows there as a `FAIL` trial with `hypergrad.withdrawn`).

Invariants: a trial of a built-in proposer is created with its configuration and
attributes in one storage write (its seed, derived from the number the storage assigns,
follows in a second; `run_seed` is in the first); a trial an Optuna sampler made carries
its worker's host and pid from its creation (`open_storage` sees to it, whoever calls
Optuna's `ask`), then gets its parameters and attributes one write at a time, as Optuna's
API gives them. A trial becomes `COMPLETE` only in its last write, with its values, so a
worker killed on the way leaves a `RUNNING` trial, never a completed one with missing
parts; `fail_stale` (called on resume by `search.run` and `tune`) marks such trials of
dead local workers `FAIL`, and those with no worker at all once they are
`ORPHAN_AFTER_S` old, and the study goes on. Trial numbers come from the storage, so
workers sharing a study never duplicate one; a proposal that must run once per study
(a grid point) carries a `claim`, and of the trials claiming it only the first is run.

Studies are named (`hypergrad-DATE-TIME-RANDOM` when no name is given) and Optuna's
INFO lines about them ("A new study created", "Trial 3 finished") are kept out of the
user's output while hypergrad writes; what hypergrad has to say goes to its own logs.
A study opened `read_only=True` is never written (see `open_storage`).
"""

import contextlib
import datetime
import importlib
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.trial import TrialState

from ._distributions import to_optuna_distributions
from ._environment import (
    HOST_ATTR,
    PID_ATTR,
    PID_START_ATTR,
    environment,
    process_start,
    worker,
)
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
# What a trial claims to run once per study (a grid point), and why a claim was dropped.
CLAIM_ATTR = "hypergrad.claim"
WITHDRAWN_ATTR = "hypergrad.withdrawn"
# A RUNNING trial without a worker was cut off between its creation and its first
# attributes by a writer that does not record them at once (plain Optuna, or a storage
# object the user opened); that window is one storage round trip, so a trial still
# without a worker after this long has none, and is failed on resume.
ORPHAN_AFTER_S = 300.0


_OPEN_ATTEMPTS = 4
_RACES = ("already exists", "locked", "duplicate key")


class ClaimTakenError(RecordsError):
    """Another trial holds the claim of the proposal: this one was withdrawn, not run."""

    def __init__(self, message: str, number: int, holder: int):
        super().__init__(message)
        self.number, self.holder = number, holder


@contextlib.contextmanager
def quiet_optuna():
    """Optuna's INFO lines off (warnings stay) while hypergrad writes its own records.

    A quieter level the user set is kept; the level is restored afterwards.
    """
    logger = logging.getLogger("optuna")
    level = logger.level
    if level < logging.WARNING:  # NOTSET included
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


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

    def __init__(self, study: optuna.Study, storage, where: str, read_only: bool = False):
        self.study = study
        self.storage = storage
        self.name = study.study_name
        self.where = where
        self.read_only = read_only
        self._study_id = storage.get_study_id_from_name(self.name)

    @classmethod
    def open(
        cls,
        storage=None,
        study: str | None = None,
        *,
        directions: Sequence[str] = ("minimize",),
        create: bool = True,
        read_only: bool = False,
    ) -> "Records":
        """Open a study, creating it if `create` and it does not exist; see `open_storage`.

        `read_only=True` (implies `create=False`) opens it without writing anything, ever:
        the writing methods raise `RecordsError`. Without a `study` name, a new study is
        named `hypergrad-YYYYmmdd-HHMMSS-XXXXXX` (or the storage's only study is read).

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
        if read_only:
            create = False
        if study is None and create:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            study = f"hypergrad-{stamp}-{uuid.uuid4().hex[:6]}"
        # Workers started together on a new storage race to create its tables and the
        # study; the loser sees "already exists", a lock, or (PostgreSQL creating a
        # table's type twice) a duplicate key, and simply tries again.
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                return cls._open(storage, study, tuple(directions), create, read_only)
            except StorageError as e:
                if attempt == _OPEN_ATTEMPTS - 1 or not any(w in str(e) for w in _RACES):
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    @classmethod
    def _open(cls, storage, study, directions, create, read_only) -> "Records":
        where = describe_storage(storage)
        st = open_storage(storage, must_exist=not create, read_only=read_only)
        try:
            if create:
                with quiet_optuna():
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
        except optuna.exceptions.StorageInternalError as e:
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
        return cls(s, st, where, read_only)

    def _writable(self) -> None:
        if self.read_only:
            raise RecordsError(
                f"study {self.name!r} in {self.where} was opened read-only; open it with "
                "read_only=False to write"
            )

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
        claim: str | None = None,
    ) -> tuple[int, int]:
        """Create a `RUNNING` trial holding everything needed to re-run it; `(number, seed)`.

        With `trial_number`, the trial exists already (an Optuna sampler made it) and only
        the attributes are added. `seed=None` takes `trial_seed(run_seed, number)`.
        With `claim`, the trial holds it (`CLAIM_ATTR`) from its first write; see `holder`.
        """
        self._writable()
        source = None
        if objective:
            mod = importlib.import_module(objective.partition(":")[0])
            source = getattr(mod, "__file__", None)
        env = environment(source)
        user_attrs = {
            # Who runs it first: with these, a restart can tell a dead worker's trial.
            **worker(),
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
        if claim is not None:
            user_attrs[CLAIM_ATTR] = claim
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

    def holder(self, claim: str) -> int | None:
        """The number of the first live trial (running or complete) holding `claim`.

        Trials are numbered in the order the storage created them (SQLite and the
        journal write one at a time; Optuna's RDB storage locks the study to number a
        trial), so every worker that reads after its own trial was created agrees on
        which claim came first.
        """
        holders = [
            t.number
            for t in self.trials(states=(TrialState.RUNNING, TrialState.COMPLETE))
            if t.user_attrs.get(CLAIM_ATTR) == claim
        ]
        return min(holders, default=None)

    def withdraw(self, number: int, reason: str) -> None:
        """Fail trial `number` as never run (hidden from `trials`), saying why."""
        self._writable()
        self.storage.set_trial_user_attr(self._trial_id(number), WITHDRAWN_ATTR, reason)
        with quiet_optuna():
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def finish(self, number: int, outcome: Outcome, wall_time_s: float, annotations=None) -> None:
        """Write the outcome, and `annotations` (attributes, as `annotate` writes them)
        with it; `COMPLETE` if its value is finite, else `FAIL`."""
        self._writable()
        trial_id = self._trial_id(number)
        intermediate = dict(enumerate(outcome.intermediate))
        attrs = {
            **{k: _jsonable(v) for k, v in dict(annotations or {}).items()},
            "wall_time_s": float(wall_time_s),
            "inner_solves": int(outcome.inner_solves),
            **{f"result.{k}": _jsonable(v) for k, v in outcome.attrs.items()},
        }
        write = getattr(self.storage, "write_trial", None)  # one transaction (RDB)
        if write is not None:
            write(trial_id, intermediate, attrs)
        else:
            for step, v in intermediate.items():
                self.storage.set_trial_intermediate_value(trial_id, step, v)
            for k, v in attrs.items():
                self.storage.set_trial_user_attr(trial_id, k, v)
        if _finite(outcome.value):
            v = list(outcome.value) if isinstance(outcome.value, tuple) else outcome.value
            with quiet_optuna():
                self.study.tell(number, v, skip_if_finished=True)
        else:
            self.storage.set_trial_user_attr(
                trial_id, "failed_reason", f"non-finite value {outcome.value!r}"
            )
            with quiet_optuna():
                self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def annotate(self, number: int, **attrs: Any) -> None:
        """Add JSON-serializable attributes to trial `number` (what became known late)."""
        self._writable()
        trial_id = self._trial_id(number)
        for k, v in attrs.items():
            self.storage.set_trial_user_attr(trial_id, k, _jsonable(v))

    def fail(self, number: int, reason: str) -> None:
        self._writable()
        self.storage.set_trial_user_attr(self._trial_id(number), "failed_reason", reason)
        with quiet_optuna():
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def fail_stale(self, orphan_after_s: float = ORPHAN_AFTER_S) -> list[int]:
        """Mark `FAIL` the running trials whose worker is gone; the numbers marked.

        A trial of a worker on this host whose process no longer exists was cut off (the
        worker was killed): its inputs are intact, its value never came. A trial with no
        worker at all (created by a writer that records none, and cut off before it
        could) is failed once it is `orphan_after_s` seconds old. Workers on other hosts
        cannot be checked from here and are left alone.
        """
        self._writable()
        me = worker()
        marked = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid, host = t.user_attrs.get(PID_ATTR), t.user_attrs.get(HOST_ATTR)
            if pid is None and host is None:
                age = _age_s(t.datetime_start)
                if age is not None and age >= orphan_after_s:
                    self.fail(
                        t.number,
                        f"no worker recorded and still running {age:.0f} s after its start "
                        f"(more than {orphan_after_s:g} s): cut off before its first attributes",
                    )
                    marked.append(t.number)
                continue
            if host != me[HOST_ATTR] or not isinstance(pid, int):
                continue
            if not _same_process_alive(pid, t.user_attrs.get(PID_START_ATTR), me):
                self.fail(t.number, f"worker pid {pid} on {host} stopped before it finished")
                marked.append(t.number)
        return marked

    # -- reading -------------------------------------------------------------------

    def trials(self, states=None) -> list[optuna.trial.FrozenTrial]:
        """The study's trials, without Optuna's failed proposals of forbidden combinations
        and without withdrawn claims (neither ever ran)."""
        return [
            t
            for t in self.study.get_trials(deepcopy=False, states=states)
            if FORBIDDEN_ATTR not in t.user_attrs and WITHDRAWN_ATTR not in t.user_attrs
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
    if not names:
        raise StudyNotFoundError(f"{where} holds no study")
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


def _age_s(start: datetime.datetime | None) -> float | None:
    if start is None:
        return None
    # The RDB storages keep naive local times, the journal aware UTC ones.
    now = datetime.datetime.now(start.tzinfo)
    return (now - start).total_seconds()


def _same_process_alive(pid: int, started: str | None, me: dict) -> bool:
    """Whether the process that wrote `pid` (started at `started`) still runs here."""
    if started is not None:
        # The pid may have been handed to another process since (this one, even).
        return process_start(pid) == started
    return pid == me[PID_ATTR] or _alive(pid)


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
    claim: str | None = None,
) -> tuple[int, Outcome]:
    """Run `objective` on `config` and record the trial; `(trial number, outcome)`.

    If the objective raises, the trial is marked `FAIL` with the error as
    `failed_reason`, and the error propagates. With `claim`, the objective runs only if
    this trial is the first live one holding the claim (`Records.holder`); otherwise the
    trial is withdrawn and `ClaimTakenError` raised, before any work.

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
        claim=claim,
    )
    if claim is not None:
        holder = records.holder(claim)
        if holder != number:
            records.withdraw(number, f"trial {holder} claimed {claim!r} first")
            raise ClaimTakenError(
                f"trial {number} withdrawn: trial {holder} claimed {claim!r} first",
                number,
                holder,
            )
    try:
        outcome, wall = call_objective(objective, config, seed, budget)
    except BaseException as e:
        records.fail(number, f"{type(e).__name__}: {e}")
        raise
    records.finish(number, outcome, wall)
    return number, outcome
