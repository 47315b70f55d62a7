"""`hypergrad report` and `hypergrad reproduce` on recorded studies."""

import builtins

import jax
import optuna
import pytest

from hypergrad.cli import main
from hypergrad.records import Records, record_trial
from hypergrad.search import OptunaSearch, RandomSearch, grid_points, run

from ._records_objectives import (
    FAULT_SPACE,
    RIDGE_SPACE,
    TOY_SPACE,
    ridge_gradient,
    toy,
    toy_two,
    toy_value,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "runs.db"
    run(toy, RandomSearch(TOY_SPACE, seed=2), 6, records=Records.open(path, "toy"))
    record_trial(
        Records.open(path, "ridge"),
        ridge_gradient,
        {"alpha0": 3.0, "outer_lr": 0.3, "steps": 8},
        space=RIDGE_SPACE,
        kind="gradient",
    )
    two = Records.open(path, "two", directions=("minimize", "minimize"))
    run(
        toy_two,
        OptunaSearch(TOY_SPACE, "nsga2", seed=0, directions=("minimize", "minimize")),
        6,
        records=two,
    )
    return path


def test_report_prints_the_table_and_writes_plots(storage, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots"
    assert main(["report", str(storage), "--study", "toy", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    records = Records.open(storage, "toy", create=False)
    best = records.study.best_trial
    assert f"study 'toy' in '{storage}': 6 trials" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["#", "state", "value"])
    rows = lines[header + 1 : header + 7]
    for t, row in zip(records.trials(), rows, strict=True):
        cells = row.split()
        assert cells[:3] == [str(t.number), "COMPLETE", f"{t.value:.6g}"]
        assert f"lr={t.params['lr']:.6g}" in row and str(t.user_attrs["seed"]) in row
    assert f"best: trial {best.number}, value {best.value:.6g}" in text
    for name in ("history.png", "params.png"):
        assert (out / name).stat().st_size > 1000


def test_report_multi_objective_shows_the_pareto_front(storage, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["report", str(storage), "--study", "two", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    front = Records.open(storage, "two", create=False).study.best_trials
    assert f"Pareto front ({len(front)} trials):" in text
    assert (tmp_path / "history-1.png").exists() and (tmp_path / "params-0.png").exists()


def test_report_without_matplotlib_says_so(storage, tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["report", str(storage), "--study", "toy", "--out", str(tmp_path)]) == 2
    assert "plots need matplotlib: pip install 'hypergrad-jax[plot]'" in capsys.readouterr().err
    assert main(["report", str(storage), "--study", "toy", "--no-plots"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "{storage}"], "holds 3 studies; name one with --study: 'toy', 'ridge', 'two'"),
        (["report", "{storage}", "--study", "nope"], "no study named 'nope'"),
        (["report", "{missing}"], "the file does not exist"),
        (["reproduce", "{storage}", "--study", "toy", "--trial", "99"], "has no trial 99"),
        (["reproduce", "{missing}", "--study", "toy", "--trial", "0"], "no storage at"),
    ],
)
def test_commands_fail_clearly(storage, tmp_path, capsys, argv, message):
    argv = [a.format(storage=storage, missing=tmp_path / "missing.db") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_reproduce_command(storage, capsys):
    assert main(["reproduce", str(storage), "--study", "toy", "--trial", "3"]) == 0
    assert "trial 3: reproduced bit for bit" in capsys.readouterr().out
    assert main(["reproduce", str(storage), "--study", "ridge", "--trial", "0"]) == 0
    text = capsys.readouterr().out
    assert "reproduced bit for bit" in text and "8 recorded, 8 reproduced" in text


def test_reproduce_command_reports_a_mismatch(storage, tmp_path, capsys):
    """A record whose value the objective does not give back is reported, exit 1."""
    path = tmp_path / "m.db"
    records = Records.open(path, "m")
    number, _ = records.start(
        {"opt": "adam", "layers": 2, "lr": 0.01},
        space=TOY_SPACE,
        objective="tests._records_objectives:toy",
        seed=0,
    )
    from hypergrad.records import Outcome

    records.finish(number, Outcome(123.0), 0.1)
    assert main(["reproduce", str(path), "--study", "m", "--trial", str(number)]) == 1
    assert "NOT reproduced" in capsys.readouterr().out
    assert jax.config.jax_enable_x64  # reproduce restored the process's precision


def _digest(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.db", "", "it is an empty file, not an Optuna storage"),
        ("notes.db", "some notes\n", "it is not a SQLite database (it begins b'some notes"),
        ("server.log", "12:00 started\n", "it is not an Optuna journal file (line 1 is"),
        ("new.log", '{"op_code": 99, "worker_id": "w"}\n', "op_code 99, which optuna"),
    ],
)
def test_report_says_what_the_file_is_and_leaves_it_alone(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    assert main(["report", str(path), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and "AssertionError" not in err
    assert path.read_text() == content  # a read-only command wrote nothing


def test_report_and_reproduce_do_not_write_the_storage(storage, capsys):
    before = _digest(storage)
    assert main(["report", str(storage), "--study", "toy", "--no-plots"]) == 0
    assert main(["reproduce", str(storage), "--study", "toy", "--trial", "1"]) == 0
    capsys.readouterr()
    assert _digest(storage) == before


def test_report_into_a_closed_pipe_is_quiet(storage):
    """`hypergrad report ... | head`: the reader goes away; no traceback, exit 141."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "import sys; from hypergrad.cli import main; sys.exit(main())"]
            + ["report", str(storage), "--study", "toy", "--no-plots"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr


def test_worker_command_creates_joins_and_finishes_a_grid(tmp_path, capsys):
    path = tmp_path / "w.db"
    argv = ["worker", str(path), "g", "--space", "tests._records_objectives:FAULT_SPACE"]
    toy_ref = ["--objective", "tests._records_objectives:toy", "--resolution", "2"]
    assert main(argv + toy_ref) == 0
    assert "ran 12 trials (0 to 11); best value" in capsys.readouterr().out
    # A second worker joins the finished study; the objective is the study's own.
    assert main(argv + ["--resolution", "2"]) == 0
    best = min(toy_value(c) for c in grid_points(FAULT_SPACE, resolution=2))
    out = capsys.readouterr().out
    assert f"ran 0 trials; best value {best:.6g}; the grid is done" in out
    assert "12 trials there" in out
    records = Records.open(path, "g", read_only=True)
    assert len({tuple(sorted(t.params.items())) for t in records.trials()}) == 12


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sampler", "random"], "--sampler random needs --trials"),
        (["--trials", "-1"], "--trials must be a non-negative int, got -1"),
        (["--space", "tests._records_objectives:toy"], "is a function, not a Space"),
        (["--space", "nowhere:S"], "cannot import the objective 'nowhere:S'"),
    ],
)
def test_worker_command_refuses_bad_arguments(tmp_path, capsys, extra, message):
    argv = ["worker", str(tmp_path / "w.db"), "g", "--space", "tests._records_objectives:TOY_SPACE"]
    assert main(argv + ["--objective", "tests._records_objectives:toy"] + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
