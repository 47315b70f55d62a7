"""Workers that stop at a chosen point of a trial, to be killed there:
`python -m tests._records_faults STORAGE STUDY SAMPLER POINT MARKER [...]` (five
arguments per worker).

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

This process imports the library once and forks one worker per five arguments (each
worker a process of its own, as on separate machines, without paying the imports again);
it reaps them as they are killed, and exits 1 (killing the rest) if one of them exits by
itself, which a stopped worker never does.
"""

import os
import signal
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


def fork_workers(argv: list[str]) -> int:
    specs = [argv[i : i + 5] for i in range(0, len(argv), 5)]
    children = {}
    for spec in specs:
        pid = os.fork()
        if pid == 0:  # the worker: run, and never return into the parent's code
            code = 1
            try:
                code = main(spec)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        children[pid] = spec
    failed = 0
    while children:
        pid, status = os.wait()
        spec = children.pop(pid)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            continue  # stopped and killed, as planned
        print(f"worker {spec[3]} (pid {pid}) ended by itself: status {status}", file=sys.stderr)
        failed = 1
        for other in children:
            os.kill(other, signal.SIGKILL)
    return failed


if __name__ == "__main__":
    sys.exit(fork_workers(sys.argv[1:]))
