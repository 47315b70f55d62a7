"""`hypergradient_cost`: what one hypergradient costs, by each method and against peers.

On ridge and on L2 logistic regression (float64, `n` training rows, `p` features):

- the time of one inner solve with the problem's own solver at a tight tolerance;
- for each method, the time of one hypergradient and its relative error against the
  exact hypergradient (ridge: closed form; logistic: tight Newton solve + dense solve);
- `Implicit(CG)` at relative error 1e-6 against the inner solve it differentiates
  (goal: at most 0.5x);
- hypergrad against jaxopt (`LBFGS(implicit_diff=True)` with CG) and optimistix
  (`minimise(LBFGS, adjoint=ImplicitAdjoint(lineax.CG))`) on the same problem, all with
  an L-BFGS inner solve, at matched accuracy (goal: at most 1.0x the faster peer);
- memory and time of `Unrolled("reverse")` over 10,000 SGD steps with and without
  checkpoints (goal: memory at most 0.1x, time at most 2x).

What each figure means is written into the results file under `definitions`.
"""

import json
import math
import os
import resource
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from hypergrad import (  # noqa: E402
    CG,
    GMRES,
    Dense,
    Implicit,
    Neumann,
    Unrolled,
    hypergradient,
    outer_loss,
)
from hypergrad import problems as hp  # noqa: E402
from hypergrad.solvers import LBFGS, Newton, OptaxSolver  # noqa: E402
from hypergrad.solvers import run as run_solver  # noqa: E402

from ._harness import case, time_side_by_side  # noqa: E402

TARGET_ERROR = 1e-6  # the accuracy at which Implicit(CG) and the peers are compared
# Tolerance scans, loosest first: each side of a comparison runs at the loosest setting
# of its scan that reaches TARGET_ERROR. Near the target the scans step by less than a
# decade (1, 0.7, 0.5, 0.3, 0.2): on a decade grid one library could stop at 2e-6 error
# and need the next decade's extra steps while another, its luck with the same steps,
# stopped at 8e-7, and the grid, not the libraries, decided the comparison.
CG_TOLS = (1e-4, 7e-5, 5e-5, 3e-5, 2e-5, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-12)
INNER_TOL = 1e-9  # L-BFGS gradient-norm tolerance (the logistic problem's default)
# Gradient-norm tolerances scanned for hypergrad's and jaxopt's L-BFGS against the peers.
INNER_TOLS = (1e-6, 7e-7, 5e-7, 3e-7, 2e-7, 1e-7, 1e-8, 1e-9)
# optimistix's Cauchy rtol = atol (other units than the gradient norm: a wider scan).
OPTX_TOLS = (1e-6, 7e-7, 5e-7, 3e-7, 2e-7, 1e-7, 1e-8, 1e-10, 1e-12)
MAX_STEPS = 5000

DEFINITIONS = {
    "time_s": "median wall time of the compiled call over `reps` rounds (compilation "
    "excluded); functions compared in one case are called in turns, round by round",
    "first_call_s": "wall time of the first call of a fresh jax.jit: tracing, compilation "
    "and one run",
    "error": "||g - g_exact|| / ||g_exact|| for the hypergradient g with respect to "
    "hparams; g_exact: ridge closed form (ridge_hypergradient), logistic: Newton to "
    "gradient norm 1e-13 + Implicit(Dense(symmetric=True))",
    "inner_solve": "run(problem.solver) from problem.init_params (zeros) to the solver's "
    "tolerance: Newton(max_steps=1), the exact solve, for ridge; LBFGS(tol=1e-9) for "
    "logistic",
    "derivative": "for implicit methods, the cost of the derivative given the inner "
    "solution: hypergradient(problem, hparams, method=m, init_params=w*) started at the "
    "solution w* of the inner solve, so the solver stops at its first check (num_steps "
    "== 0: one objective gradient) and what is timed is the outer gradient, the adjoint "
    "linear solve and one VJP with dF/dhparams",
    "total": "hypergradient(...) from problem.init_params: inner solve + derivative. For "
    "unrolled methods only this is defined; `extra_s` = total - inner solve",
    "implicit_cg_tol": "the loosest CG tolerance in CG_TOLS whose derivative at w* has "
    "error <= 1e-6",
    "peers": "all three with an L-BFGS inner solve and implicit differentiation by CG "
    "at matched accuracy, each library at the loosest inner tolerance of its scan whose "
    "hypergradient from zeros has error <= 1e-6 (the tightest if none does), the CG "
    "tolerance the implicit_cg one: hypergrad LBFGS(tol=t) + Implicit(CG(tol)); jaxopt "
    "LBFGS(tol=t, implicit_diff=True, implicit_diff_solve=solve_cg(tol)) (the same "
    "gradient-norm stop and the same jax.scipy CG), t from INNER_TOLS; optimistix "
    "LBFGS(rtol=atol=r) (Cauchy stop on steps and values, backtracking Armijo line "
    "search) with ImplicitAdjoint(lineax.CG(rtol=tol, atol=0)), r from OPTX_TOLS. "
    "`end_to_end` starts from zeros; `at_solution` starts each solver at w* and "
    "so times mainly the derivative (optimistix's Cauchy stop needs a few steps there: "
    "num_steps is recorded). Ratio: hypergrad / the faster peer",
    "unrolled_memory": "ridge with OptaxSolver(optax.sgd(1/L), steps, tol=None), "
    "jax.grad of outer_loss with Unrolled('reverse', checkpoints) w.r.t. alpha. "
    "xla_temp_bytes: the compiled program's temporary buffers "
    "(compiled.memory_analysis().temp_size_in_bytes); run_rss_increase_bytes: in a fresh "
    "subprocess, peak RSS during one call (ru_maxrss) minus RSS before it, after "
    "compilation",
}


def _sizes(quick: bool) -> dict:
    # --quick exercises every code path on small sizes with fewer methods, scans and
    # compilations (compilation, not running, is most of its time).
    if quick:
        return dict(
            n=200,
            n_val=100,
            p=40,
            reps=2,
            min_total_s=0.0,
            steps=1000,
            checkpoints=10,
            mem_n=200,
            mem_p=40,
            mem_reps=1,
            methods={"ridge": ("implicit_cg", "unrolled_forward"), "logistic": ("implicit_cg",)},
            peers=("ridge",),
            cg_tols=(1e-6, 1e-8, 1e-10),
            optx_tols=(1e-10,),
            inner_tols=(INNER_TOL,),
            at_solution=False,
            rss=False,
        )
    return dict(
        n=2000,
        n_val=1000,
        p=500,
        reps=7,
        min_total_s=0.5,  # calls of a few ms: more rounds (see time_side_by_side)
        steps=10_000,
        checkpoints=100,
        mem_n=2000,
        mem_p=500,
        mem_reps=3,
        methods=None,
        peers=("ridge", "logistic"),
        cg_tols=CG_TOLS,
        optx_tols=OPTX_TOLS,
        inner_tols=INNER_TOLS,
        at_solution=True,
        rss=True,
    )


def _rel_error(g, exact) -> float:
    a, b = ravel_pytree(g)[0], ravel_pytree(exact)[0]
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def _ridge(cfg):
    X, y = hp.synthetic_regression(cfg["n"] + cfg["n_val"], cfg["p"], seed=0)
    n = cfg["n"]
    problem = hp.ridge(X[:n], y[:n], X[n:], y[n:], alpha=0.1)
    return problem, hp.ridge_hypergradient(problem, problem.hparams)


def _logistic(cfg):
    X, y = hp.synthetic_classification(cfg["n"] + cfg["n_val"], cfg["p"], seed=0)
    n = cfg["n"]
    problem = hp.logistic(X[:n], y[:n], X[n:], y[n:], alpha=1e-2)
    exact = jax.jit(
        lambda pr, h: (
            hypergradient(
                pr,
                h,
                solver=Newton(max_steps=50, tol=1e-13),
                method=Implicit(Dense(symmetric=True)),
            ).grad
        )
    )(problem, problem.hparams)
    return problem, exact


# --- hypergrad ------------------------------------------------------------------------------


def _hg(solver, method):
    """A fresh jit of `(problem, hparams, init) -> (grad, inner steps)`."""

    def f(problem, hparams, init):
        out = hypergradient(problem, hparams, solver=solver, method=method, init_params=init)
        return out.grad, out.solution.stats["num_steps"]

    return jax.jit(f)


def _inner(solver):
    return jax.jit(lambda pr, h: run_solver(solver, pr.inner, pr.init_params, h, pr.train))


def _hessian_extremes(problem, params):
    flat, unravel = ravel_pytree(params)
    f = lambda x: problem.inner(unravel(x), problem.hparams, problem.train)  # noqa: E731
    eig = np.linalg.eigvalsh(np.asarray(jax.hessian(f)(flat)))
    return float(eig[0]), float(eig[-1])


def _pick_cg_tol(problem, solver, w_star, exact, tols):
    """The loosest CG tolerance whose derivative at `w_star` reaches TARGET_ERROR."""
    tried = {}
    for tol in tols:
        g, _ = _hg(solver, Implicit(CG(tol=tol)))(problem, problem.hparams, w_star)
        tried[tol] = _rel_error(g, exact)
        if tried[tol] <= TARGET_ERROR:
            return tol, tried
    return tols[-1], tried


def _method_cases(label, problem, exact, cfg):
    h, solver = problem.hparams, problem.solver
    sol = _inner(solver)(problem, h)
    w_star = sol.params
    cg_tol, cg_scan = _pick_cg_tol(problem, solver, w_star, exact, cfg["cg_tols"])
    lo, hi = _hessian_extremes(problem, w_star)
    # Neumann with step 1/L contracts by (1 - lo/hi) per term: enough terms for 1e-6.
    neumann_terms = min(5000, math.ceil(math.log(1 / TARGET_ERROR) * hi / lo))
    implicit = {
        "implicit_cg": Implicit(CG(tol=cg_tol)),
        "implicit_gmres": Implicit(GMRES(tol=cg_tol)),
        "implicit_neumann": Implicit(Neumann(num_terms=neumann_terms, step_size=1 / hi)),
        "implicit_dense": Implicit(Dense(symmetric=True)),
    }
    unrolled = {"unrolled_forward": Unrolled("forward")}
    if solver.reverse_differentiable:
        unrolled["unrolled_reverse"] = Unrolled("reverse")
    if cfg["methods"] is not None:
        implicit = {k: v for k, v in implicit.items() if k in cfg["methods"][label]}
        unrolled = {k: v for k, v in unrolled.items() if k in cfg["methods"][label]}

    calls = {"inner_solve": (_inner(solver), (problem, h))}
    for name, m in implicit.items():
        fn = _hg(solver, m)  # one compilation serves both starting points
        calls[f"{name}/derivative"] = (fn, (problem, h, w_star))
        calls[f"{name}/total"] = (fn, (problem, h, problem.init_params))
    for name, m in unrolled.items():
        calls[f"{name}/total"] = (_hg(solver, m), (problem, h, problem.init_params))
    times = time_side_by_side(calls, cfg["reps"], cfg["min_total_s"])

    inner_fig = {
        **times["inner_solve"],
        "solver": repr(solver),
        "num_steps": sol.stats["num_steps"],
        "grad_norm": sol.stats["grad_norm"],
        "status": sol.status,
    }
    cases = [
        case(
            f"{label}/inner_solve",
            inner_fig,
            note=f"Hessian eigenvalues at w* in [{lo:.3g}, {hi:.3g}]",
        )
    ]
    for name, m in {**implicit, **unrolled}.items():
        fig = {"method": repr(m)}
        for part in ("derivative", "total"):
            key = f"{name}/{part}"
            if key not in calls:
                continue
            fn, args = calls[key]
            g, steps = fn(*args)
            fig[part] = {**times[key], "error": _rel_error(g, exact), "inner_steps": steps}
        fig["extra_s"] = fig["total"]["time_s"] - times["inner_solve"]["time_s"]
        cases.append(case(f"{label}/{name}", fig))
    if not solver.reverse_differentiable and cfg["methods"] is None:
        cases.append(
            case(
                f"{label}/unrolled_reverse",
                {"skipped": f"{solver!r} is not reverse-differentiable (line search)"},
            )
        )

    cg = {**times["implicit_cg/derivative"], "cg_tol": cg_tol, "cg_tol_scan": cg_scan}
    g, _ = calls["implicit_cg/derivative"][0](problem, h, w_star)
    cg["error"] = _rel_error(g, exact)
    cases.append(
        case(
            f"{label}/implicit_cg_vs_inner_solve",
            cg,
            baseline={"name": f"inner solve, {solver!r}", **times["inner_solve"]},
            goal="<= 0.5",
            note="derivative given the solution (see definitions) over the inner solve",
        )
    )
    return cases, w_star, cg_tol


# --- peers ----------------------------------------------------------------------------------


def _jaxopt_hg(cg_tol, tol=INNER_TOL):
    import jaxopt

    def f(problem, hparams, init):
        solver = jaxopt.LBFGS(
            fun=problem.inner,
            tol=tol,
            maxiter=MAX_STEPS,
            implicit_diff=True,
            implicit_diff_solve=partial(jaxopt.linear_solve.solve_cg, tol=cg_tol),
        )

        def value(h):
            out = solver.run(init, h, problem.train)
            return problem.outer(out.params, h, problem.val), out.state.iter_num

        return jax.grad(value, has_aux=True)(hparams)

    return jax.jit(f)


def _optx_hg(rtol, cg_tol):
    import lineax as lx
    import optimistix as optx

    def f(problem, hparams, init):
        fn = lambda w, args: problem.inner(w, args[0], args[1])  # noqa: E731
        adjoint = optx.ImplicitAdjoint(linear_solver=lx.CG(rtol=cg_tol, atol=0.0))

        def value(h):
            sol = optx.minimise(
                fn,
                optx.LBFGS(rtol=rtol, atol=rtol),
                init,
                args=(h, problem.train),
                max_steps=MAX_STEPS,
                adjoint=adjoint,
                throw=False,
                # The Hessian is symmetric positive definite: lineax's CG requires the tag.
                tags=frozenset({lx.symmetric_tag, lx.positive_semidefinite_tag}),
            )
            return problem.outer(sol.value, h, problem.val), sol.stats["num_steps"]

        return jax.grad(value, has_aux=True)(hparams)

    return jax.jit(f)


def _loosest(make, tols, problem, exact):
    """The loosest of `tols` (loosest first) whose `make(tol)` hypergradient from zeros
    has error <= TARGET_ERROR (the last if none does), its function and the scan."""
    scan = {}
    for tol in tols:
        fn = make(tol)
        g, _ = fn(problem, problem.hparams, problem.init_params)
        scan[tol] = _rel_error(g, exact)
        if scan[tol] <= TARGET_ERROR:
            break
    return tol, fn, scan


def _scan_note(scan):
    return ", ".join(f"{k:g} -> {v:.2g}" for k, v in scan.items())


def _peer_cases(label, problem, exact, w_star, cg_tol, cfg):
    h = problem.hparams
    # Each library at the loosest setting of its scan that reaches the target accuracy
    # (optimistix's stop has other units than the gradient norm of the other two).
    ours_tol, ours, ours_scan = _loosest(
        lambda t: _hg(LBFGS(max_steps=MAX_STEPS, tol=t), Implicit(CG(tol=cg_tol))),
        cfg["inner_tols"],
        problem,
        exact,
    )
    jaxopt_tol, jaxopt_fn, jaxopt_scan = _loosest(
        lambda t: _jaxopt_hg(cg_tol, t), cfg["inner_tols"], problem, exact
    )
    rtol, optx_fn, optx_scan = _loosest(
        lambda r: _optx_hg(r, cg_tol), cfg["optx_tols"], problem, exact
    )
    calls = {}
    wheres = {"end_to_end": problem.init_params, "at_solution": w_star}
    if not cfg["at_solution"]:
        del wheres["at_solution"]
    fns = {"hypergrad": ours, "jaxopt": jaxopt_fn, "optimistix": optx_fn}
    for where, init in wheres.items():
        for lib, fn in fns.items():  # one compilation per library serves both starts
            calls[f"{lib}/{where}"] = (fn, (problem, h, init))
    times = time_side_by_side(calls, cfg["reps"], cfg["min_total_s"])
    settings = {
        "hypergrad": f"LBFGS(tol={ours_tol}) + Implicit(CG(tol={cg_tol}))",
        "jaxopt": f"jaxopt.LBFGS(tol={jaxopt_tol}, implicit_diff=True) + solve_cg(tol={cg_tol})",
        "optimistix": f"optx.LBFGS(rtol=atol={rtol}) + ImplicitAdjoint(lineax.CG(rtol={cg_tol}))",
    }
    cases = []
    for where in wheres:
        figs = {}
        for lib in ("hypergrad", "jaxopt", "optimistix"):
            fn, args = calls[f"{lib}/{where}"]
            g, steps = fn(*args)
            figs[lib] = {
                "settings": settings[lib],
                **times[f"{lib}/{where}"],
                "error": _rel_error(g, exact),
                "inner_steps": steps,
            }
        faster = min(("jaxopt", "optimistix"), key=lambda lib: figs[lib]["time_s"])
        other = "optimistix" if faster == "jaxopt" else "jaxopt"
        cases.append(
            case(
                f"{label}/vs_peers/{where}",
                figs["hypergrad"],
                baseline={"name": faster, **figs[faster]},
                goal="<= 1.0",
                note=f"other peer {other}: {figs[other]['time_s']:.4g} s, error "
                f"{figs[other]['error']:.2g}; inner tolerance scans (tol -> error): "
                f"hypergrad {_scan_note(ours_scan)}; jaxopt {_scan_note(jaxopt_scan)}; "
                f"optimistix {_scan_note(optx_scan)}",
            )
        )
        cases[-1]["other_peer"] = {"name": other, **figs[other]}
    return cases


# --- unrolled memory ------------------------------------------------------------------------


def _memory_problem(quick):
    cfg = _sizes(quick)
    X, y = hp.synthetic_regression(2 * cfg["mem_n"], cfg["mem_p"], seed=1)
    n = cfg["mem_n"]
    problem = hp.ridge(X[:n], y[:n], X[n:], y[n:], alpha=0.1)
    top = float(np.linalg.eigvalsh(X[:n].T @ X[:n] / n)[-1]) + 0.1
    solver = OptaxSolver(optax.sgd(1.0 / top), max_steps=cfg["steps"], tol=None)
    return problem, solver, cfg


def _unrolled_grad(solver, checkpoints):
    method = Unrolled("reverse", checkpoints=checkpoints)
    grad = jax.grad(lambda h, pr: outer_loss(pr, h, solver=solver, method=method))
    return jax.jit(lambda pr, h: grad(h, pr))


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_child(quick: bool, checkpoints: int | None) -> None:
    """Run in a fresh process: print peak RSS figures of one unrolled hypergradient."""
    problem, solver, _ = _memory_problem(quick)
    fn = _unrolled_grad(solver, checkpoints)
    compiled = fn.lower(problem, problem.hparams).compile()
    # Compilation and set-up have their own peak: reset the mark so that only the call's
    # peak is read (ru_maxrss cannot be reset; it is kept as the whole-process peak).
    reset = _reset_peak_rss()
    before = _status_bytes("VmRSS")
    jax.block_until_ready(compiled(problem, problem.hparams))
    peak = _status_bytes("VmHWM")
    print(
        json.dumps(
            {
                "rss_before_call_bytes": before,
                "peak_rss_during_call_bytes": peak,
                "run_rss_increase_bytes": peak - before,
                "peak_mark_reset": reset,
                "process_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


def _rss_in_subprocess(quick, checkpoints) -> dict:
    root = Path(__file__).resolve().parent.parent
    code = (
        "from benchmarks.hypergradient_cost import _rss_child; "
        f"_rss_child({quick!r}, {checkpoints!r})"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_median(quick, checkpoints, runs: int = 3) -> dict:
    """`_rss_in_subprocess` in `runs` fresh processes: the run with the median RSS
    increase, and every run's increase (one process's figure moves by a few hundred KB,
    page by page, which is 15% of the checkpointed run's 2 MB)."""
    out = sorted(
        (_rss_in_subprocess(quick, checkpoints) for _ in range(runs)),
        key=lambda r: r["run_rss_increase_bytes"],
    )
    mid = out[len(out) // 2]
    return {**mid, "run_rss_increase_bytes_all": [r["run_rss_increase_bytes"] for r in out]}


def _xla_memory(fn, args) -> dict:
    stats = fn.lower(*args).compile().memory_analysis()
    if stats is None:
        return {}
    names = ("temp", "argument", "output", "alias", "generated_code")
    return {f"xla_{k}_bytes": getattr(stats, f"{k}_size_in_bytes", None) for k in names}


def _memory_cases(quick):
    problem, solver, cfg = _memory_problem(quick)
    h = problem.hparams
    variants = {"plain": None, "checkpointed": cfg["checkpoints"]}
    calls = {k: (_unrolled_grad(solver, c), (problem, h)) for k, c in variants.items()}
    times = time_side_by_side(calls, cfg["mem_reps"])
    figs = {}
    for name, c in variants.items():
        fn, args = calls[name]
        figs[name] = {
            "method": repr(Unrolled("reverse", checkpoints=c)),
            "steps": cfg["steps"],
            "params_size": int(problem.init_params.size),
            **times[name],
            **_xla_memory(fn, args),
            **(_rss_median(quick, c) if cfg["rss"] else {}),
            "grad": fn(*args)["alpha"],
        }
    ours, base = figs["checkpointed"], figs["plain"]
    base = {"name": "Unrolled('reverse') without checkpoints", **base}
    setup = (
        f"ridge n={cfg['mem_n']}, p={cfg['mem_p']}, {solver!r}. The plain unroll keeps "
        "each iterate (steps x p numbers); the checkpointed one keeps the segment "
        "boundaries and one segment's iterates (about (checkpoints + steps / checkpoints) "
        "x p); the training data is a loop invariant, stored once"
    )
    cases = [
        case(
            "unrolled_reverse/memory_xla",
            ours,
            baseline=base,
            key="xla_temp_bytes",
            goal="<= 0.1",
            note=setup,
        ),
        case("unrolled_reverse/time", ours, baseline=base, goal="<= 2.0", note=setup),
    ]
    if cfg["rss"]:
        cases.insert(
            1,
            case(
                "unrolled_reverse/memory_rss",
                ours,
                baseline=base,
                key="run_rss_increase_bytes",
                goal="<= 0.1",
                note="peak RSS increase during one call, fresh subprocess each, the median of 3",
            ),
        )
    return cases


def run(quick: bool = False) -> dict:
    cfg = _sizes(quick)
    cases = []
    for label, make in (("ridge", _ridge), ("logistic", _logistic)):
        problem, exact = make(cfg)
        method_cases, w_star, cg_tol = _method_cases(label, problem, exact, cfg)
        cases += method_cases
        if label in cfg["peers"]:
            cases += _peer_cases(label, problem, exact, w_star, cg_tol, cfg)
    cases += _memory_cases(quick)
    keys = ("n", "n_val", "p", "reps", "steps", "checkpoints", "mem_n", "mem_p")
    sizes = {k: cfg[k] for k in keys}
    return {"sizes": sizes, "definitions": DEFINITIONS, "cases": cases}
