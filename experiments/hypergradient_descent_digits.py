"""Online hypergradient descent (Baydin et al. 2018) on digits: multinomial logistic
regression and a one-hidden-layer MLP, trained by minibatch SGD, SGD with Nesterov
momentum and Adam from several initial learning rates (0 included), with and without
the online learning-rate adaptation. Figure: final validation loss after the same
number of steps, median over seeds.

`python -m experiments.hypergradient_descent_digits` writes
`experiments/results/hypergradient_descent_digits.json`.

The hypergradient learning rates `beta` are fixed per optimizer before the runs: the
paper's values for SGD and Nesterov (1e-3); for Adam both the paper's 1e-7 and 1e-4
(a larger one, since the additive rule's beta depends on the gradients' scale). No beta
was tuned on these runs.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hypergrad.problems import load, mlp_digits
from hypergrad.solvers import hd_adam, hd_nesterov, hd_sgd

from ._common import softmax_xent, train_minibatch, write_results

STEPS, BATCH, SEEDS = 1000, 64, (0, 1, 2)
INITIAL_LRS = (0.0, 1e-3, 1e-2, 1e-1)
OPTIMIZERS = {
    # name: (plain optimizer, hypergradient version, betas reported)
    "sgd": (lambda lr: optax.sgd(lr), lambda lr, b: hd_sgd(lr, b), (1e-3,)),
    "nesterov": (
        lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
        lambda lr, b: hd_nesterov(lr, b, 0.9),
        (1e-3,),
    ),
    "adam": (lambda lr: optax.adam(lr), lambda lr, b: hd_adam(lr, b), (1e-7, 1e-4)),
}


def _models():
    d = load("digits", seed=0)
    train = (jnp.asarray(d.X_train, jnp.float32), jnp.asarray(d.y_train, jnp.int32))
    val = (jnp.asarray(d.X_val, jnp.float32), jnp.asarray(d.y_val, jnp.int32))
    p = train[0].shape[1]

    def logreg_loss(params, data):
        X, y = data
        return softmax_xent(X @ params["W"] + params["b"], y)

    logreg0 = {"W": jnp.zeros((p, 10), jnp.float32), "b": jnp.zeros(10, jnp.float32)}
    mlp = mlp_digits(hidden=32, dtype=jnp.float32)

    def mlp_loss(params, data):
        return mlp.outer(params, None, data)  # plain cross-entropy, no weight decay

    return {
        "logistic": (logreg_loss, logreg0, train, val),
        "mlp": (mlp_loss, mlp.init_params, mlp.train, mlp.val),
    }


def _final_val_losses(loss, params0, train, val, make_tx):
    """Validation loss and final learning rate for each (initial lr, seed), vmapped."""

    def one(lr0, seed):
        tx = make_tx(lr0)
        params, state = train_minibatch(
            loss, params0, train, tx, STEPS, BATCH, jax.random.key(seed)
        )
        final_lr = getattr(state, "learning_rate", lr0)
        return loss(params, val), final_lr

    lrs = jnp.asarray(INITIAL_LRS, jnp.float32)
    seeds = jnp.asarray(SEEDS)
    run = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None)))
    return run(lrs, seeds)


def main():
    started = time.time()
    cases = []
    for model, (loss, params0, train, val) in _models().items():
        for opt, (plain, hd, betas) in OPTIMIZERS.items():
            base, _ = _final_val_losses(loss, params0, train, val, plain)
            for beta in betas:
                adapted, final_lr = _final_val_losses(
                    loss, params0, train, val, lambda lr, hd=hd, beta=beta: hd(lr, beta)
                )
                for i, lr0 in enumerate(INITIAL_LRS):
                    b, a = np.asarray(base[i]), np.asarray(adapted[i])
                    b_med, a_med = float(np.nanmedian(b)), float(np.nanmedian(a))
                    cases.append(
                        {
                            "model": model,
                            "optimizer": opt,
                            "beta": beta,
                            "initial_lr": lr0,
                            "val_loss_plain": b_med,
                            "val_loss_hd": a_med,
                            "val_loss_plain_per_seed": b,
                            "val_loss_hd_per_seed": a,
                            "final_lr_hd_median": float(np.nanmedian(final_lr[i])),
                            "hd_lower": bool(a_med < b_med),
                        }
                    )
                    print(
                        f"{model:8s} {opt:8s} beta={beta:g} lr0={lr0:g}: "
                        f"plain {b_med:.4f}  hd {a_med:.4f}  final lr "
                        f"{float(np.nanmedian(final_lr[i])):.4g}"
                    )
    acceptance = [
        c
        for c in cases
        if c["model"] == "logistic" and c["optimizer"] == "sgd" and c["initial_lr"] > 0
    ]
    path = write_results(
        "hypergradient_descent_digits",
        {
            "settings": {
                "steps": STEPS,
                "batch": BATCH,
                "seeds": list(SEEDS),
                "initial_lrs": list(INITIAL_LRS),
                "data": "sklearn digits, 50/25/25 split seed 0, standardized",
                "models": {
                    "logistic": "multinomial logistic regression, zero init",
                    "mlp": "64-32-10 tanh MLP (hypergrad.problems.mlp_digits init, seed 0)",
                },
                "figure": "median over seeds of the validation cross-entropy after `steps`",
            },
            "acceptance": {
                "claim": "on digits logistic regression, SGD-HD reaches a lower validation "
                "loss than plain SGD from the same positive initial learning rate at the "
                "same number of steps",
                "holds_for_initial_lrs": [c["initial_lr"] for c in acceptance if c["hd_lower"]],
                "fails_for_initial_lrs": [c["initial_lr"] for c in acceptance if not c["hd_lower"]],
            },
            "cases": cases,
        },
        started,
    )
    print("wrote", path)


if __name__ == "__main__":
    main()
