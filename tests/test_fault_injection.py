"""Workers killed with SIGKILL at every point of a trial, on SQLite and on PostgreSQL; the
study resumed; trials lost, stuck and duplicated counted (each must be zero).

Four workers share a 12-point grid, each stopped at its second arrival at one point
(before `ask`; just after the storage created its trial; inside the objective; inside
`tell`, before the state is written; see `tests/_records_faults.py`), then killed
together. A fifth, on its own study, uses Optuna's TPE sampler and is killed between
Optuna's `ask()` and the first write of an attribute or parameter, where earlier versions
left a `RUNNING` trial with nothing to tell its worker by. A resumed run in this process
must then fail every killed trial, run the grid's points that were not completed
(again, for a killed one), and leave none running and none completed twice.
"""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hypergrad.records import WITHDRAWN_ATTR, Records
from hypergrad.search import GridSearch, OptunaSearch, grid_points, run

from ._records_objectives import FAULT_SPACE, toy
from ._records_postgres import postgres_url, unique

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]
POINTS = ("ask", "create", "objective", "tell")


def _storage(kind, tmp_path):
    return str(tmp_path / "faults.db") if kind == "sqlite" else postgres_url()


def _run_and_kill(specs: dict) -> dict:
    """Start the workers (`{name: (storage, study, sampler, point, marker)}`), wait until
    each has stopped at its point, SIGKILL them all; `{name: pid}`."""
    argv = [str(a) for spec in specs.values() for a in spec]
    forker = subprocess.Popen(
        [sys.executable, "-m", "tests._records_faults", *argv],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    markers = {name: Path(spec[-1]) for name, spec in specs.items()}
    deadline = time.monotonic() + 120
    while not all(m.exists() for m in markers.values()):
        assert forker.poll() is None, f"a worker exited early:\n{forker.stderr.read()}"
        assert time.monotonic() < deadline, "the workers never reached their stopping points"
        time.sleep(0.02)
    pids = {name: int(m.read_text()) for name, m in markers.items()}
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    # The forker reaps them (a zombie would still count as alive) and says how they ended.
    _, err = forker.communicate(timeout=60)
    assert forker.returncode == 0, err
    return pids


def _key(params) -> tuple:
    return tuple(sorted(params.items()))


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_killed_workers_lose_nothing_and_duplicate_nothing(tmp_path, kind):
    storage = _storage(kind, tmp_path)
    grid_study, tpe_study = unique("faults-grid"), unique("faults-tpe")
    Records.open(storage, grid_study)
    Records.open(storage, tpe_study)
    specs = {p: (storage, grid_study, "grid", p, tmp_path / f"stopped-{p}") for p in POINTS}
    specs["tpe-create"] = (storage, tpe_study, "tpe", "create", tmp_path / "stopped-tpe")
    pids = _run_and_kill(specs)

    # What the kills left: each stopped worker completed one trial; three of the grid's
    # workers (not the one stopped before ask) and the TPE worker hold a RUNNING trial.
    records = Records.open(storage, grid_study)
    before = records.trials()
    running = {t.user_attrs["pid"]: t for t in before if t.state == TrialState.RUNNING}
    assert set(running) == {pids["create"], pids["objective"], pids["tell"]}
    assert not running[pids["create"]].intermediate_values
    assert running[pids["tell"]].user_attrs["wall_time_s"] > 0  # stopped inside tell
    done_before = {_key(t.params) for t in before if t.state == TrialState.COMPLETE}

    # Resume: one worker in this process finishes the grid.
    run(toy, GridSearch(FAULT_SPACE, resolution=2), 100, records=records)
    after = records.trials()
    by_number = {t.number: t for t in after}
    stuck = [t.number for t in after if t.state == TrialState.RUNNING]
    complete = Counter(_key(t.params) for t in after if t.state == TrialState.COMPLETE)
    points = {_key(c) for c in grid_points(FAULT_SPACE, resolution=2)}
    lost = points - set(complete)
    duplicated = [k for k, n in complete.items() if n > 1]
    assert (len(lost), len(stuck), len(duplicated)) == (0, 0, 0), (lost, stuck, duplicated)
    assert set(complete) == points and len(points) == 12
    for t in running.values():
        failed = by_number[t.number]
        assert failed.state == TrialState.FAIL
        assert "stopped before it finished" in failed.user_attrs["failed_reason"]
        # Re-proposed: a killed point not completed before the kill ran again after it.
        if _key(t.params) not in done_before:
            (again,) = [
                u
                for u in after
                if u.state == TrialState.COMPLETE and _key(u.params) == _key(t.params)
            ]
            assert again.number > max(u.number for u in before)
    # Claims two workers made at once were withdrawn: hidden, never run, never running.
    withdrawn = [
        t for t in records.study.get_trials(deepcopy=False) if WITHDRAWN_ATTR in t.user_attrs
    ]
    assert all(t.state == TrialState.FAIL and t.values is None for t in withdrawn)

    # TPE: the trial killed between ask() and its first attribute carries its worker from
    # its creation, so the resumed run fails it; none is left running.
    tpe = Records.open(storage, tpe_study)
    (cut,) = [t for t in tpe.trials() if t.state == TrialState.RUNNING]
    assert cut.user_attrs["pid"] == pids["tpe-create"] and cut.params == {}
    run(toy, OptunaSearch(FAULT_SPACE, "tpe", seed=0), 2, records=tpe)
    states = Counter(t.state for t in tpe.trials())
    assert states == {TrialState.COMPLETE: 3, TrialState.FAIL: 1}
    assert "stopped before it finished" in tpe.trial(cut.number).user_attrs["failed_reason"]
    assert os.getpid() not in pids.values()
