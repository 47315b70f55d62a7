"""Discrete hyperparameters by relaxation, against exhaustive enumeration (the ground
truth), random search and TPE.

1. Ridge on diabetes: polynomial degree {1, 2, 3} x feature map {identity, tanh,
   signed square root}. The relaxation: every (degree, map) block of features sits in one
   design matrix, scaled by `w_degree * v_map`, where `w` and `v` are straight-through
   Gumbel-softmax samples (`hypergrad.relax.gumbel_softmax(hard=True)`) of two logit
   vectors. The forward pass is therefore one exact discrete configuration (one full
   ridge training, `hypergrad.solve` with `Newton`, implicit derivative); the backward pass
   gives the derivative of the validation loss with respect to every block's scale, and
   through the soft samples to the logits. Adam on the logits with an annealed
   temperature; at the end the argmax configuration is re-evaluated exactly.
2. MLP on digits: activation {tanh, relu, sigmoid} x width {16, 32, 64}. The relaxation
   (DARTS-like, `hypergrad.relax.Softmax`): a mixture of the activations and a soft width
   mask (unit j is kept with weight P(width > j)), trained once by Adam while the logits
   take a hypergradient step after every inner step (`hypergrad.tune.online_bilevel`,
   one-step lookahead); the argmax configuration is then re-trained and evaluated.

Regret: validation loss of the chosen configuration minus the best by enumeration. A
"full training" is one training of one configuration (one ridge solve; 300 Adam steps
of the MLP); the relaxed MLP run counts as one (it is one training of the supernet).

`python -m experiments.discrete_choice` writes `experiments/results/discrete_choice.json`.
"""

import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optuna

import hypergrad as hg
from hypergrad import relax
from hypergrad.problems import BilevelProblem, load
from hypergrad.solvers import Newton, OptaxSolver
from hypergrad.tune import online_bilevel

from ._common import softmax_xent, write_results

SEEDS = (0, 1, 2, 3, 4)
BUDGETS = (1, 3, 5, 9)

# --- ridge on diabetes ------------------------------------------------------------------

DEGREES = (1, 2, 3)
MAPS = {
    "identity": lambda z: z,
    "tanh": jnp.tanh,
    "signed_sqrt": lambda z: jnp.sign(z) * jnp.sqrt(jnp.abs(z)),
}
ALPHA = 1e-2
RIDGE_STEPS = 30


def _ridge_blocks():
    d = load("diabetes", seed=0)
    mu, sd = d.y_train.mean(), d.y_train.std()
    ys = [(y - mu) / sd for y in (d.y_train, d.y_val)]
    blocks = []  # (degree, map) in row-major order, each (n, 10 * 3) padded to degree 3
    for deg, fmap in itertools.product(DEGREES, MAPS.values()):
        Xs = []
        for X in (d.X_train, d.X_val):
            z = fmap(jnp.asarray(X))
            Xs.append(jnp.concatenate([z**k for k in range(1, deg + 1)], axis=1))
        mean, scale = Xs[0].mean(0), Xs[0].std(0)
        Xs = [(X - mean) / scale for X in Xs]
        blocks.append(Xs)
    width = max(b[0].shape[1] for b in blocks)
    pad = lambda X: jnp.pad(X, ((0, 0), (0, width - X.shape[1])))  # noqa: E731
    Phi_train = jnp.stack([pad(b[0]) for b in blocks], 1)  # (n, 9, width)
    Phi_val = jnp.stack([pad(b[1]) for b in blocks], 1)
    return (Phi_train, jnp.asarray(ys[0])), (Phi_val, jnp.asarray(ys[1]))


def _ridge_inner(w, scales, data):
    Phi, y = data
    X = (Phi * scales[None, :, None]).reshape(Phi.shape[0], -1)
    return 0.5 * jnp.mean((X @ w - y) ** 2) + 0.5 * ALPHA * w @ w


def _ridge_val(scales, train, val):
    w0 = jnp.zeros(train[0].shape[1] * train[0].shape[2])
    w = hg.solve(
        _ridge_inner, w0, scales, train, solver=Newton(max_steps=1), method=hg.Implicit(hg.Dense())
    ).params
    Phi, y = val
    X = (Phi * scales[None, :, None]).reshape(Phi.shape[0], -1)
    return jnp.mean((X @ w - y) ** 2)


def _ridge_relaxed(train, val, seed):
    n_deg, n_map = len(DEGREES), len(MAPS)

    def loss(logits, key, temperature):
        k1, k2 = jax.random.split(key)
        w = relax.gumbel_softmax(k1, logits["degree"], temperature, hard=True)
        v = relax.gumbel_softmax(k2, logits["map"], temperature, hard=True)
        return _ridge_val(jnp.outer(w, v).reshape(-1), train, val)

    opt = optax.adam(0.2)

    @jax.jit
    def step(logits, state, key, t):
        temperature = relax.annealed_temperature(t, initial=1.0, final=0.1, num_steps=RIDGE_STEPS)
        value, g = jax.value_and_grad(loss)(logits, key, temperature)
        u, state = opt.update(g, state, logits)
        return optax.apply_updates(logits, u), state, value

    logits = {"degree": jnp.zeros(n_deg), "map": jnp.zeros(n_map)}
    state = opt.init(logits)
    keys = jax.random.split(jax.random.key(seed), RIDGE_STEPS)
    for t in range(RIDGE_STEPS):
        logits, state, relaxed_value = step(logits, state, keys[t], t)
    d, m = int(jnp.argmax(logits["degree"])), int(jnp.argmax(logits["map"]))
    return d * n_map + m, float(relaxed_value), RIDGE_STEPS


# --- MLP on digits ------------------------------------------------------------------------

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid}
WIDTHS = (16, 32, 64)
MLP_STEPS, MLP_LR = 300, 1e-2
# eps_root keeps Adam differentiable where a gradient entry is exactly zero (the digits
# have constant pixels): d sqrt(v) / dv is infinite at v = 0 and gives NaN hypergradients.
MLP_OPTIMIZER = optax.adam(MLP_LR, eps_root=1e-12)


def _mlp_parts():
    d = load("digits", seed=0)
    train = (jnp.asarray(d.X_train, jnp.float32), jnp.asarray(d.y_train, jnp.int32))
    val = (jnp.asarray(d.X_val, jnp.float32), jnp.asarray(d.y_val, jnp.int32))
    k1, k2 = jax.random.split(jax.random.key(0))
    p, H = train[0].shape[1], max(WIDTHS)
    params = {
        "W1": jax.random.normal(k1, (p, H)) / np.sqrt(p),
        "b1": jnp.zeros(H),
        "W2": jax.random.normal(k2, (H, 10)) / np.sqrt(H),
        "b2": jnp.zeros(10),
    }
    return params, train, val


def _mlp_apply(params, act_weights, width_mask, X):
    z = X @ params["W1"] + params["b1"]
    h = sum(w * f(z) for w, f in zip(act_weights, ACTIVATIONS.values(), strict=True))
    return (h * width_mask) @ params["W2"] + params["b2"]


def _soft_mask(width_weights):
    # Unit j is kept with weight P(width > j): a hard mask for a one-hot width.
    units = jnp.arange(max(WIDTHS))
    return sum(w * (units < k) for w, k in zip(width_weights, WIDTHS, strict=True))


def _mlp_loss_of(logits_to_weights):
    def inner(params, h, data):
        a, m = logits_to_weights(h)
        return softmax_xent(_mlp_apply(params, a, _soft_mask(m), data[0]), data[1])

    return inner


def _onehots(h):
    return h["act"], h["width"]


def _softmaxes(h):
    r = relax.Softmax()
    return r.weights(None, h["act"], 1.0), r.weights(None, h["width"], 1.0)


def _mlp_table(params, train, val):
    """Enumeration: every configuration trained once (one vmapped program)."""
    configs = list(itertools.product(range(len(ACTIVATIONS)), range(len(WIDTHS))))
    h = {
        "act": jnp.stack([jax.nn.one_hot(a, len(ACTIVATIONS)) for a, _ in configs]),
        "width": jnp.stack([jax.nn.one_hot(w, len(WIDTHS)) for _, w in configs]),
    }
    inner = _mlp_loss_of(_onehots)
    solver = OptaxSolver(MLP_OPTIMIZER, max_steps=MLP_STEPS, tol=None)

    def one(hh):
        sol = hg.solvers.run(solver, inner, params, hh, train)
        return inner(sol.params, hh, val)

    return np.asarray(jax.jit(jax.vmap(one))(h))


def _mlp_relaxed(params, train, val):
    inner = _mlp_loss_of(_softmaxes)
    problem = BilevelProblem(
        inner=inner,
        outer=inner,
        init_params=params,
        train=train,
        val=val,
        hparams={"act": jnp.zeros(len(ACTIVATIONS)), "width": jnp.zeros(len(WIDTHS))},
    )
    out = online_bilevel(
        problem,
        problem.hparams,
        outer_optimizer=optax.adam(0.05),
        num_steps=MLP_STEPS // 2,
        inner_steps=1,
        lookahead=1,
        solver=OptaxSolver(MLP_OPTIMIZER, max_steps=MLP_STEPS, tol=None),
        to_unconstrained=lambda h: h,
        from_unconstrained=lambda u: u,
    )
    if not all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(out.hparams)):
        raise FloatingPointError(f"the relaxed run produced non-finite logits: {out.hparams}")
    a, w = int(jnp.argmax(out.hparams["act"])), int(jnp.argmax(out.hparams["width"]))
    relaxed_value = float(out.history["value"][-1])
    return a * len(WIDTHS) + w, relaxed_value, out.hparams


# --- baselines ----------------------------------------------------------------------------


def _search_regret(table, dims, sampler_factory, seed, budget):
    """Best validation loss found in `budget` trainings, as regret; trainings are table
    look-ups of the same deterministic trainings the enumeration ran."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler_factory(seed))
    names = list(dims)

    def objective(trial):
        idx = [trial.suggest_categorical(n, list(range(dims[n]))) for n in names]
        return float(table[idx[0] * dims[names[1]] + idx[1]])

    study.optimize(objective, n_trials=budget)
    return float(study.best_value - table.min())


def _baselines(table, dims):
    out = {}
    samplers = {
        "random": lambda s: optuna.samplers.RandomSampler(seed=s),
        "tpe": lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=2),
    }
    for name, factory in samplers.items():
        out[name] = {
            f"budget_{b}": {
                "median_regret": float(
                    np.median([_search_regret(table, dims, factory, s, b) for s in SEEDS])
                ),
                "full_trainings": b,
            }
            for b in BUDGETS
        }
    return out


def main():
    started = time.time()
    jax.config.update("jax_enable_x64", True)
    names_ridge = [f"degree={d},map={m}" for d, m in itertools.product(DEGREES, MAPS)]
    train, val = _ridge_blocks()
    eye = jnp.eye(len(names_ridge))
    table = np.asarray(jax.jit(jax.vmap(lambda s: _ridge_val(s, train, val)))(eye))
    runs = [_ridge_relaxed(train, val, s) for s in SEEDS]
    ridge = {
        "configurations": names_ridge,
        "enumeration_val_mse": table,
        "best": names_ridge[int(table.argmin())],
        "enumeration_full_trainings": len(names_ridge),
        "relaxation": {
            "choices": [names_ridge[c] for c, _, _ in runs],
            "relaxed_val_mse_last_step": [r for _, r, _ in runs],
            "exact_val_mse_of_choice": [float(table[c]) for c, _, _ in runs],
            "regret": [float(table[c] - table.min()) for c, _, _ in runs],
            "median_regret": float(np.median([table[c] - table.min() for c, _, _ in runs])),
            "full_trainings": RIDGE_STEPS + 1,
            "method": f"straight-through Gumbel-softmax, {RIDGE_STEPS} Adam steps on the "
            "logits, temperature 1 -> 0.1, one sample per step, then one exact evaluation",
        },
        "search": _baselines(table, {"degree": len(DEGREES), "map": len(MAPS)}),
    }
    print("ridge table", np.round(table, 4), ridge["best"])
    print("ridge relaxation", ridge["relaxation"]["choices"], ridge["relaxation"]["regret"])

    jax.config.update("jax_enable_x64", False)
    params, mtrain, mval = _mlp_parts()
    names_mlp = [f"act={a},width={w}" for a, w in itertools.product(ACTIVATIONS, WIDTHS)]
    mtable = _mlp_table(params, mtrain, mval)
    choice, relaxed_value, logits = _mlp_relaxed(params, mtrain, mval)
    mlp = {
        "configurations": names_mlp,
        "enumeration_val_loss": mtable,
        "best": names_mlp[int(mtable.argmin())],
        "enumeration_full_trainings": len(names_mlp),
        "relaxation": {
            "choice": names_mlp[choice],
            "final_logits": logits,
            "relaxed_val_loss": relaxed_value,
            "exact_val_loss_of_choice": float(mtable[choice]),
            "regret": float(mtable[choice] - mtable.min()),
            "full_trainings": 2,
            "method": "softmax mixture of activations and soft width mask, one supernet "
            "training with a one-step-lookahead hypergradient step on the logits after "
            "every inner step (online_bilevel), then the argmax configuration retrained",
        },
        "search": _baselines(mtable, {"act": len(ACTIVATIONS), "width": len(WIDTHS)}),
    }
    print("mlp table", np.round(mtable, 4), mlp["best"])
    print("mlp relaxation", mlp["relaxation"]["choice"], mlp["relaxation"]["regret"])
    path = write_results(
        "discrete_choice",
        {
            "settings": {
                "seeds": list(SEEDS),
                "budgets": list(BUDGETS),
                "ridge": f"diabetes, 50/25/25 split seed 0, alpha={ALPHA}, y standardized",
                "mlp": f"digits, 64-H-10, Adam({MLP_LR}) full batch for {MLP_STEPS} steps, "
                "init seed 0 (a width-w net is the 64-unit net with units >= w masked)",
                "regret": "validation loss of the chosen configuration minus the best by "
                "enumeration; search baselines report the median over seeds",
            },
            "ridge_diabetes": ridge,
            "mlp_digits": mlp,
        },
        started,
    )
    print("wrote", path)


if __name__ == "__main__":
    main()
