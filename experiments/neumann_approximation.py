"""Neumann series with 0, 1, 5 and 20 terms against conjugate gradient and the exact
implicit hypergradient: cosine similarity.

Two problems, each over seeds:

- convex: L2 logistic regression with one penalty per feature (`p` hyperparameters) on
  synthetic data, solved by Newton to a gradient norm of 1e-13;
- non-convex: a 64-16-10 tanh MLP on digits with one weight decay per weight
  (`exp(log_decay)`, about a thousand hyperparameters), trained by L-BFGS; the
  implicit hypergradient is taken at the trained weights, where the Hessian need not be
  positive definite.

Every approximation differentiates the same inner solution; only the linear solve of the
adjoint system `H v = d val / d params` changes: `Neumann(k, 1 / lambda_max(H))`,
`CG(maxiter=20)`, and `Dense` (the exact solve, the reference). Cosine similarity of the
hypergradients with the reference.

Reference: Lorraine, Vicente and Duvenaud, "Optimizing Millions of Hyperparameters by
Implicit Differentiation", AISTATS 2020, https://arxiv.org/abs/1911.02590
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import hypergrad as hg
from hypergrad import BilevelProblem
from hypergrad.problems import load
from hypergrad.solvers import LBFGS

from ._common import FAILS, HOLDS, claim, figure, over_seeds, series
from ._common import source as src
from ._setups import REFERENCE_SOLVER, hessian_eigenvalues, logistic_problem, solve_inner

TITLE = "Neumann series against CG and the exact implicit hypergradient (cosine similarity)"
REFERENCE = (
    "Lorraine, Vicente, Duvenaud, Optimizing Millions of Hyperparameters by Implicit "
    "Differentiation, AISTATS 2020, https://arxiv.org/abs/1911.02590"
)
TERMS = (0, 1, 5, 20)
CG_ITERS = 20
HIDDEN = 16
BIAS_DECAY = 1e-4


def _logits(w, X):
    return jnp.tanh(X @ w["W1"] + w["b1"]) @ w["W2"] + w["b2"]


def _xent(w, h, data):
    del h
    X, y = data
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(_logits(w, X), y))


def _mlp_inner(w, h, data):
    decay = sum(jnp.sum(jnp.exp(h[k]) * w[k] ** 2) for k in ("W1", "W2"))
    # A fixed decay on the biases: softmax is invariant to shifting every output bias
    # alike, which would leave the Hessian singular along that direction.
    bias = BIAS_DECAY * (jnp.sum(w["b1"] ** 2) + jnp.sum(w["b2"] ** 2))
    return _xent(w, h, data) + 0.5 * (decay + bias)


def _mlp_problem(seed, n_train):
    d = load("digits", seed=seed)
    train = (jnp.asarray(d.X_train[:n_train]), jnp.asarray(d.y_train[:n_train], jnp.int32))
    val = (jnp.asarray(d.X_val), jnp.asarray(d.y_val, jnp.int32))
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {
        "W1": jax.random.normal(k1, (64, HIDDEN)) / 8.0,
        "b1": jnp.zeros(HIDDEN),
        "W2": jax.random.normal(k2, (HIDDEN, 10)) / np.sqrt(HIDDEN),
        "b2": jnp.zeros(10),
    }

    hparams = {k: jnp.full(params[k].shape, np.log(1e-3)) for k in ("W1", "W2")}
    return BilevelProblem(
        inner=_mlp_inner,
        outer=_xent,
        init_params=params,
        train=train,
        val=val,
        hparams=hparams,
        solver=LBFGS(max_steps=1000, tol=1e-7),
        name="mlp_per_weight_decay",
    )


def _flat_grad(solver, linear_solver):
    method = hg.Implicit(linear_solver)

    def fn(pr, h, params):
        # Started at the solution: the solver stops at once, only the adjoint solve varies.
        out = hg.hypergradient(pr, h, solver=solver, method=method, init_params=params)
        return ravel_pytree(out.grad)[0]

    return jax.jit(fn)


def _cosines(problems, solver):
    """Cosine of each approximation with the dense solve, per problem, and the spectrum."""
    solved = [solve_inner(pr, pr.hparams, solver) for pr in problems]
    eigs = [hessian_eigenvalues(pr, pr.hparams, w) for pr, w in zip(problems, solved, strict=True)]
    spectra = [{"min": e[0], "max": e[-1], "negative": int(np.sum(e < 0))} for e in eigs]
    # One Neumann step for all seeds (the smallest 1 / lambda_max), so that each linear
    # solver compiles once.
    step = 1.0 / max(e[-1] for e in eigs)
    approx = {f"neumann_{k}": hg.Neumann(k, step) for k in TERMS}
    approx[f"cg_{CG_ITERS}"] = hg.CG(tol=1e-13, maxiter=CG_ITERS)
    exact_fn = _flat_grad(solver, hg.Dense())
    exact = [exact_fn(pr, pr.hparams, w) for pr, w in zip(problems, solved, strict=True)]
    out = {}
    for name, ls in approx.items():
        fn = _flat_grad(solver, ls)
        out[name] = []
        for pr, w, ref in zip(problems, solved, exact, strict=True):
            g = fn(pr, pr.hparams, w)
            out[name].append(float(g @ ref / (jnp.linalg.norm(g) * jnp.linalg.norm(ref))))
    return out, spectra


def run(quick: bool = False) -> dict:
    jax.config.update("jax_enable_x64", True)
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    n, p = (80, 10) if quick else (200, 50)
    n_mlp = 100 if quick else 400
    logistic, logistic_spectra = _cosines(
        [logistic_problem(s, n=n, p=p, alpha=0.02) for s in seeds], REFERENCE_SOLVER
    )
    mlp_probs = [_mlp_problem(s, n_mlp) for s in seeds]
    mlp, mlp_spectra = _cosines(mlp_probs, mlp_probs[0].solver)
    print("logistic", {k: np.round(v, 3) for k, v in logistic.items()})
    print("mlp", {k: np.round(v, 3) for k, v in mlp.items()}, mlp_spectra)

    def monotone(cos):
        rows = np.array([cos[f"neumann_{k}"] for k in TERMS])  # terms x seeds
        return bool(np.all(np.diff(rows, axis=0) > -1e-12))

    names = [f"neumann_{k}" for k in TERMS] + [f"cg_{CG_ITERS}"]
    claims = []
    for key, cos, label in (("logistic", logistic, "convex"), ("mlp", mlp, "non-convex")):
        n20 = over_seeds(cos["neumann_20"])
        n0 = over_seeds(cos["neumann_0"])
        gap = over_seeds(np.asarray(cos[f"cg_{CG_ITERS}"]) - np.asarray(cos["neumann_20"]))
        claims += [
            claim(
                f"{key}_more_terms_align_better",
                f"On the {label} problem ({key}), the Neumann approximation's cosine with the "
                "exact implicit hypergradient grows with the number of terms (0, 1, 5, 20).",
                source=src(
                    "Lorraine 2020",
                    value="more Neumann terms approach the exact inverse-Hessian product",
                    reference=REFERENCE,
                ),
                ours=n20,
                verdict=HOLDS if monotone(cos) else FAILS,
                reason="ours: cosine at 20 terms; holds if the cosine does not decrease from "
                f"0 to 1 to 5 to 20 terms on any seed (0 terms: {n0['value']:.3f})",
                cosine_0_terms=n0,
            ),
            claim(
                f"{key}_few_terms_aligned",
                f"On the {label} problem ({key}), a few Neumann terms (5) already give a "
                "hypergradient well aligned with the exact one (cosine above 0.9).",
                source=src(
                    "Lorraine 2020",
                    value="a few Neumann terms suffice in practice",
                    reference=REFERENCE,
                ),
                ours=over_seeds(cos["neumann_5"]),
                verdict=HOLDS if over_seeds(cos["neumann_5"])["low"] > 0.9 else FAILS,
                reason="cosine at 5 terms; holds if its interval lies above 0.9 (the "
                "threshold is ours: the source gives no number for this)",
            ),
            claim(
                f"{key}_cg_vs_neumann",
                f"On the {label} problem ({key}), CG with {CG_ITERS} iterations is at least as "
                f"aligned as Neumann with {CG_ITERS} terms (the same number of Hessian-vector "
                "products).",
                source=src(
                    "Lorraine 2020",
                    value="Neumann and CG both approximate the inverse; Neumann chosen for "
                    "stability on neural networks",
                    reference=REFERENCE,
                ),
                ours=gap,
                verdict=HOLDS if gap["value"] >= 0 else FAILS,
                reason="ours: cosine(CG) - cosine(Neumann 20), mean over seeds; holds if "
                "non-negative",
            ),
        ]

    def bars(cos):
        stats = [over_seeds(cos[nm]) for nm in names]
        return series(
            "mean over seeds (95% interval)",
            names,
            [s["value"] for s in stats],
            low=[s["low"] for s in stats],
            high=[s["high"] for s in stats],
        )

    figures = [
        figure(
            f"{key}_cosine",
            f"Cosine with the exact implicit hypergradient ({key})",
            xlabel="linear solver",
            ylabel="cosine similarity",
            kind="bar",
            series=[bars(cos)],
        )
        for key, cos in (("logistic", logistic), ("mlp", mlp))
    ]
    return {
        "seeds": seeds,
        "settings": {
            "logistic": f"per-feature L2 logistic regression, alpha=0.02, n={n} train + {n} "
            f"val, p={p}; Newton to 1e-13",
            "mlp": f"64-{HIDDEN}-10 tanh MLP on digits ({n_mlp} training rows, split and init "
            "by the seed), one weight decay per weight at 1e-3, L-BFGS 1000 steps to 1e-7",
            "neumann_step": "1 / the largest Hessian eigenvalue over seeds",
            "terms": list(TERMS),
            "cg_iterations": CG_ITERS,
            "float64": True,
        },
        "claims": claims,
        "figures": figures,
        "data": {
            "cosines": {"logistic": logistic, "mlp": mlp},
            "spectra": {"logistic": logistic_spectra, "mlp": mlp_spectra},
        },
    }
