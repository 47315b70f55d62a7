"""A worker that stops at a chosen point of a trial, to be killed there:
`python -m tests._records_faults STORAGE STUDY SAMPLER POINT MARKER`.

It runs `hypergrad.search.run` of `toy` on `FAULT_SPACE` (`SAMPLER` is `grid` or an
Optuna sampler name) and, at its second arrival at `POINT`, writes its pid to `MARKER`
and waits to be killed (SIGKILL: no handler runs, as when a machine dies):

- `ask`: before the proposer's `ask` (no trial exists yet);
- `create`: just after the storage created the trial, before any other write to it
  (with Optuna's sampler: between `ask()` and the first attribute or parameter);
- `objective`: inside the objective;
- `tell`: inside `Study.tell` of a finished value, before the state is written (the
  trial's attributes and intermediate values are written already).

The first arrival passes, so each worker completes a trial before it stops.
"""

import os
import sys
import time

import optuna

from hypergrad.records import Records
from hypergrad.records import _storage as storage_module
from hypergrad.search import GridSearch, OptunaSearch, run

from ._records_objectives import FAULT_SPACE, toy

POINTS = ("ask", "create", "objective", "tell")
STOP_AT = 2  # the arrival that stops: the first trial completes
WAIT_S = 120  # a bound, in case the test that should kill this worker died first


class _Stop:
    def __init__(self, marker: str):
        self.marker, self.arrivals = marker, 0

    def __call__(self) -> None:
        self.arrivals += 1
        if self.arrivals == STOP_AT:
            with open(self.marker + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(self.marker + ".tmp", self.marker)  # the test never sees half a file
            time.sleep(WAIT_S)


def _wrap(cls, name, stop, before=True, when=lambda *a, **k: True):
    original = getattr(cls, name)

    def wrapped(*args, **kwargs):
        if before and when(*args, **kwargs):
            stop()
        out = original(*args, **kwargs)
        if not before and when(*args, **kwargs):
            stop()
        return out

    setattr(cls, name, wrapped)


def main(argv: list[str]) -> int:
    storage, study, sampler, point, marker = argv
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stop = _Stop(marker)
    if point == "ask":
        _wrap(GridSearch, "ask", stop)
        _wrap(OptunaSearch, "ask", stop)
    elif point == "create":
        _wrap(storage_module._RDBStorage, "_create_new_trial", stop, before=False)
        _wrap(storage_module._JournalStorage, "create_new_trial", stop, before=False)
    elif point == "objective":
        pass  # the objective itself stops, below
    elif point == "tell":

        def finished(self, trial, values=None, state=None, skip_if_finished=False):
            return values is not None

        _wrap(optuna.study.Study, "tell", stop, when=finished)
    else:
        raise SystemExit(f"POINT must be one of {POINTS}, got {point!r}")

    objective = _stopping(stop) if point == "objective" else toy
    records = Records.open(storage, study)
    proposer = (
        GridSearch(FAULT_SPACE, resolution=2)
        if sampler == "grid"
        else OptunaSearch(FAULT_SPACE, sampler, seed=os.getpid())
    )
    run(objective, proposer, 100, records=records)
    return 0


def _stopping(stop):
    def objective(config, *, seed):
        stop()
        return toy(config, seed=seed)

    return objective


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
