"""`hypergrad demo`: three tuners on the bundled breast-cancer data, every trial recorded."""

import time
import types

import numpy as np
import optuna
import pytest

from hypergrad.cli import _demo, main
from hypergrad.cli._demo import SPACE, evaluate, problem, run_demo


class _Clock:
    """A stand-in for `time.perf_counter` in the demo's module that advances `tick`
    seconds per reading: the black-box tuners' wall-time loops then run a fixed number of
    trials whatever the machine's load (two readings per trial)."""

    def __init__(self, tick):
        self.now, self.tick = 0.0, tick

    def __call__(self):
        self.now += self.tick
        return self.now


# A budget of 12 ticks of 50 s: each black-box tuner runs exactly 6 trials (its k-th trial
# starts at reading 2k - 1 after the start, while 50 (2k - 1) < 600). The hypergradient
# tuner's own clock is real: 600 s is far beyond its two rounds of 4 members and its
# refinement rounds.
BUDGET_S, TICK_S, BLACK_BOX_TRIALS = 600.0, 50.0, 6


def test_demo_runs_three_tuners_and_records_every_trial(tmp_path, monkeypatch):
    monkeypatch.setattr(
        _demo, "time", types.SimpleNamespace(perf_counter=_Clock(TICK_S), strftime=time.strftime)
    )
    lines = []
    rows = run_demo(budget_s=BUDGET_S, out_dir=tmp_path, out=lines.append)
    assert [r["tuner"] for r in rows] == ["hypergradient", "random", "TPE"]
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'demo.db'}")
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert len(studies) == 3
    assert [r["trials"] for r in rows[1:]] == [BLACK_BOX_TRIALS] * 2
    # Two rounds (one per feature map) of 4 members, then at most REFINE refinement
    # rounds of the better map, each of 4 members.
    assert rows[0]["trials"] % 4 == 0 and 8 < rows[0]["trials"] <= (2 + _demo.REFINE) * 4
    for r in rows:
        assert np.isfinite(r["best_val_loss"])
        assert SPACE.is_valid(r["config"])
        (name,) = [n for n in studies if n.startswith(f"demo-{r['tuner'].lower()}")]
        assert studies[name].n_trials == r["trials"]
        assert any(line.startswith(r["tuner"]) for line in lines)
        # The reported test accuracy is that of the chosen configuration, refitted here
        # independently; a row near the decision boundary may flip (one of ~142 rows).
        assert r["test_accuracy"] == pytest.approx(_reference_accuracy(r["config"]), abs=1.5 / 142)
    # A black-box row's best value is the recorded evaluation of its configuration.
    for r in rows[1:]:
        again = evaluate(r["config"], seed=_data_seed())
        assert again.value == pytest.approx(r["best_val_loss"], rel=1e-9)
    assert (tmp_path / "demo.png").exists()


def _reference_accuracy(config):
    """Test accuracy of elastic-net logistic regression at `config`, fitted here by
    SciPy's L-BFGS-B on the smooth split form `w = u - v`, `u, v >= 0`:
    `mean log-loss(X w + b, y) + alpha1 sum(u + v) + alpha2 / 2 ||w||^2`."""
    from scipy.optimize import minimize
    from scipy.special import expit

    pb = problem(config, seed=_data_seed())
    X, y = np.asarray(pb.train.X), np.asarray(pb.train.y)
    n, p = X.shape
    a1, a2 = config["alpha1"], config["alpha2"]

    def objective(z):
        u, v, b = z[:p], z[p : 2 * p], z[-1]
        w = u - v
        t = X @ w + b
        loss = np.mean(np.logaddexp(0.0, t) - y * t) + a1 * np.sum(u + v) + 0.5 * a2 * w @ w
        r = (expit(t) - y) / n
        gw = X.T @ r + a2 * w
        return loss, np.concatenate([gw + a1, -gw + a1, [np.sum(r)]])

    bounds = [(0, None)] * (2 * p) + [(None, None)]
    fit = minimize(
        objective,
        np.zeros(2 * p + 1),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 50_000, "ftol": 1e-15, "gtol": 1e-10},
    )
    assert fit.success, fit.message
    w, b = fit.x[:p] - fit.x[p : 2 * p], fit.x[-1]
    Xt, yt = np.asarray(pb.test.X), np.asarray(pb.test.y)
    return float(np.mean(((Xt @ w + b) > 0) == (yt > 0.5)))


def _data_seed():
    from hypergrad.records import trial_seed

    return trial_seed(0, 0)


def test_demo_rejects_a_bad_budget():
    with pytest.raises(SystemExit, match="--budget must be positive"):
        main(["demo", "--budget", "0"])


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out
