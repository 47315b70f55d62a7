"""Studies on PostgreSQL: four `hypergrad worker` processes complete a 40-point grid with
every point recorded once; the storage URL's password appears in no trial attribute, log
line, report or error message; the password may come from PGPASSWORD or a .pgpass file;
read-only opens write nothing.

The server is the one `.ci/run` starts (`tests/_records_postgres.py`); without one these
tests skip and say why.
"""

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hypergrad.cli import main
from hypergrad.records import (
    WITHDRAWN_ATTR,
    Records,
    RecordsError,
    StorageError,
    StudyNotFoundError,
    mask_secrets,
)
from hypergrad.search import grid_points

from ._records_objectives import GRID40_SPACE, toy_value
from ._records_postgres import password, postgres_url, schema, unique

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]
WORKERS = 4


@pytest.fixture(scope="module")
def four_workers(tmp_path_factory):
    """Four workers start together on a new schema (they race to create Optuna's tables),
    join one study (the URL carries the password) and split a 40-point grid; each holds
    its first trial until all four have one running."""
    with schema(postgres_url()) as (url, _, _):
        yield _run_four_workers(url, tmp_path_factory)


def _run_four_workers(url, tmp_path_factory):
    gate = tmp_path_factory.mktemp("gate")
    study = unique("four-workers")
    argv = [
        "worker", url, study,
        "--space", "tests._records_objectives:GRID40_SPACE",
        "--objective", "tests._records_objectives:gated_toy",
        "--sampler", "grid",
    ]  # fmt: skip
    env = {"HG_READY_DIR": str(gate), "HG_GO": str(gate / "go")}
    out = tmp_path_factory.mktemp("out")
    # `hypergrad worker ...` in four processes (forked after one import; see the module).
    forker = subprocess.Popen(
        [sys.executable, "-m", "tests._records_fork", str(WORKERS), str(out), *argv],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def outputs():
        return [
            ((out / f"out-{i}").read_text(), (out / f"err-{i}").read_text())
            for i in range(WORKERS)
            if (out / f"err-{i}").exists()
        ]

    deadline = time.monotonic() + 120
    while len([p for p in gate.iterdir() if p.name != "go"]) < WORKERS:
        assert forker.poll() is None, (forker.communicate(), outputs())
        assert time.monotonic() < deadline, ("the workers never all started a trial", outputs())
        time.sleep(0.02)
    (gate / "go").touch()
    codes, err = forker.communicate(timeout=300)
    assert forker.returncode == 0, (codes, err, outputs())
    pids = [int(pc.split(":")[0]) for pc in codes.split()]
    return url, study, pids, outputs()


def test_four_workers_complete_a_40_point_grid_once(four_workers):
    url, study, pids, outputs = four_workers
    records = Records.open(url, study, read_only=True)
    trials = records.trials()
    points = {json.dumps(c, sort_keys=True) for c in grid_points(GRID40_SPACE, 5)}
    assert len(points) == 40
    done = Counter(json.dumps(t.params, sort_keys=True) for t in trials)
    # Every point once, every trial complete with its value, nothing left running.
    assert set(done) == points and set(done.values()) == {1}
    assert len(trials) == 40
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(t.value == toy_value(t.params) for t in trials)
    # Trial numbers are the storage's: distinct, and the withdrawn claims (two workers
    # on one point at once) fill the gaps, hidden from the records.
    everything = records.study.get_trials(deepcopy=False)
    assert sorted(t.number for t in everything) == list(range(len(everything)))
    withdrawn = [t for t in everything if WITHDRAWN_ATTR in t.user_attrs]
    assert len(withdrawn) + 40 == len(everything)
    assert all(t.state == TrialState.FAIL for t in withdrawn)
    # The grid was split: every worker ran points, together 40.
    per_worker = Counter(t.user_attrs["pid"] for t in trials)
    assert set(per_worker) == set(pids) and sum(per_worker.values()) == 40
    for out, _ in outputs:
        assert "the grid is done" in out


def _all_text(records) -> str:
    study = records.study
    system = records.storage.get_study_system_attrs(records._study_id)
    parts = [json.dumps(study.user_attrs), json.dumps(system, default=str)]
    for t in study.get_trials(deepcopy=False):
        parts += [json.dumps(t.user_attrs, default=str), json.dumps(t.system_attrs, default=str)]
        parts += [json.dumps(t.params, default=str)]
    return "\n".join(parts)


def test_no_password_in_records_logs_reports_or_errors(four_workers, capsys, tmp_path):
    url, study, _, outputs = four_workers
    secret = password(url)
    assert len(secret) >= 8, "the test database's URL must carry a password"
    masked = mask_secrets(url)
    assert secret not in masked and ":***@" in masked

    # Records: every attribute of the study and its trials; the command line is there,
    # with the URL masked.
    records = Records.open(url, study, read_only=True)
    assert secret not in _all_text(records)
    commands = {t.user_attrs["command"] for t in records.trials()}
    assert all(masked in c for c in commands), commands
    # Log lines: what the workers printed (stdout and stderr) names the storage, masked.
    for out, err in outputs:
        assert secret not in out + err
        assert masked in out

    # Reports and errors, by the command line.
    assert main(["report", url, "--study", study, "--no-plots"]) == 0
    assert main(["report", url, "--study", "no-such-study"]) == 2
    assert main(["reproduce", url, "--study", study, "--trial", "999"]) == 2
    wrong = url.replace(f":{secret}@", ":not-the-password@")
    assert main(["report", wrong, "--study", study]) == 2
    assert main(["worker", url, study, "--space", "tests._records_objectives:NOPE"]) == 2
    text = capsys.readouterr()
    assert secret not in text.out + text.err and "not-the-password" not in text.err
    assert f"study {study!r} in {masked!r}: 40 trials" in text.out
    assert f"no study named 'no-such-study' in {masked!r}" in text.err
    assert "password authentication failed" in text.err

    # Errors raised by the library: the message names the storage, masked.
    with pytest.raises(StudyNotFoundError) as e:
        Records.open(url, "no-such-study", create=False)
    assert masked in str(e.value) and secret not in str(e.value)
    with pytest.raises(StorageError) as e:
        Records.open(wrong, study)
    assert "not-the-password" not in str(e.value) and "***" in str(e.value)


def test_password_from_the_environment_or_a_pgpass_file(tmp_path, monkeypatch):
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url())
    bare = f"postgresql://{url.username}@{url.host}:{url.port}/{url.database}"
    study = unique("pgpass")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "missing"))
    with pytest.raises(StorageError, match="password"):
        Records.open(bare, study)
    monkeypatch.setenv("PGPASSWORD", url.password)
    Records.open(bare, study)
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{url.host}:{url.port}:{url.database}:{url.username}:{url.password}\n")
    pgpass.chmod(0o600)  # libpq ignores a file others can read
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    assert Records.open(bare, study, read_only=True).name == study


def test_read_only_writes_nothing_on_postgres(tmp_path):
    url = postgres_url()
    study = unique("read-only")
    Records.open(url, study)
    records = Records.open(url, study, read_only=True)
    with pytest.raises(RecordsError, match="opened read-only"):
        records.start({"x": 1.0})
    # Below the library, the session itself refuses to write.
    with pytest.raises(optuna.exceptions.StorageInternalError) as e:
        records.storage.set_study_user_attr(records._study_id, "x", 1)
    assert "read-only transaction" in str(e.value.__cause__)
    # A database without Optuna's tables is refused, and gets none: an empty schema.
    import sqlalchemy

    with schema(url) as (in_schema, name, engine):
        with pytest.raises(StorageError, match="no Optuna tables"):
            Records.open(in_schema, study, read_only=True)
        with engine.begin() as con:
            tables = con.execute(
                sqlalchemy.text(
                    "select count(*) from information_schema.tables where table_schema = :s"
                ),
                {"s": name},
            ).scalar()
    assert tables == 0
