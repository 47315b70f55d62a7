"""`hypergrad demo`: three tuners on the bundled breast-cancer data, every trial recorded."""

import numpy as np
import optuna
import pytest

from hypergrad.cli import main
from hypergrad.cli._demo import SPACE, evaluate, run_demo


def test_demo_runs_three_tuners_and_records_every_trial(tmp_path):
    lines = []
    rows = run_demo(budget_s=2.0, out_dir=tmp_path, out=lines.append)
    assert [r["tuner"] for r in rows] == ["hypergradient", "random", "TPE"]
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'demo.db'}")
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert len(studies) == 3
    for r in rows:
        assert np.isfinite(r["best_val_loss"]) and 0.5 < r["test_accuracy"] <= 1.0
        assert SPACE.is_valid(r["config"])
        (name,) = [n for n in studies if n.startswith(f"demo-{r['tuner'].lower()}")]
        assert studies[name].n_trials == r["trials"] > 0
        assert any(line.startswith(r["tuner"]) for line in lines)
    # A black-box row's best value is the recorded evaluation of its configuration.
    for r in rows[1:]:
        again = evaluate(r["config"], seed=_data_seed())
        assert again.value == pytest.approx(r["best_val_loss"], rel=1e-9)
    assert (tmp_path / "demo.png").exists()


def _data_seed():
    from hypergrad.records import trial_seed

    return trial_seed(0, 0)


def test_demo_rejects_a_bad_budget():
    with pytest.raises(SystemExit, match="--budget must be positive"):
        main(["demo", "--budget", "0"])


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out
