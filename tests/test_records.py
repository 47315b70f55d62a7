"""Records: what a trial holds, workers sharing a study, killed workers, clear errors,
Optuna's own tools on the studies, and re-running a trial from its record."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jax
import jaxlib
import numpy as np
import optax
import optuna
import pytest
from optuna.trial import TrialState

import hypergrad
from hypergrad.records import (
    FORMAT,
    IncompatibleRecordError,
    Outcome,
    Records,
    RecordsError,
    StorageError,
    StudyNotFoundError,
    record_trial,
    reproduce,
    trial_seed,
    worker,
)
from hypergrad.search import ASHA, OptunaSearch, RandomSearch, run

from ._records_objectives import (
    RIDGE_SPACE,
    TOY_SPACE,
    failing,
    ridge_gradient,
    toy,
    toy_budgeted,
    toy_value,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]
STORAGES = {"sqlite": "runs.db", "journal": "runs.log"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A SQLite study with 12 random-search trials and a journal study with a
    gradient-based trial, made once for the module."""
    d = tmp_path_factory.mktemp("recorded")
    rs = Records.open(d / "runs.db", "toy")
    result = run(toy, RandomSearch(TOY_SPACE, seed=3), 12, records=rs, batch_size=4, seed=11)
    rg = Records.open(d / "runs.log", "ridge")
    config = {"alpha0": 20.0, "outer_lr": 0.2, "steps": 15}
    number, outcome = record_trial(
        rg, ridge_gradient, config, space=RIDGE_SPACE, kind="gradient", seed=4
    )
    return d, result, number, outcome


# -- what a trial holds ---------------------------------------------------------------


def _is_ancestor_of_head(commit) -> bool:
    git = ["git", "-C", str(ROOT), "merge-base", "--is-ancestor", str(commit), "HEAD"]
    return len(str(commit)) == 40 and subprocess.run(git, capture_output=True).returncode == 0


def test_trial_holds_everything_to_rerun_it(recorded):
    d, result, _, _ = recorded
    records = Records.open(d / "runs.db", "toy", create=False)
    trials = records.trials()
    assert [t.number for t in trials] == result.trials == list(range(12))
    for t in trials:
        a = t.user_attrs
        assert t.state == TrialState.COMPLETE
        assert TOY_SPACE.problems(t.params) == []
        assert t.value == toy_value(t.params)
        assert a["seed"] == trial_seed(11, t.number)
        assert a["objective"] == "tests._records_objectives:toy"
        assert a["proposer"] == {"name": "RandomSearch", "seed": 3}
        assert a["proposal_info"]["round"] == t.number // 4
        assert a["kind"] == "black-box" and a["format"] == FORMAT
        # The objective's own time, inside the span Optuna's clock gives the trial (the
        # trial is opened before the objective starts and told after it returns).
        span = (t.datetime_complete - t.datetime_start).total_seconds()
        assert 0 < a["wall_time_s"] <= span + 1e-3, (a["wall_time_s"], span)
        assert a["inner_solves"] == 0
        assert a["versions.jax"] == jax.__version__
        assert a["versions.numpy"] == np.__version__
        assert a["versions.optuna"] == optuna.__version__
        assert a["versions.hypergrad"] == hypergrad.__version__
        assert a["versions.optax"] == optax.__version__
        assert a["versions.jaxlib"] == jaxlib.__version__
        assert a["device"] == f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}"
        assert isinstance(a["git_dirty"], bool)
        # The commit of the code that ran: HEAD then, so HEAD now or one of its ancestors.
        assert _is_ancestor_of_head(a["git_commit"])
        assert a["command"] and a["jax_enable_x64"] is True
        assert a["pid"] == os.getpid()
    # Conditional dimensions: only the active ones are parameters.
    assert any("width3" in t.params for t in trials)
    assert any("width3" not in t.params for t in trials)


def test_gradient_run_records_its_curve(recorded):
    d, _, number, outcome = recorded
    t = Records.open(d / "runs.log", "ridge", create=False).trial(number)
    assert t.user_attrs["kind"] == "gradient" and t.user_attrs["seed"] == 4
    assert t.user_attrs["inner_solves"] == 16
    curve = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
    assert curve == list(outcome.intermediate) and len(curve) == 15
    # Hypergradient descent lowered the validation loss from its first step.
    assert t.value < curve[0]
    assert t.user_attrs["result.alpha"] == outcome.attrs["alpha"]


@pytest.mark.parametrize("kind", [*STORAGES, "postgres"])
def test_finish_writes_what_optunas_own_writes_would(tmp_path, kind):
    """`Records.finish` (on an RDB storage one transaction of a few statements) against
    Optuna's one-call-per-value writes into an in-memory storage: the same curve
    (infinite, NaN and overwritten steps included), attributes and value read back."""
    curve = (3.0, 2.5, float("inf"), float("nan"), -1e300, 0.125)
    outcome = Outcome(
        0.125,
        intermediate=curve,
        inner_solves=7,
        attrs={"hparams": {"a": np.float64(0.5)}, "per_seed": np.arange(2.0), "note": "x"},
    )
    if kind == "postgres":
        from ._records_postgres import postgres_url, unique

        where, study = postgres_url(), unique("finish")
    else:
        where, study = tmp_path / STORAGES[kind], "finish"
    read = []
    for storage in (where, optuna.storages.InMemoryStorage()):
        records = Records.open(storage, study)
        number, _ = records.start({"a": 1.0}, seed=0)
        trial_id = records.storage.get_trial_id_from_study_id_trial_number(
            records.storage.get_study_id_from_name(study), number
        )
        records.storage.set_trial_intermediate_value(trial_id, 1, 99.0)  # overwritten
        records.storage.set_trial_user_attr(trial_id, "result.note", "old")  # overwritten
        records.finish(number, outcome, wall_time_s=1.5, annotations={"budget": {"steps": 6}})
        t = Records.open(storage, study, create=False).trial(number)
        keys = [
            k for k in t.user_attrs if k in ("wall_time_s", "inner_solves", "budget") or "." in k
        ]
        read.append(
            (t.state, t.value, dict(t.intermediate_values), {k: t.user_attrs[k] for k in keys})
        )
    (state, value, values, attrs), reference = read
    assert state == TrialState.COMPLETE and value == 0.125
    assert reference[2].keys() == values.keys() == set(range(len(curve)))
    np.testing.assert_array_equal([values[k] for k in range(6)], curve)  # NaN equals NaN
    assert (state, value, attrs) == (reference[0], reference[1], reference[3])
    assert attrs["result.per_seed"] == [0.0, 1.0] and attrs["result.note"] == "x"
    assert attrs["budget"] == {"steps": 6}


def test_failing_objective_leaves_a_failed_trial(tmp_path):
    records = Records.open(tmp_path / "f.db", "f")
    with pytest.raises(RuntimeError, match="the objective broke"):
        record_trial(records, failing, {"x": 1.0})
    (t,) = records.trials()
    assert t.state == TrialState.FAIL
    assert t.user_attrs["failed_reason"] == "RuntimeError: the objective broke"
    number, out = record_trial(records, lambda c, seed: float("nan"), {"x": 1.0})
    # A non-finite value is a failed trial, with the value kept in the reason.
    assert np.isnan(out.value)
    assert records.trial(number).state == TrialState.FAIL
    assert records.trial(number).user_attrs["failed_reason"] == "non-finite value nan"


def test_optuna_tools_read_the_studies(recorded, tmp_path):
    d, _, _, _ = recorded
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{d / 'runs.db'}")
    importances = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
    )
    assert set(importances) <= set(TOY_SPACE.names) and importances
    pytest.importorskip("matplotlib")
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    ax.get_figure().savefig(tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 0


def test_optuna_proposer_records_into_the_same_study(tmp_path):
    records = Records.open(tmp_path / "tpe.db", "tpe")
    result = run(toy, OptunaSearch(TOY_SPACE, "tpe", seed=0), 12, records=records, batch_size=4)
    trials = records.trials()
    assert [t.number for t in trials] == result.trials == list(range(12))
    for t in trials:
        assert t.state == TrialState.COMPLETE and t.value == toy_value(t.params)
        assert t.user_attrs["proposer"]["sampler"] == "tpe"
        assert t.user_attrs["objective"] == "tests._records_objectives:toy"
    assert reproduce(tmp_path / "tpe.db", "tpe", 5).exact
    # The run continues the study: the sampler sees the 12 earlier trials.
    more = run(
        toy,
        OptunaSearch(TOY_SPACE, "tpe", seed=1),
        4,
        records=Records.open(tmp_path / "tpe.db", "tpe"),
    )
    assert more.trials == [12, 13, 14, 15]


# -- workers sharing a study ----------------------------------------------------------


def _worker(storage, study, seed, n, **env):
    return subprocess.Popen(
        [sys.executable, "-m", "tests._records_worker", str(storage), study, str(seed), str(n)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("kind", STORAGES)
def test_two_workers_share_a_study(tmp_path, kind):
    storage = tmp_path / STORAGES[kind]
    Records.open(storage, "shared")
    go = tmp_path / "go"
    procs = [
        _worker(storage, "shared", seed, 10, HG_READY=str(tmp_path / f"ready{seed}"), HG_GO=str(go))
        for seed in (1, 2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{seed}").exists() for seed in (1, 2)):
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
        time.sleep(0.02)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    trials = Records.open(storage, "shared", create=False).trials()
    # Nothing lost, nothing twice: 20 distinct numbers, and each worker's ten draws.
    assert sorted(t.number for t in trials) == list(range(20))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    made = sorted(
        (t.user_attrs["proposer"]["seed"], t.user_attrs["proposal_info"]["round"]) for t in trials
    )
    assert made == [(s, r) for s in (1, 2) for r in range(10)]
    assert len({t.user_attrs["pid"] for t in trials}) == 2
    # Both workers had opened the study and were waiting at the barrier before either
    # asked for a trial number, so the numbers above were handed out to two live
    # processes. Whether their trials also interleave is the OS scheduler's choice (one
    # worker descheduled for 150 ms runs all of its ten after the other's), so it is not
    # asserted.


@pytest.mark.parametrize("kind", STORAGES)
def test_killed_worker_leaves_a_clean_record_and_the_run_continues(tmp_path, kind):
    storage, marker = tmp_path / STORAGES[kind], tmp_path / "hanging"
    Records.open(storage, "kill")
    proc = _worker(storage, "kill", 5, 10, HG_HANG_AT="3", HG_MARKER=str(marker))
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "the worker never reached its fourth trial"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    records = Records.open(storage, "kill", create=False)
    trials = records.trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.RUNNING]
    cut = trials[3]
    assert TOY_SPACE.problems(cut.params) == [] and cut.user_attrs["seed"] == trial_seed(5, 3)
    assert cut.values is None and cut.user_attrs["pid"] == proc.pid

    # A restarted run: the cut-off trial is failed, numbering and draws continue.
    result = run(toy, RandomSearch(TOY_SPACE, 5), 4, records=Records.open(storage, "kill"), seed=5)
    assert result.trials == [4, 5, 6, 7]
    trials = records.trials()
    assert trials[3].state == TrialState.FAIL
    assert "stopped before it finished" in trials[3].user_attrs["failed_reason"]
    assert [t.state for t in trials[4:]] == [TrialState.COMPLETE] * 4
    assert [t.user_attrs["proposal_info"]["round"] for t in trials[4:]] == [4, 5, 6, 7]
    old = {tuple(sorted(t.params.items())) for t in trials[:4]}
    assert not old & {tuple(sorted(t.params.items())) for t in trials[4:]}


# -- errors ---------------------------------------------------------------------------


def test_unreadable_storage_is_a_clear_error(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_text("this is not a database " * 100)
    with pytest.raises(
        StorageError,
        match=r"cannot read storage '.*garbage.db': it is not a SQLite database \(it begins "
        r"b'this is not a da'\); expected an Optuna SQLite file, or a journal file named",
    ):
        Records.open(garbage, "s")
    bad_journal = tmp_path / "garbage.log"
    bad_journal.write_text("not json\n{}\n")
    with pytest.raises(
        StorageError,
        match=r"'.*garbage.log': it is not an Optuna journal file \(line 1 is b'not json'",
    ):
        Records.open(bad_journal, "s")
    with pytest.raises(StorageError, match=r"it is a directory"):
        Records.open(tmp_path, "s")
    with pytest.raises(StorageError, match=r"no storage at '.*missing.db': the file does not"):
        Records.open(tmp_path / "missing.db", "s", create=False)
    assert not (tmp_path / "missing.db").exists()  # reading never creates a file
    with pytest.raises(StorageError, match=r"cannot read storage 'sqlite:////nonexistent/x"):
        Records.open("sqlite:////nonexistent/x/y.db", "s")


def test_unknown_study_lists_the_studies(tmp_path):
    path = tmp_path / "s.db"
    Records.open(path, "alpha")
    Records.open(path, "beta")
    with pytest.raises(
        StudyNotFoundError,
        match=r"no study named 'gamma' in .*s.db'; studies "
        r"there: 'alpha', 'beta'",
    ):
        Records.open(path, "gamma", create=False)
    with pytest.raises(StudyNotFoundError, match=r"holds 2 studies; name one with --study"):
        Records.open(path, None, create=False)


def test_incompatible_records_are_refused(tmp_path):
    path = tmp_path / "v.db"
    records = Records.open(path, "future")
    records.study.set_user_attr("hypergrad.format", FORMAT + 1)
    with pytest.raises(
        IncompatibleRecordError,
        match=rf"record format {FORMAT + 1}; this "
        rf"hypergrad reads formats up to {FORMAT}",
    ):
        Records.open(path, "future", create=False)
    with pytest.raises(ValueError, match=r"directions must be 'minimize' or 'maximize'.*'up'"):
        Records.open(path, "present", directions=("up",))
    Records.open(path, "present")
    with pytest.raises(IncompatibleRecordError, match=r"has directions \('minimize',\)"):
        Records.open(path, "present", directions=("maximize",))
    # A schema from another Optuna version: Optuna refuses it, we say so plainly.
    Records.open(tmp_path / "schema.db", "s")
    con = sqlite3.connect(tmp_path / "schema.db")
    con.execute("update alembic_version set version_num = 'v99.0.0.a'")
    con.commit()
    con.close()
    with pytest.raises(IncompatibleRecordError, match=r"schema this one .* cannot read"):
        Records.open(tmp_path / "schema.db", "s", create=False)


# -- reproduce ------------------------------------------------------------------------


def test_reproduce_a_random_search_trial(recorded):
    d, result, _, _ = recorded
    for number in (0, 7):
        r = reproduce(d / "runs.db", "toy", number)
        assert r.same_machine and r.exact and r.matches, r.summary()
        assert r.reproduced == r.recorded


def test_reproduce_a_gradient_based_trial(recorded):
    d, _, number, outcome = recorded
    r = reproduce(d / "runs.log", "ridge", number)
    assert r.same_machine and r.exact and r.matches, r.summary()
    assert r.reproduced_intermediate == outcome.intermediate
    assert "bit for bit" in r.summary()


def test_reproduce_a_budgeted_asha_trial():
    storage = optuna.storages.InMemoryStorage()
    records = Records.open(storage, "asha")
    run(toy_budgeted, ASHA(TOY_SPACE, 1, 9, seed=0), 8, records=records, batch_size=4)
    promoted = [t for t in records.trials() if t.user_attrs["budget"] > 1]
    assert promoted  # the second batch promotes the best of the first
    r = reproduce(storage, "asha", promoted[0].number)
    assert r.exact and r.reproduced == (toy_budgeted(promoted[0].params, seed=0, budget=3),)


def test_reproduce_uses_the_recorded_precision(tmp_path):
    """A float64 record re-runs in float64 even from a process that computes in float32."""
    records = Records.open(tmp_path / "p.db", "p")
    number, _ = record_trial(
        records, ridge_gradient, {"alpha0": 1.0, "outer_lr": 0.1, "steps": 5}, space=RIDGE_SPACE
    )
    jax.config.update("jax_enable_x64", False)
    try:
        r = reproduce(tmp_path / "p.db", "p", number)
    finally:
        jax.config.update("jax_enable_x64", True)
    assert r.exact, r.summary()


def _record_by_hand(records, value, recorded_value, **attrs):
    number, _ = records.start(
        {"lr": 0.01, "opt": "adam", "layers": 2},
        space=TOY_SPACE,
        objective="tests._records_objectives:toy",
        seed=0,
        attrs=attrs,
    )
    records.finish(number, Outcome(recorded_value), 0.1)
    return number


def test_reproduce_tolerance_off_the_recorded_machine(tmp_path):
    records = Records.open(tmp_path / "t.db", "t")
    true = toy_value({"lr": 0.01, "opt": "adam", "layers": 2})
    other = {"versions.jax": "0.0.1", "cpu": "another CPU"}
    close = _record_by_hand(records, true, true * (1 + 1e-9), **other)
    far = _record_by_hand(records, true, true * (1 + 1e-3), **other)
    here_off = _record_by_hand(records, true, true * (1 + 1e-12))

    r = reproduce(tmp_path / "t.db", "t", close)
    assert not r.same_machine and not r.exact and r.within_tolerance and r.matches
    assert "versions.jax: recorded '0.0.1'" in r.summary()
    assert not reproduce(tmp_path / "t.db", "t", far).matches
    # On the recorded machine even one part in 1e12 is a failure to reproduce.
    r = reproduce(tmp_path / "t.db", "t", here_off)
    assert r.same_machine and r.within_tolerance and not r.matches


def test_reproduce_refuses_what_it_cannot_rerun(tmp_path):
    records = Records.open(tmp_path / "r.db", "r")
    local, _ = record_trial(records, lambda config, seed: 1.0, {"x": 1.0})
    running, _ = records.start({"x": 1.0}, objective="tests._records_objectives:toy")
    with pytest.raises(RecordsError, match="records no importable objective"):
        reproduce(tmp_path / "r.db", "r", local)
    with pytest.raises(RecordsError, match="is RUNNING, not COMPLETE"):
        reproduce(tmp_path / "r.db", "r", running)
    with pytest.raises(RecordsError, match=r"has no trial 9 \(it has trials 0 to 1\)"):
        reproduce(tmp_path / "r.db", "r", 9)
    optuna.create_study(study_name="plain", storage=f"sqlite:///{tmp_path / 'r.db'}").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=1
    )
    with pytest.raises(RecordsError, match="was not recorded by hypergrad"):
        reproduce(tmp_path / "r.db", "plain", 0)


def test_optuna_dashboard_reads_the_studies(recorded):
    """optuna-dashboard's own API serves the recorded studies, attributes and curves."""
    dashboard = pytest.importorskip("optuna_dashboard")
    import io
    import json

    d, _, number, outcome = recorded

    def get(app, path):
        env = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "SERVER_NAME": "test",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
        }
        status = []
        body = b"".join(app(env, lambda s, h, exc_info=None: status.append(s)))
        assert status == ["200 OK"], body[:500]
        return json.loads(body)

    for storage, name, n_trials in (("runs.db", "toy", 12), ("runs.log", "ridge", 1)):
        app = dashboard.wsgi(Records.open(d / storage, name, create=False).storage)
        (summary,) = get(app, "/api/studies")["study_summaries"]
        assert summary["study_name"] == name
        trials = get(app, f"/api/studies/{summary['study_id']}")["trials"]
        assert len(trials) == n_trials
        keys = {a["key"] for a in trials[0]["user_attrs"]}
        assert {"seed", "objective", "versions.jax", "git_commit", "command"} <= keys
    curve = [v["value"] for v in trials[number]["intermediate_values"]]
    assert curve == list(outcome.intermediate)


# -- storages: what is there, read-only, every trial's worker ---------------------------


def _digest(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_read_only_opens_write_nothing(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StorageError, match=r"'.*empty.db': it is an empty file, not an Optuna"):
        Records.open(empty, "s", read_only=True)
    with pytest.raises(StorageError, match="it is an empty file"):
        reproduce(empty, "s", 0)
    assert empty.stat().st_size == 0  # Optuna would have written its schema into it
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("create table notes (x)")
    con.commit()
    con.close()
    before = _digest(other)
    with pytest.raises(StorageError, match=r"a SQLite database without Optuna's tables \(it has"):
        Records.open(other, "s", read_only=True)
    assert _digest(other) == before
    with pytest.raises(StorageError, match=r"no storage at '.*missing.db'"):
        Records.open(f"sqlite:///{tmp_path / 'missing.db'}", "s", read_only=True)
    assert not (tmp_path / "missing.db").exists()

    for name in ("runs.db", "runs.log"):
        path = tmp_path / name
        number, _ = record_trial(
            Records.open(path, "s"), toy, {"opt": "adam", "layers": 2, "lr": 0.01}, space=TOY_SPACE
        )
        before = _digest(path)
        records = Records.open(path, "s", read_only=True)
        assert [t.number for t in records.trials()] == [number] and records.read_only
        assert reproduce(path, "s", number).exact
        for method, args in (
            ("start", ({"x": 1.0},)),
            ("fail", (number, "no")),
            ("annotate", (number,)),
            ("fail_stale", ()),
        ):
            with pytest.raises(RecordsError, match=r"study 's' in .* was opened read-only"):
                getattr(records, method)(*args)
        assert _digest(path) == before


def test_journal_errors_say_what_the_file_is(tmp_path):
    text_log = tmp_path / "server.log"
    text_log.write_text("2024-01-01 12:00 server started\n")
    for read_only in (False, True):
        with pytest.raises(
            StorageError,
            match=r"'.*server.log': it is not an Optuna journal file \(line 1 is "
            r"b'2024-01-01 12:00 server started'",
        ):
            Records.open(text_log, "s", read_only=read_only)
    one_line = tmp_path / "one.log"
    one_line.write_text("hello")  # no newline: not a write in progress either
    with pytest.raises(StorageError, match=r"not an Optuna journal file \(line 1 is b'hello'"):
        Records.open(one_line, "s")

    journal = tmp_path / "runs.log"
    record_trial(Records.open(journal, "s"), toy, {"opt": "adam", "layers": 3, "lr": 0.01})
    lines = len(journal.read_text().splitlines())
    with open(journal, "a") as f:
        f.write('{"op_code": 4, "worker_id": "w", "stu')  # another worker mid-write
    assert len(Records.open(journal, "s", read_only=True).trials()) == 1
    journal.write_text(journal.read_text().rsplit("\n", 1)[0] + '\n{"op_code": 99}\n')
    for read_only in (False, True):
        with pytest.raises(
            StorageError,
            match=rf"line {lines + 1} of the journal has op_code 99, which optuna "
            rf"{optuna.__version__} does not know \(a journal written by a newer Optuna",
        ):
            Records.open(journal, "s", read_only=read_only)


@pytest.mark.parametrize("kind", STORAGES)
def test_every_trial_carries_its_worker_from_its_creation(tmp_path, kind):
    """Whoever creates a trial (Optuna's ask included), it has host and pid in its first
    write, so a worker killed right after ask() leaves a trial a restart can fail."""
    records = Records.open(tmp_path / STORAGES[kind], "w")
    me = worker()
    assert me["host"] == os.uname().nodename and me["pid"] == os.getpid()
    asked = records.study.ask()  # Optuna's own ask, no hypergrad code around it
    direct = records.storage.create_new_trial(records._study_id)
    records.study.enqueue_trial({"x": 1.0})  # WAITING: its worker is whoever takes it
    for t in records.study.get_trials(deepcopy=False):
        expected = {} if t.state == TrialState.WAITING else me
        assert {k: t.user_attrs.get(k) for k in expected} == expected, t
    assert records.study.get_trials()[asked.number].user_attrs == me
    assert records.storage.get_trial(direct).user_attrs == me


def test_orphan_running_trials_are_failed_on_resume(tmp_path):
    """A RUNNING trial without a worker (written by plain Optuna, cut off before it could
    say who runs it) is failed once it is old enough to have no live worker."""
    path = tmp_path / "o.db"
    records = Records.open(path, "o")
    plain = optuna.storages.RDBStorage(f"sqlite:///{path}")  # Optuna's own, records no worker
    orphan = plain.get_trial_number_from_id(plain.create_new_trial(records._study_id))
    assert records.trial(orphan).user_attrs == {}
    assert records.fail_stale() == []  # seconds old: its worker may still be writing
    assert records.trial(orphan).state == TrialState.RUNNING
    assert records.fail_stale(orphan_after_s=0.0) == [orphan]
    t = records.trial(orphan)
    assert t.state == TrialState.FAIL
    assert "no worker recorded and still running" in t.user_attrs["failed_reason"]


def test_a_reused_pid_does_not_keep_a_dead_workers_trial_running(tmp_path):
    """A restarted container hands out the same pids: the trial of the earlier process
    with this very pid is failed, this process's own trial is not."""
    records = Records.open(tmp_path / "p.db", "p")
    me = worker()
    earlier = {**me, "pid_start": "an-earlier-boot:12345"}
    dead, _ = records.start({"x": 1.0}, attrs=earlier)
    live, _ = records.start({"x": 2.0})
    assert records.trial(dead).user_attrs["pid"] == records.trial(live).user_attrs["pid"]
    assert records.fail_stale() == [dead]
    assert records.trial(live).state == TrialState.RUNNING


def test_studies_are_named_and_optuna_stays_quiet(tmp_path):
    import logging

    seen = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("optuna")
    logger.addHandler(handler)
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        records = Records.open(tmp_path / "q.db")
        run(toy, RandomSearch(TOY_SPACE, 0), 2, records=records)
        run(toy, OptunaSearch(TOY_SPACE, "tpe", seed=0), 2, records=records)
        assert seen == [] and logger.level == logging.INFO  # the user's level is restored
        optuna.create_study()  # Optuna alone does print it: the handler does see it
        assert any("A new study created" in m for m in seen)
    finally:
        logger.removeHandler(handler)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert re.fullmatch(r"hypergrad-\d{8}-\d{6}-[0-9a-f]{6}", records.name), records.name


def test_passwords_stay_out_of_records_and_messages(tmp_path, monkeypatch):
    url = "postgresql+nosuchdriver://ana:s3cret-pw@db.lab:5432/runs"
    monkeypatch.setattr(sys, "argv", ["hypergrad", "worker", url, "s", "--space", "m:S"])
    records = Records.open(tmp_path / "m.db", "m")
    number, _ = record_trial(records, toy, {"opt": "adam", "layers": 3, "lr": 0.01})
    command = records.trial(number).user_attrs["command"]
    assert "s3cret-pw" not in command
    assert "postgresql+nosuchdriver://ana:***@db.lab:5432/runs" in command
    with pytest.raises(StorageError) as e:
        Records.open(url, "s")
    assert "s3cret-pw" not in str(e.value) and "'postgresql+nosuchdriver://ana:***@" in str(e.value)
