"""`hypergrad demo`: tune a model on bundled data by hypergradient, random search and TPE.

The problem: elastic-net logistic regression on scikit-learn's bundled breast-cancer
data (569 rows, 30 features; split 50/25/25, standardized), with two continuous
hyperparameters, the L1 and L2 penalties `alpha1` (log-uniform in [1e-5, 0.1]) and
`alpha2` (in [1e-5, 1]), and one categorical choice, the feature map (`"standard"`: the features as
they are, or `"log"`: `log1p` of them, then standardized). The criterion is the
validation log-loss; the test accuracy of the chosen model is reported beside it.

Three tuners get the same wall-time budget each, compilation included:

- hypergradient: `hypergrad.tune.tune`, one round per feature map (the hybrid: the
  categorical choice by enumeration, the penalties by hypergradient descent), then
  refinement rounds of the better map at lower learning rates while the budget lasts;
- random search and Optuna's TPE: each trial one inner solve at the proposed point.

Every trial of the three goes into one SQLite study per tuner in `--out`; the table and
a plot of the best validation loss against wall time are written there too.
"""

import datetime
import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optuna

from .. import _exported
from ..problems import accuracy, elastic_net_logistic, split_data
from ..records import Outcome, Records, record_trial, trial_seed
from ..search import OptunaSearch, RandomSearch
from ..space import Categorical, Real, Space

SPACE = Space(
    {
        "features": Categorical(("standard", "log")),
        # Above about 0.4 every weight is zero and the hypergradient vanishes.
        "alpha1": Real(1e-5, 1e-1, log=True),
        "alpha2": Real(1e-5, 1.0, log=True),
    }
)
PENALTIES = ("alpha1", "alpha2")
# Refinement rounds of the better feature map after its round (each at a third of the
# learning rate before), while the budget lasts and each gains more than 1e-6.
REFINE = 6


@functools.lru_cache(maxsize=8)
def _split(features: str, seed: int):
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    if features == "log":
        X = np.log1p(X)  # every feature is non-negative
    return split_data(X, y.astype(np.float64), val=0.25, test=0.25, seed=seed)


def problem(config, *, seed):
    """The demo's bilevel problem for a feature map (`config["features"]`) and a split."""
    d = _split(config["features"], int(seed))
    return elastic_net_logistic(
        d.X_train,
        d.y_train,
        d.X_val,
        d.y_val,
        d.X_test,
        d.y_test,
        alpha1=1e-2,
        alpha2=1e-2,
        tol=1e-6,
    )


@jax.jit
def _fit(pb, hparams):
    from ..methods import solve

    sol = solve(pb.inner, pb.init_params, hparams, pb.train, solver=pb.solver)
    return pb.outer(sol.params, hparams, pb.val), accuracy_of(sol.params, pb.test)


def accuracy_of(params, rows):
    return accuracy(params, (rows.X, rows.y))


def evaluate(config, *, seed):
    """One inner solve at `config`: validation log-loss, with the test accuracy."""
    pb = problem(config, seed=seed)
    h = {k: jnp.asarray(config[k], pb.hparams[k].dtype) for k in PENALTIES}
    val, acc = _exported.call("demo-fit", _fit, pb, h)
    return Outcome(float(val), inner_solves=1, attrs={"test_accuracy": float(acc)})


def _black_box(name, proposer, records, seed, budget_s, start):
    """Ask, evaluate and record one trial at a time until the budget is spent."""
    curve, best = [], (np.inf, None)
    while time.perf_counter() - start < budget_s:
        (proposal,) = proposer.ask(1)
        number, outcome = record_trial(
            records,
            evaluate,
            proposal.config,
            seed=seed,
            space=SPACE,
            proposer=proposer.describe(),
            trial_number=proposal.trial_number,
        )
        proposer.tell([proposal], [outcome.value])
        if outcome.value is not None and outcome.value < best[0]:
            best = (outcome.value, number)
        curve.append((time.perf_counter() - start, best[0]))
    value, number = best
    t = records.trial(number)
    return {
        "tuner": name,
        "best_val_loss": value,
        "test_accuracy": t.user_attrs["result.test_accuracy"],
        "config": dict(t.params),
        "wall_time_s": time.perf_counter() - start,
        "inner_solves": len(curve),
        "trials": len(curve),
        "curve": curve,
    }


def _gradient(records, seed, budget_s, start):
    from ..tune import tune

    curve = []
    began = datetime.datetime.now()
    res = tune(
        problem,
        SPACE,
        rounds=2,
        population=4,
        steps=25,
        learning_rate=0.3,
        refine=REFINE,
        min_improvement=1e-6,
        records=records,
        seed=seed,
        time_budget_s=budget_s,
        progress=False,
    )
    best = np.inf
    for rnd in res.rounds:  # a round's members finish together
        done = records.trial(rnd.members[-1].trial).datetime_complete
        best = min(best, rnd.value)
        curve.append(((done - began).total_seconds(), best))
    cfg = dict(res.config)
    h = {k: jnp.asarray(cfg[k]) for k in PENALTIES}
    _, acc = _exported.call("demo-fit", _fit, problem(cfg, seed=trial_seed(seed, 0)), h)
    return {
        "tuner": "hypergradient",
        "best_val_loss": res.value,
        "test_accuracy": float(acc),
        "config": cfg,
        "wall_time_s": time.perf_counter() - start,
        "inner_solves": res.num_inner_solves,
        "trials": sum(len(r.members) for r in res.rounds),
        "curve": curve,
    }


def run_demo(budget_s: float = 12.0, out_dir="hypergrad-demo", seed: int = 0, out=print):
    """Run the three tuners; print and return the table (one dict per tuner)."""
    jax.config.update("jax_enable_x64", True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{out_dir / 'demo.db'}"
    stamp = time.strftime("%Y%m%dT%H%M%S")
    data_seed = trial_seed(seed, 0)  # the split tune's first seed uses: all compare alike
    d = _split("standard", data_seed)
    out(
        "hypergrad demo: elastic-net logistic regression on breast_cancer "
        f"(n_train={len(d.y_train)}, n_val={len(d.y_val)}, n_test={len(d.y_test)}, p=30); "
        f"tuning alpha1 (log-uniform [1e-5, 0.1]), alpha2 ([1e-5, 1]) and the feature map "
        f"(standard | log); {budget_s:g} s per tuner\n"
    )
    rows = []
    for name in ("hypergradient", "random", "tpe"):
        records = Records.open(storage, f"demo-{name}-{stamp}")
        start = time.perf_counter()
        # Every tuner's programs are the library's own, built from this module's problem:
        # exported with the compilation cache (hypergrad._exported), a fresh process
        # neither traces nor lowers them again.
        with _exported.enabled():
            if name == "hypergradient":
                rows.append(_gradient(records, seed, budget_s, start))
            elif name == "random":
                proposer = RandomSearch(SPACE, seed=seed)
                rows.append(_black_box(name, proposer, records, data_seed, budget_s, start))
            else:
                proposer = OptunaSearch(SPACE, sampler="tpe", seed=seed, study=records.study)
                rows.append(_black_box("TPE", proposer, records, data_seed, budget_s, start))
    header = (
        f"{'tuner':14s} {'best val. log-loss':>18s} {'test acc.':>9s} {'wall time':>9s} "
        f"{'inner solves':>12s}  best configuration"
    )
    out(header)
    out("-" * len(header))
    for r in rows:
        cfg = r["config"]
        where = f"{cfg['features']}, alpha1={cfg['alpha1']:.3g}, alpha2={cfg['alpha2']:.3g}"
        out(
            f"{r['tuner']:14s} {r['best_val_loss']:18.5f} {r['test_accuracy']:9.3f} "
            f"{r['wall_time_s']:8.1f}s {r['inner_solves']:12d}  {where}"
        )
    out(f"\nstudies: {storage} (hypergrad report {out_dir / 'demo.db'} --study NAME)")
    plot = _plot(rows, out_dir / "demo.png")
    if plot:
        out(f"plot: {plot}")
    return rows


def _plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        t, v = zip(*r["curve"], strict=True)
        ax.step(t, v, where="post", label=r["tuner"])
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("best validation log-loss")
    ax.set_title("hypergrad demo: breast cancer, elastic-net logistic")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def register(sub):
    p = sub.add_parser(
        "demo", help="tune a model on bundled data: hypergradient vs random search vs TPE"
    )
    p.add_argument(
        "--budget", type=float, default=12.0, help="wall-time seconds per tuner (default 12)"
    )
    p.add_argument(
        "--out", default="hypergrad-demo", help="output folder (default ./hypergrad-demo)"
    )
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    if not args.budget > 0:
        raise SystemExit(f"hypergrad demo: --budget must be positive, got {args.budget}")
    run_demo(budget_s=args.budget, out_dir=args.out, seed=args.seed)
    return 0
