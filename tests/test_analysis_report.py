"""`hypergrad report`'s analysis sections on recorded studies: one with conditional
dimensions, repeated seeds and recorded test values; a multi-objective one; a tuner's
record (sensitivity and the held-out re-check from its problem factory); a black-box
study given its problem by `--problem`.

The numbers in the JSON are checked against the analyses called directly (and those
against Optuna's `get_param_importances` on the same study)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optuna
import pytest
from optuna.importance import FanovaImportanceEvaluator, get_param_importances

import hypergrad as hg
from hypergrad import analysis, problems
from hypergrad.cli import main
from hypergrad.records import Outcome, Records, record_trial
from hypergrad.search import RandomSearch, run
from hypergrad.space import Categorical, Real, Space
from hypergrad.tune import tune
from hypergrad.tune._plan import seeds_of

from ._records_objectives import TOY_SPACE, toy_two, toy_value

optuna.logging.set_verbosity(optuna.logging.WARNING)


def noisy_toy(config, *, seed):
    """The toy objective with seed noise, and a test value a little worse."""
    rng = np.random.default_rng(seed)
    v = toy_value(config)
    return Outcome(v + 0.05 * rng.normal(), attrs={"test_value": v + 0.1 + 0.05 * rng.normal()})


RIDGE_SPACE = Space({"alpha": Real(1e-3, 1e2, log=True)})


def ridge_factory(config, *, seed):
    """Ridge whose data split depends on `seed` (with a half-features choice)."""
    X, y = problems.synthetic_regression(160, 12, noise=2.0, seed=0)
    idx = np.random.default_rng(seed).permutation(160)
    X, y = X[idx], y[idx]
    if config.get("features") == "half":
        X = X[:, :6]
    return problems.ridge(X[:60], y[:60], X[60:120], y[60:120], X[120:], y[120:])


_ridge_loss = jax.jit(hg.outer_loss)


def ridge_objective(config, *, seed):
    """A black-box objective over the same problem (no test value recorded)."""
    pb = ridge_factory({}, seed=seed)
    return float(_ridge_loss(pb, {"alpha": jnp.asarray(config["alpha"])}))


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    # A journal file: the same records as SQLite, without a disk sync per write.
    path = tmp_path_factory.mktemp("analysis") / "runs.log"
    cond = Records.open(path, "cond")
    run(noisy_toy, RandomSearch(TOY_SPACE, seed=0), 40, records=cond)
    best = sorted((t for t in cond.trials() if t.values), key=lambda t: t.value)[
        :4
    ]  # four configurations, re-run on three more seeds each
    for t in best:
        for s in (101, 102, 103):
            record_trial(cond, noisy_toy, dict(t.params), seed=s, space=TOY_SPACE)
    two = Records.open(path, "two", directions=("minimize", "minimize"))
    run(toy_two, RandomSearch(TOY_SPACE, seed=1), 30, records=two)
    tuned = Records.open(path, "tuned")
    space = Space({"features": Categorical(("all", "half")), "alpha": Real(1e-3, 1e2, log=True)})
    tune(ridge_factory, space, rounds=2, population=2, seeds=3, steps=5, records=tuned)
    run(ridge_objective, RandomSearch(RIDGE_SPACE, seed=0), 6, records=Records.open(path, "bb"))
    return path


def _report(storage, study, tmp_path, *extra):
    out, js = tmp_path / study, tmp_path / f"{study}.json"
    code = main(
        ["report", str(storage), "--study", study, "--out", str(out), "--json", str(js), *extra]
    )
    return code, json.loads(js.read_text()), out


def test_report_conditional_study(storage, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, data, out = _report(storage, "cond", tmp_path)
    assert code == 0
    text = capsys.readouterr().out
    for head in ("== importance ==", "== seed robustness ==", "== validation-test gap =="):
        assert head in text
    study = Records.open(storage, "cond", create=False).study
    (obj,) = data["objectives"]
    by = {r["evaluator"]: r for r in obj["importance"]}
    # Optuna's numbers on the recorded study; PED-ANOVA assesses the conditional ones.
    assert by["fanova"]["values"] == pytest.approx(
        get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0)), abs=0
    )
    assert by["ped_anova"]["values"] == pytest.approx(get_param_importances(study), abs=0)
    assert {"momentum", "width3"} <= set(by["ped_anova"]["values"])
    assert set(by["fanova"]["not_assessed"]) == {"momentum", "width3"}
    assert "fanova does not assess momentum, width3" in text
    # Four configurations x the seeds they share; the analysis of the same table.
    seeds = obj["seeds"]
    assert seeds["source"] == "grouped" and len(seeds["configs"]) == 4
    table = analysis.seed_table(study)
    direct = analysis.seed_robustness(table.values, top_k=3)
    assert seeds["num_seeds"] == table.values.shape[1] >= 3
    chosen = seeds["configs"][0]
    assert chosen["mean"] == pytest.approx(direct.mean[direct.chosen], rel=1e-12)
    assert chosen["p_better"] == 0.5
    # The gap of the best trial by validation value, from the recorded test values.
    gap = obj["gap"]
    rows = analysis.test_values(study)
    best = min(rows, key=lambda r: r[1])
    assert gap["source"] == "recorded" and gap["trial"] == best[0]
    assert gap["gap"] == pytest.approx(best[2] - best[1], rel=1e-12)
    assert -1 <= gap["spearman"] <= 1
    # No bilevel problem: the section says why and how.
    assert "report --problem" in data["sensitivity"]["unavailable"]
    for name in ("importance.png", "seeds.png", "gap.png"):
        assert (out / name).stat().st_size > 1000


def test_report_multi_objective_study(storage, tmp_path, capsys):
    code, data, _ = _report(storage, "two", tmp_path, "--no-plots")
    assert code == 0
    text = capsys.readouterr().out
    assert "== importance (objective 1, minimize) ==" in text
    study = Records.open(storage, "two", create=False).study
    assert [o["index"] for o in data["objectives"]] == [0, 1]
    for obj in data["objectives"]:
        i = obj["index"]
        fan = next(r for r in obj["importance"] if r["evaluator"] == "fanova")
        want = get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=0), target=lambda t, i=i: t.values[i]
        )
        assert fan["values"] == pytest.approx(want, abs=0)
        assert "--reseed N" in obj["seeds"]["unavailable"]  # one seed per configuration
    # The second objective is log10(lr): nothing but lr can matter.
    ped1 = next(r for r in data["objectives"][1]["importance"] if r["evaluator"] == "ped_anova")
    assert max(ped1["values"], key=ped1["values"].get) == "lr"
    assert "pass --trial N" in data["sensitivity"]["unavailable"]
    # Re-seeding runs the recorded objective (deterministic here: no spread).
    code, data, _ = _report(
        storage, "two", tmp_path, "--no-plots", "--sections", "seeds", "--reseed", "2"
    )
    seeds = data["objectives"][0]["seeds"]
    assert code == 0 and seeds["source"] == "reseeded" and seeds["num_seeds"] == 2
    assert len(seeds["configs"]) == 5 and all(r["std"] == 0 for r in seeds["configs"])


def test_report_tuner_record_sensitivity_and_recheck(storage, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, data, out = _report(storage, "tuned", tmp_path)
    assert code == 0
    s = data["sensitivity"]
    assert "unavailable" not in s, s
    study = Records.open(storage, "tuned", create=False).study
    trial = study.best_trial
    assert s["trial"] == trial.number
    # The factory's problem at the trial's found penalty, against ridge's closed forms:
    # df/dt = df/dalpha * alpha * log(high / low) (within CG's tolerance), and the
    # validation and test losses of the exact solution.
    pb, _, config = analysis.recorded_problem(trial)
    alpha = config["alpha"]
    exact = float(problems.ridge_hypergradient(pb, {"alpha": alpha})["alpha"])
    assert s["scaled_grad"]["alpha"] == pytest.approx(exact * alpha * math.log(1e5), rel=1e-6)
    (obj,) = data["objectives"]
    assert obj["seeds"]["source"] == "per_seed" and obj["seeds"]["num_seeds"] == 3
    gap = obj["gap"]
    # The tuner records the test value of each round's best member (the seed mean), so
    # the report reads it instead of re-checking; the best trial is one of them.
    assert gap["source"] == "recorded" and gap["trial"] == trial.number
    assert len(gap["trials"]) == 2  # one per round
    assert gap["val"] == trial.value
    assert gap["test"] == trial.user_attrs[analysis.TEST_VALUE_ATTR]
    # ... which is the seed mean of ridge's exact test loss at the found penalty.
    tests = []
    for s in seeds_of(0, 3):
        one = ridge_factory({"features": trial.params["features"]}, seed=s)
        w = problems.ridge_solution(one, {"alpha": alpha})
        X, y = one.test
        tests.append(float(0.5 * jnp.mean((X @ w - y) ** 2)))
    assert gap["test"] == pytest.approx(np.mean(tests), rel=1e-8)
    assert (out / "sensitivity.png").exists()
    assert "== sensitivity (hypergradient) ==" in capsys.readouterr().out


def test_report_black_box_study_with_a_problem(storage, tmp_path):
    factory = "tests.test_analysis_report:ridge_factory"
    code, data, _ = _report(storage, "bb", tmp_path, "--no-plots", "--problem", factory)
    assert code == 0
    s = data["sensitivity"]
    study = Records.open(storage, "bb", create=False).study
    t = study.best_trial
    pb = ridge_factory({}, seed=t.user_attrs["seed"])
    exact = float(problems.ridge_hypergradient(pb, {"alpha": t.params["alpha"]})["alpha"])
    assert s["scaled_grad"]["alpha"] == pytest.approx(
        exact * t.params["alpha"] * math.log(1e5), rel=1e-6
    )
    # No test value recorded: the report re-checks the best trial on the factory's
    # problem, against ridge's exact solution there.
    gap = data["objectives"][0]["gap"]
    assert gap["source"] == "re-check" and gap["trial"] == t.number
    w = problems.ridge_solution(pb, {"alpha": t.params["alpha"]})
    for split, got in ((pb.val, gap["val"]), (pb.test, gap["test"])):
        X, y = split
        assert got == pytest.approx(float(0.5 * jnp.mean((X @ w - y) ** 2)), rel=1e-8)


def test_report_refuses_bad_options(storage, tmp_path, capsys):
    args = ["report", str(storage), "--study", "cond", "--no-plots"]
    assert main([*args, "--sections", "importance,speed"]) == 2
    assert "unknown section(s) ['speed']" in capsys.readouterr().err
    assert main([*args, "--top-k", "0"]) == 2
    assert "--top-k must be at least 1, got 0" in capsys.readouterr().err
    assert main([*args, "--trial", "999"]) == 2
    assert "has no trial 999" in capsys.readouterr().err
    assert main([*args, "--sections", "none"]) == 0
    assert "== importance" not in capsys.readouterr().out
