"""Do a few hyperparameters account for most of the performance variation? A small MLP on
digits, five hyperparameters, recorded random-search studies, importance by fANOVA and
PED-ANOVA.

The claim, as Greff et al. (2017) state it for LSTMs after fANOVA on thousands of random
trials: the learning rate matters most, then the network size; momentum hardly matters.
Hutter, Hoos and Leyton-Brown (2014) report generally that most of the variance comes from
a few hyperparameters. We test it on an MLP on scikit-learn's digits (50/25/25 split),
trained by minibatch SGD with momentum for a fixed 10 epochs, over:

    learning_rate  Real(1e-4, 1, log)      width  Int(8, 128, log)    depth  Int(1, 3)
    batch_size     Categorical(16, 32, 64, 128, 256)                   momentum  Real(0, 0.99)

Objective: validation error rate (a diverged run predicts one class: error about 0.9,
no special case). Each study is `TRIALS` random-search trials recorded by
`hypergrad.search.run` (the first study in `experiments/results/studies/`, not committed:
`hypergrad report` reads it), the test error recorded with each trial; `STUDIES` studies
with different sampler and training seeds give the intervals. Importance:
`hypergrad.analysis.param_importances` (Optuna's evaluators, fANOVA seeded 0).

Networks of every width and depth share one compiled program per batch size: units
beyond the width are masked to zero (their weights get no gradient, so the network is
exactly the narrower one), layers beyond the depth pass their input through.

References: Greff, Srivastava, Koutnik, Steunebrink, Schmidhuber, "LSTM: A search space
odyssey", IEEE TNNLS 28(10), 2017, https://arxiv.org/abs/1503.04069. Hutter, Hoos,
Leyton-Brown, "An efficient approach for assessing hyperparameter importance", ICML 2014.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optuna

from hypergrad import analysis
from hypergrad.problems import load
from hypergrad.records import Outcome, Records
from hypergrad.search import RandomSearch
from hypergrad.search import run as search_run
from hypergrad.space import Categorical, Int, Real, Space

from ._common import FAILS, HOLDS, RESULTS_DIR, claim, figure, over_seeds, series
from ._common import source as src

TITLE = "A few hyperparameters matter: fANOVA and PED-ANOVA on an MLP on digits"
GREFF = (
    "Greff, Srivastava, Koutnik, Steunebrink, Schmidhuber, LSTM: A Search Space Odyssey, "
    "IEEE TNNLS 2017, https://arxiv.org/abs/1503.04069"
)
HUTTER = (
    "Hutter, Hoos, Leyton-Brown, An Efficient Approach for Assessing Hyperparameter "
    "Importance, ICML 2014, http://proceedings.mlr.press/v32/hutter14.html"
)
SPACE = Space(
    {
        "learning_rate": Real(1e-4, 1.0, log=True),
        "width": Int(8, 128, log=True),
        "depth": Int(1, 3),
        "batch_size": Categorical((16, 32, 64, 128, 256)),
        "momentum": Real(0.0, 0.99),
    }
)
MAX_WIDTH, MAX_DEPTH, EPOCHS = 128, 3, 10
STUDY_DIR = RESULTS_DIR / "studies"


@functools.cache
def _data():
    d = load("digits", seed=0)
    f = jnp.float32
    return (
        (jnp.asarray(d.X_train, f), jnp.asarray(d.y_train, jnp.int32)),
        (jnp.asarray(d.X_val, f), jnp.asarray(d.y_val, jnp.int32)),
        (jnp.asarray(d.X_test, f), jnp.asarray(d.y_test, jnp.int32)),
    )


def init_mlp(key, width, n_in: int, n_out: int):
    """Weights of the widest, deepest network; `width` scales the fan-in as a network of
    that width would be initialized."""
    k0, k1, k2 = jax.random.split(key, 3)
    return {
        "W0": jax.random.normal(k0, (n_in, MAX_WIDTH)) / math.sqrt(n_in),
        "b0": jnp.zeros(MAX_WIDTH),
        "Wh": jax.random.normal(k1, (MAX_DEPTH - 1, MAX_WIDTH, MAX_WIDTH)) / jnp.sqrt(width),
        "bh": jnp.zeros((MAX_DEPTH - 1, MAX_WIDTH)),
        "Wo": jax.random.normal(k2, (MAX_WIDTH, n_out)) / jnp.sqrt(width),
        "bo": jnp.zeros(n_out),
    }


def _logits(params, X, width, depth):
    mask = (jnp.arange(MAX_WIDTH) < width).astype(X.dtype)
    h = jnp.tanh(X @ params["W0"] + params["b0"]) * mask
    for layer in range(MAX_DEPTH - 1):
        deeper = jnp.tanh(h @ params["Wh"][layer] + params["bh"][layer]) * mask
        h = jnp.where(layer + 1 < depth, deeper, h)
    return h @ params["Wo"] + params["bo"]


@functools.partial(jax.jit, static_argnames=("batch_size", "n_out"))
def train_errors(key, lr, momentum, width, depth, train, evals, *, batch_size, n_out):
    """Train for `EPOCHS` epochs of minibatch SGD with momentum on `train`; the error rate
    and the cross-entropy on each `(X, y)` of `evals`. One program per data shapes and
    batch size."""
    X, y = train
    n = X.shape[0]
    per_epoch = n // batch_size
    k_init, k_data = jax.random.split(key)
    params = init_mlp(k_init, width.astype(jnp.float32), X.shape[1], n_out)
    tx = optax.sgd(lr, momentum=momentum)

    def loss(p, Xb, yb):
        logits = _logits(p, Xb, width, depth)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

    def epoch(carry, k):
        order = jax.random.permutation(k, n)[: per_epoch * batch_size].reshape(per_epoch, -1)

        def step(carry, idx):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p, X[idx], y[idx]), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, carry, order)[0], None

    (params, _), _ = jax.lax.scan(
        epoch, (params, tx.init(params)), jax.random.split(k_data, EPOCHS)
    )
    out = []
    for Xe, ye in evals:
        logits = _logits(params, Xe, width, depth)
        xent = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, ye))
        out.append((jnp.mean(jnp.argmax(logits, -1) != ye), xent))
    return tuple(out)


def scalars(config):
    """The traced hyperparameters of `train_errors`, in float32 / int32."""
    return (
        jnp.float32(config["learning_rate"]),
        jnp.float32(config["momentum"]),
        jnp.int32(config["width"]),
        jnp.int32(config["depth"]),
    )


def train_mlp(config, *, seed):
    """The recorded objective: validation error, with the test error as an attribute."""
    train, val, test = _data()
    (val_err, _), (test_err, _) = train_errors(
        jax.random.key(seed),
        *scalars(config),
        train,
        (val, test),
        batch_size=int(config["batch_size"]),
        n_out=10,
    )
    return Outcome(float(val_err), attrs={"test_value": float(test_err)})


def _study(study_seed: int, trials: int, keep: bool):
    if keep:
        STUDY_DIR.mkdir(parents=True, exist_ok=True)
        path = STUDY_DIR / "importance_few_hyperparameters.db"
        path.unlink(missing_ok=True)  # a fresh study each full run
        records = Records.open(path, f"mlp_digits_seed{study_seed}")
    else:
        records = Records.open(optuna.storages.InMemoryStorage(), f"mlp_digits_seed{study_seed}")
    search_run(
        train_mlp,
        RandomSearch(SPACE, seed=study_seed),
        trials,
        records=records,
        seed=study_seed,
    )
    return records


def run(quick: bool = False) -> dict:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = [0, 1] if quick else [0, 1, 2]
    trials = 30 if quick else 300
    names = SPACE.names
    fanova, ped, raw, tables = [], [], [], []
    for s in studies:
        records = _study(s, trials, keep=not quick and s == studies[0])
        fanova.append(analysis.param_importances(records, "fanova"))
        ped.append(analysis.param_importances(records, "ped_anova"))
        raw.append(analysis.param_importances(records, "fanova", normalize=False))
        tables.append(
            [
                {**t.params, "val_error": t.value, "test_error": t.user_attrs["result.test_value"]}
                for t in records.trials()
                if t.value is not None
            ]
        )
        print(
            f"study {s}: fANOVA "
            + ", ".join(f"{k} {v:.3f}" for k, v in fanova[-1].items())
            + " | PED-ANOVA "
            + ", ".join(f"{k} {v:.3f}" for k, v in ped[-1].items()),
            flush=True,
        )

    def per(imps, name):
        return [float(i[name]) for i in imps]

    fan = {n: over_seeds(per(fanova, n)) for n in names}
    pa = {n: over_seeds(per(ped, n)) for n in names}
    top2 = over_seeds([sum(sorted(i.values(), reverse=True)[:2]) for i in fanova])
    explained = over_seeds([sum(r.values()) for r in raw])
    mean_rank = sorted(names, key=lambda n: -fan[n]["value"])
    claims = [
        claim(
            "few_hyperparameters_dominate",
            "Most of the variation of performance comes from a few hyperparameters: the two "
            "most important of five carry more than half of fANOVA's importance.",
            source=src(
                "Hutter 2014",
                value="most performance variation is attributable to a few hyperparameters "
                "(qualitative, over many algorithms and data sets)",
                reference=HUTTER,
            ),
            ours=top2,
            verdict=HOLDS if top2["low"] > 0.5 else FAILS,
            reason="ours: summed normalized fANOVA importance of the top two, per study; "
            "holds if its interval lies above 0.5 ('most'); the main effects explain "
            f"{explained['value']:.2f} of the variance in all",
            main_effects_fraction_of_variance=explained,
        ),
    ]
    rankings = {"fanova": [list(i) for i in fanova], "ped_anova": [list(i) for i in ped]}
    stats = {"fanova": fan, "ped_anova": pa}
    label = {"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}
    for ev in ("fanova", "ped_anova"):
        sfx = "" if ev == "fanova" else "_ped_anova"
        by = f"by {label[ev]}" + (
            " (Greff et al.'s method)"
            if ev == "fanova"
            else " (what matters to reach the best 10%)"
        )
        firsts = [r[0] for r in rankings[ev]]
        seconds = [r[1] for r in rankings[ev]]
        st = stats[ev]
        claims += [
            claim(
                "learning_rate_first" + sfx,
                f"The learning rate is the most important hyperparameter, {by}.",
                source=src(
                    "Greff 2017",
                    value="learning rate by far the most important (fANOVA, all data sets)",
                    reference=GREFF,
                    figure="Fig. 5",
                ),
                ours=st["learning_rate"],
                verdict=HOLDS if all(f == "learning_rate" for f in firsts) else FAILS,
                reason=f"ours: the learning rate's normalized importance; holds if it ranks "
                f"first in every study (first per study: {firsts})",
            ),
            claim(
                "network_size_second" + sfx,
                f"The network size (width or depth) is the next most important, {by}.",
                source=src(
                    "Greff 2017",
                    value="network size second after the learning rate",
                    reference=GREFF,
                    figure="Fig. 5",
                ),
                ours=over_seeds(
                    [
                        max(float(i["width"]), float(i["depth"]))
                        for i in (fanova if ev == "fanova" else ped)
                    ]
                ),
                verdict=HOLDS if all(x in ("width", "depth") for x in seconds) else FAILS,
                reason="ours: the larger of the width's and the depth's importance; holds if "
                f"width or depth ranks second in every study (second per study: {seconds})",
            ),
            claim(
                "momentum_unimportant" + sfx,
                f"Momentum hardly matters, {by}.",
                source=src(
                    "Greff 2017",
                    value="momentum has no significant effect on performance",
                    reference=GREFF,
                ),
                ours=st["momentum"],
                verdict=HOLDS if st["momentum"]["high"] < 0.05 else FAILS,
                reason="ours: momentum's normalized importance; holds if its interval lies below "
                "0.05 (our threshold for 'hardly matters': a twentieth of the total)",
            ),
            claim(
                "batch_size_unimportant" + sfx,
                f"The batch size hardly matters, {by}.",
                source=src(
                    "issue 16",
                    value="batch size hardly matters (stated with the claims above; Greff et "
                    "al. did not vary the batch size)",
                    reference="hypergrad issue 16",
                ),
                ours=st["batch_size"],
                verdict=HOLDS if st["batch_size"]["high"] < 0.05 else FAILS,
                reason="ours: the batch size's normalized importance at a fixed number of epochs "
                "(smaller batches take more steps); holds if its interval lies below 0.05",
            ),
        ]
    # The runs that fail (error near 0.9, the rate of predicting one class: diverged, or a
    # step too small to train in 10 epochs) against momentum, where fANOVA and PED-ANOVA
    # may disagree: fANOVA's variance counts failures, PED-ANOVA's best 10% does not.
    every = [row for t in tables for row in t]
    failed = np.array([row["val_error"] > 0.8 for row in every])
    mom = np.array([row["momentum"] for row in every])
    divergence = {
        "fraction_failed": float(failed.mean()),
        "momentum_above_0.9": float(failed[mom > 0.9].mean()),
        "momentum_below_0.5": float(failed[mom < 0.5].mean()),
    }

    def bars(stats, label):
        return series(
            label,
            list(names),
            [stats[n]["value"] for n in names],
            low=[stats[n]["low"] for n in names],
            high=[stats[n]["high"] for n in names],
        )

    figures = [
        figure(
            "importance",
            "Hyperparameter importance, MLP on digits",
            xlabel="hyperparameter",
            ylabel="normalized importance",
            kind="bar",
            series=[bars(fan, "fANOVA"), bars(pa, "PED-ANOVA")],
            caption=f"mean and 95% interval over {len(studies)} random-search studies of "
            f"{trials} trials",
        )
    ]
    if not quick:
        _plot(fan, pa, names, RESULTS_DIR / "importance_few_hyperparameters.png")
    ranking = " > ".join(mean_rank)
    few = top2["low"] > 0.5
    ped_rank = " > ".join(sorted(names, key=lambda n: -pa[n]["value"]))
    verdict = (
        f"Verdict: by fANOVA the importance ranks {ranking} and the top two carry "
        f"{top2['value']:.2f} of it (95% interval [{top2['low']:.2f}, {top2['high']:.2f}] over "
        f"{len(studies)} studies): "
        + (
            "most of the variation comes from a few hyperparameters"
            if few
            else "that they carry most of it is not established at this precision"
        )
        + f". By PED-ANOVA (what it takes to reach the best 10%) the order is {ped_rank}. "
        f"{divergence['fraction_failed']:.0%} of the runs failed (validation error above 0.8: "
        f"diverged or barely trained): {divergence['momentum_above_0.9']:.0%} of those with "
        f"momentum above 0.9, {divergence['momentum_below_0.5']:.0%} of those below 0.5."
    )
    print(verdict)
    return {
        "seeds": studies,
        "settings": {
            "model": f"tanh MLP on digits (64 inputs, width x depth hidden, 10 outputs), "
            f"{EPOCHS} epochs of minibatch SGD with momentum, float32",
            "space": {n: repr(SPACE.dims[n]) for n in names},
            "objective": "validation error rate; test error recorded per trial",
            "studies": f"{len(studies)} random-search studies of {trials} trials (hypergrad."
            "search.RandomSearch, recorded by hypergrad.search.run)",
            "importance": "hypergrad.analysis.param_importances: Optuna's fANOVA (seed 0) and "
            "PED-ANOVA (defaults), normalized",
            "study_file": None
            if quick
            else "experiments/results/studies/importance_few_hyperparameters.db (not committed)",
        },
        "claims": claims,
        "verdict": verdict,
        "figures": figures,
        "plot": None if quick else "experiments/results/importance_few_hyperparameters.png",
        "data": {
            "fanova": fanova,
            "ped_anova": ped,
            "fanova_fraction_of_variance": raw,
            "failed_runs": divergence,
            "trials": tables,
        },
    }


def _plot(fan, pa, names, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(names))
    for j, (stats, label) in enumerate(((fan, "fANOVA"), (pa, "PED-ANOVA"))):
        v = np.array([stats[n]["value"] for n in names])
        err = np.array(
            [[v[i] - stats[n]["low"], stats[n]["high"] - v[i]] for i, n in enumerate(names)]
        ).T
        ax.bar(x + (j - 0.5) * 0.38, v, 0.38, yerr=np.maximum(err, 0), capsize=3, label=label)
    ax.set_xticks(x, names)
    ax.set_ylabel("normalized importance")
    ax.set_title("MLP on digits: importance over random-search studies (95% interval)")
    ax.legend()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
