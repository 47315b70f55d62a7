"""`startup`: time to the first result in a fresh process, empty and warm cache.

What a user waits for is mostly tracing and compilation, not computation. Every figure
here comes from a fresh Python process (a subprocess of the benchmark), the clock
started inside the child after its imports and its data are ready, and stopped when the
first result is on the host (`jax.block_until_ready`). Two clocks (see BENCHMARKS.md):

- **empty cache**: `HYPERGRAD_CACHE_DIR` points at a new empty folder;
- **warm cache**: the same child again, on the folder the empty-cache run filled.

Cases:

- `import`: `import jax` and `import hypergrad` (the cache set-up included) in a fresh
  process, goal `import hypergrad <= 1.0 s` (a budget, written as the baseline);
- `logistic/*`: L2 logistic regression on breast cancer (scikit-learn's bundled data,
  split 50/25/25, standardized): the first hypergradient by hypergrad (its defaults, and
  L-BFGS + implicit CG as in `hypergradient_cost`), jaxopt and optimistix (the same
  L-BFGS + CG settings, under one `jax.jit`), all building the problem inside the
  clock; the first `tune` result (one round, 4 members, 10 outer steps); scikit-learn's
  `LogisticRegression.fit` as a reference line;
- `lasso/*`: the lasso at n=1000, p=5000 (correlated Gaussian design): hypergrad's
  first hypergradient (coordinate descent, implicit), jaxopt's (`ProximalGradient` with
  `prox_lasso`, implicit differentiation; optimistix has no proximal solver), the first
  `tune` result, scikit-learn's `Lasso.fit`;
- `demo`: `hypergrad demo` (its `run_demo`, warm cache, seeds 0 to 4): the time of the
  hypergradient tuner's first result against the time of TPE's tenth trial (goal: before
  it), and the seeds whose hypergradient tuner ends the budget behind TPE (goal: at most
  one of five).

Goals from issue 10: warm cache, the first hypergradient `<= 0.5 s` (written as a ratio to
that budget); empty cache, the first hypergradient `<= 0.7x` the first call of jaxopt and
of optimistix; `import hypergrad <= 1.0 s`; the demo's first hypergradient result before
TPE's tenth trial. A child's process start and imports are reported apart
(`import_s`), never inside a figure with a goal.

Run: `python -m benchmarks run startup` (`--quick`: one repetition, a 4 s demo budget,
no jaxopt and no tune on the lasso; a CI smoke run of a few minutes). A child with no
result within `CHILD_TIMEOUT_S` is stopped and recorded as an error.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from ._harness import case

LASSO_N, LASSO_P = 1000, 5000
INNER_TOL = 1e-9  # L-BFGS gradient-norm stop, as in hypergradient_cost
CG_TOL = 1e-5  # the CG tolerance hypergradient_cost picks for logistic at error 1e-6
OPTX_RTOL = 1e-6  # optimistix's Cauchy rtol = atol reaching that error there
FIRST_HG_BUDGET_S = 0.5  # issue 10: warm cache, the first hypergradient
IMPORT_BUDGET_S = 1.0  # issue 10: import hypergrad
LASSO_WHO = ("hypergrad_default", "jaxopt", "tune", "sklearn")
CHILD_TIMEOUT_S = 300  # a child with no result by then is recorded as such
DEMO_SEEDS = 5  # issue 10: the demo's tuner at most TPE's at the end in 4 of 5 seeds

DEFINITIONS = {
    "first_s": "build_s + call_s: seconds from the start (problem construction included) to "
    "the first result on the host, in a fresh process; import and data loading excluded",
    "build_s": "constructing the problem (hypergrad.problems.logistic / lasso; the peers "
    "use the same problem's functions and data) and the jitted function",
    "call_s": "the call to its first result (tracing, lowering, compilation or a cache "
    "load, and the computation); the goals are on call_s",
    "second_s": "the same call again in the same process (compiled): the computation",
    "import_s": "seconds the child spent importing what it needs before its clock started",
    "empty": "HYPERGRAD_CACHE_DIR a new empty folder (JAX's persistent cache empty)",
    "warm": "the same child again on the folder its empty-cache run filled",
    "reps": "fresh folders (empty + warm pairs); figures are medians over them",
    "hypergrad_default": "hypergrad.hypergradient(problem, problem.hparams) with the "
    "problem's own solver and method, called as a user calls it (no jax.jit around it)",
    "hypergrad_lbfgs_cg": f"jax.jit of hypergradient(..., solver=LBFGS(tol={INNER_TOL}), "
    f"method=Implicit(CG(tol={CG_TOL})))",
    "jaxopt": f"jax.jit of jax.grad through jaxopt.LBFGS(tol={INNER_TOL}, implicit_diff=True, "
    f"solve_cg(tol={CG_TOL})) (logistic); ProximalGradient(prox_lasso, tol=1e-6, "
    "implicit_diff=True) (lasso)",
    "optimistix": f"jax.jit of jax.grad through optx.minimise(LBFGS(rtol=atol={OPTX_RTOL}), "
    f"adjoint=ImplicitAdjoint(lineax.CG(rtol={CG_TOL})))",
    "tune": "hypergrad.tune.tune(problem, one log-uniform penalty, rounds=1, population=4, "
    "steps=10) into a fresh SQLite study; the clock stops when it returns",
    "sklearn": "scikit-learn's fit at its defaults (LogisticRegression(C=1/(alpha n)), "
    "Lasso(alpha)), the first fit in a fresh process: a reference line, no goal",
    "demo": "run_demo(budget_s, seed) in a fresh process per seed 0..4 with a warm cache "
    "(filled by an earlier demo run of seed 0); hg_first_s: when the hypergradient tuner's "
    "first round finished (its first result); tpe_tenth_s: when TPE's tenth trial "
    "finished, each from its tuner's start; hg_best, tpe_best: their best validation "
    "log-loss at the end of the budget",
}


# --- the children (each runs in a fresh process) -------------------------------------------


def _logistic_data():
    from hypergrad import problems as hp

    d = hp.load("breast_cancer", val=0.25, test=0.25, seed=0)
    return d.X_train, d.y_train.astype(float), d.X_val, d.y_val.astype(float)


def _lasso_data():
    from hypergrad import problems as hp

    X, y = hp.synthetic_regression(2 * LASSO_N, LASSO_P, seed=0)
    return X[:LASSO_N], y[:LASSO_N], X[LASSO_N:], y[LASSO_N:]


# Each child factory returns `(build, call)`: `build(data)` makes what the call needs (the
# problem, a jitted function: made once, so a second call reuses it), `call(built)` runs
# to the first result. Both are inside the clock (`build_s`, `call_s`).


def _problem_builder(problem_name):
    from hypergrad import problems as hp

    build = {"logistic": hp.logistic, "lasso": hp.lasso}[problem_name]
    return lambda data: build(*data)


def _hypergrad_default(problem_name):
    import hypergrad

    def call(problem):
        return hypergrad.hypergradient(problem, problem.hparams).grad

    return _problem_builder(problem_name), call


def _hypergrad_lbfgs_cg(problem_name):
    import jax

    from hypergrad import CG, Implicit, hypergradient
    from hypergrad.solvers import LBFGS

    solver, method = LBFGS(tol=INNER_TOL), Implicit(CG(tol=CG_TOL))
    f = jax.jit(lambda pr, h: hypergradient(pr, h, solver=solver, method=method).grad)
    return _problem_builder(problem_name), lambda problem: f(problem, problem.hparams)


def _jaxopt(problem_name):
    from functools import partial

    import jax
    import jax.numpy as jnp
    import jaxopt

    from hypergrad import problems as hp

    if problem_name == "logistic":

        def build(data):
            problem = hp.logistic(*data)

            def value(h, init):
                solver = jaxopt.LBFGS(
                    fun=problem.inner,
                    tol=INNER_TOL,
                    maxiter=5000,
                    implicit_diff=True,
                    implicit_diff_solve=partial(jaxopt.linear_solve.solve_cg, tol=CG_TOL),
                )
                w = solver.run(init, h, problem.train).params
                return problem.outer(w, h, problem.val)

            return jax.jit(jax.grad(value)), (problem.hparams, problem.init_params)

        return build, lambda built: built[0](*built[1])

    def smooth(w, Xy):
        A, b = Xy
        return 0.5 * jnp.mean((A @ w - b) ** 2)

    def value(alpha, X, y, Xv, yv):
        solver = jaxopt.ProximalGradient(
            fun=smooth, prox=jaxopt.prox.prox_lasso, tol=1e-6, maxiter=5000, implicit_diff=True
        )
        w = solver.run(jnp.zeros(X.shape[1]), alpha, (X, y)).params
        return 0.5 * jnp.mean((Xv @ w - yv) ** 2)

    f = jax.jit(jax.grad(value))

    def build(data):
        return (hp.alpha_max(data[0], data[1]) / 10, *data)

    return build, lambda built: f(*built)


def _optimistix(problem_name):
    import jax
    import lineax as lx
    import optimistix as optx

    from hypergrad import problems as hp

    adjoint = optx.ImplicitAdjoint(linear_solver=lx.CG(rtol=CG_TOL, atol=0.0))

    def value(h, init, problem):
        sol = optx.minimise(
            lambda w, args: problem.inner(w, args[0], args[1]),
            optx.LBFGS(rtol=OPTX_RTOL, atol=OPTX_RTOL),
            init,
            args=(h, problem.train),
            max_steps=5000,
            adjoint=adjoint,
            throw=False,
            # The Hessian is symmetric positive definite: lineax's CG requires the tag.
            tags=frozenset({lx.symmetric_tag, lx.positive_semidefinite_tag}),
        )
        return problem.outer(sol.value, h, problem.val)

    f = jax.jit(jax.grad(value))

    def build(data):
        return hp.logistic(*data)

    return build, lambda problem: f(problem.hparams, problem.init_params, problem)


def _tune(problem_name):
    import numpy as np

    from hypergrad.records import Records
    from hypergrad.space import Real, Space
    from hypergrad.tune import tune

    folder = tempfile.mkdtemp(prefix="hg-startup-")

    def call(problem):
        a0 = float(np.max(np.asarray(problem.hparams["alpha"])))
        space = Space({"alpha": Real(a0 / 100, a0 * 10, log=True)})
        records = Records.open(f"sqlite:///{folder}/tune.db", f"startup-{time.time_ns()}")
        res = tune(problem, space, rounds=1, population=4, steps=10, records=records)
        return res.value

    return _problem_builder(problem_name), call


def _sklearn(problem_name):
    from sklearn.linear_model import Lasso, LogisticRegression

    from hypergrad import problems as hp

    def build(data):
        X, y = data[0], data[1]
        if problem_name == "logistic":
            # hypergrad's default alpha=1e-2 on the mean loss is C = 1/(alpha n).
            return LogisticRegression(C=1.0 / (1e-2 * len(y))), X, y
        return Lasso(alpha=hp.alpha_max(X, y) / 10), X, y

    return build, lambda built: built[0].fit(built[1], built[2]).coef_


_CALLS = {
    "hypergrad_default": _hypergrad_default,
    "hypergrad_lbfgs_cg": _hypergrad_lbfgs_cg,
    "jaxopt": _jaxopt,
    "optimistix": _optimistix,
    "tune": _tune,
    "sklearn": _sklearn,
}


def _child_first(problem_name: str, who: str) -> dict:
    start = time.perf_counter()
    import jax

    jax.config.update("jax_enable_x64", True)
    import hypergrad  # noqa: F401 - the cache is on from here

    data = {"logistic": _logistic_data, "lasso": _lasso_data}[problem_name]()
    build, call = _CALLS[who](problem_name)
    import_s = time.perf_counter() - start
    t0 = time.perf_counter()
    built = build(data)
    t1 = time.perf_counter()
    jax.block_until_ready(call(built))
    t2 = time.perf_counter()
    out = {"first_s": t2 - t0, "build_s": t1 - t0, "call_s": t2 - t1, "import_s": import_s}
    if who != "tune":  # the same call again, compiled: what is left is computation
        jax.block_until_ready(call(built))
        out["second_s"] = time.perf_counter() - t2
    return out


def _child_import() -> dict:
    t0 = time.perf_counter()
    import jax  # noqa: F401

    t1 = time.perf_counter()
    import hypergrad  # noqa: F401

    t2 = time.perf_counter()
    return {"jax_s": t1 - t0, "hypergrad_s": t2 - t1, "import_s": t2 - t0}


def _child_demo(budget_s: float, seed: int) -> dict:
    from hypergrad.cli._demo import run_demo

    out = tempfile.mkdtemp(prefix="hg-demo-")
    rows = run_demo(budget_s, out_dir=out, seed=seed, out=lambda *a: None)
    by = {r["tuner"]: r for r in rows}
    hg, tpe = by["hypergradient"]["curve"], by["TPE"]["curve"]
    return {
        "seed": seed,
        "hg_first_s": hg[0][0] if hg else None,
        "tpe_tenth_s": tpe[9][0] if len(tpe) >= 10 else None,
        "tpe_trials": len(tpe),
        "hg_best": by["hypergradient"]["best_val_loss"],
        "tpe_best": by["TPE"]["best_val_loss"],
    }


def _child(spec: dict) -> dict:
    if spec["kind"] == "import":
        return _child_import()
    if spec["kind"] == "demo":
        return _child_demo(spec["budget_s"], spec["seed"])
    return _child_first(spec["problem"], spec["who"])


# --- the parent ------------------------------------------------------------------------


def _spawn(spec: dict, cache: str, timeout: float = CHILD_TIMEOUT_S) -> dict:
    env = dict(os.environ, HYPERGRAD_CACHE_DIR=cache, HYPERGRAD_CACHE="1")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the library's cache, not a user's
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.startup", "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:g} s (the child was stopped)"}
    if proc.returncode != 0:
        # The exception's own line, not JAX's note on filtered frames printed after it.
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        raised = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln)]
        return {"error": (raised or lines)[-1][:500]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _pairs(spec: dict, reps: int) -> dict:
    """`reps` empty + warm pairs of fresh processes -> medians per clock."""
    runs = {"empty": [], "warm": []}
    for _ in range(reps):
        with tempfile.TemporaryDirectory(prefix="hg-cache-") as cache:
            runs["empty"].append(_spawn(spec, cache))
            runs["warm"].append(_spawn(spec, cache))
    out = {}
    for clock, rs in runs.items():
        errors = [r["error"] for r in rs if "error" in r]
        good = [r for r in rs if "error" not in r]
        if not good:
            out[clock] = {"error": errors[0]}
            continue
        out[clock] = {k: statistics.median(r[k] for r in good) for k in good[0]}
        out[clock]["runs"] = [r.get("first_s", r.get("import_s")) for r in good]
        if errors:
            out[clock]["errors"] = errors
    return out


def _first_cases(problem: str, whos: tuple, reps: int, tune_reps: int) -> list:
    figs = {
        who: _pairs(
            {"kind": "first", "problem": problem, "who": who}, tune_reps if who == "tune" else reps
        )
        for who in whos
    }
    cases = []
    for who, fig in figs.items():
        cases.append(case(f"{problem}/{who}", fig))
    ours = figs.get("hypergrad_default", {}).get("warm", {})
    if problem == "logistic" and "call_s" in ours:
        cases.append(
            case(
                f"{problem}/hypergrad_default/warm_vs_budget",
                {"call_s": ours["call_s"], "build_s": ours["build_s"]},
                baseline={"name": "issue 10's budget", "call_s": FIRST_HG_BUDGET_S},
                key="call_s",
                goal="<= 1.0",
                note="warm cache: the first hypergradient within 0.5 s of the call (the "
                "problem's construction, build_s, apart)",
            )
        )
    for ours_name in ("hypergrad_default", "hypergrad_lbfgs_cg"):
        mine = figs.get(ours_name, {}).get("empty", {})
        for peer in ("jaxopt", "optimistix"):
            theirs = figs.get(peer, {}).get("empty", {})
            if "call_s" in mine and "call_s" in theirs:
                cases.append(
                    case(
                        f"{problem}/{ours_name}/empty_vs_{peer}",
                        {"call_s": mine["call_s"]},
                        baseline={"name": peer, "call_s": theirs["call_s"]},
                        key="call_s",
                        goal="<= 0.7",
                        note="empty cache: first hypergradient over the peer's first call",
                    )
                )
    return cases


def run(quick: bool = False) -> dict:
    reps = 1 if quick else 3
    cases = []
    imp = _pairs({"kind": "import"}, reps)
    cases.append(
        case(
            "import",
            {"import_s": imp["warm"]["hypergrad_s"], **imp},
            baseline={"name": "issue 10's budget", "import_s": IMPORT_BUDGET_S},
            key="import_s",
            goal="<= 1.0",
            note="import hypergrad after import jax (warm cache folder), in a fresh process",
        )
    )
    logistic = ("hypergrad_default", "hypergrad_lbfgs_cg", "jaxopt", "optimistix", "tune")
    cases += _first_cases("logistic", logistic + ("sklearn",), reps, reps)
    # quick: no peer and no tune on the lasso (its first tune result takes about a minute:
    # at the space's lower end, alpha0 / 100 with n < p, the solve runs to max_steps).
    lasso = ("hypergrad_default", "sklearn") if quick else LASSO_WHO
    # One pair for the lasso's tune: its first result takes about a minute.
    cases += _first_cases("lasso", lasso, reps, 1)

    budget, seeds = (4.0, 1) if quick else (12.0, DEMO_SEEDS)
    with tempfile.TemporaryDirectory(prefix="hg-cache-") as cache:
        filled = _spawn({"kind": "demo", "budget_s": budget, "seed": 0}, cache)
        demos = [
            _spawn({"kind": "demo", "budget_s": budget, "seed": s}, cache) for s in range(seeds)
        ]
    good = [d for d in demos if "error" not in d and d["hg_first_s"] and d["tpe_tenth_s"]]
    fig = {"filling_run": filled, "runs": demos, "budget_s": budget}
    if good:
        fig["time_s"] = statistics.median(d["hg_first_s"] for d in good)
        tenth = statistics.median(d["tpe_tenth_s"] for d in good)
        cases.append(
            case(
                "demo/warm",
                fig,
                baseline={"name": "TPE's tenth trial", "time_s": tenth},
                goal="< 1.0",
                note="time_s: the hypergradient tuner's first result (ours), TPE's tenth "
                "trial (baseline), medians over the runs, warm cache",
            )
        )
    else:
        note = "no run with both a first result and ten TPE trials: no ratio"
        cases.append(case("demo/warm", fig, note=note))
    ended = [d for d in demos if "error" not in d]
    if ended:
        behind = sum(d["hg_best"] > d["tpe_best"] for d in ended)
        cases.append(
            case(
                "demo/behind_tpe",
                {"seeds_behind": behind, "seeds": [d["seed"] for d in ended]},
                baseline={"name": "seeds run", "seeds_behind": len(ended)},
                key="seeds_behind",
                goal="<= 0.2",
                note="the fraction of the demo's seeds whose hypergradient tuner ended the "
                "budget with a higher best validation loss than TPE (issue 10: at most 1 of "
                "5); the same runs as demo/warm",
            )
        )
    return {"cases": cases, "definitions": DEFINITIONS}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="a child of the startup benchmark")
    parser.add_argument("--child", required=True, help="JSON spec of the measurement")
    args = parser.parse_args(argv)
    print(json.dumps(_child(json.loads(args.child))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
