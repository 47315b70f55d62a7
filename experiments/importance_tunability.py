"""Tunability (Probst, Boulesteix and Bischl, 2019) of a small MLP family over four of
scikit-learn's bundled classification data sets: the gain of tuning each hyperparameter
alone, the others at the family's optimal default, against the gain of tuning all.

The family: the tanh MLP of `importance_few_hyperparameters` (learning rate, width, depth,
batch size, momentum; minibatch SGD with momentum for 10 epochs), on breast cancer, wine,
iris and digits (each split 50/25/25 and standardized, `hypergrad.problems.load`), with
the batch size limited to 16-64 (iris has 75 training rows). Risk: the validation
cross-entropy, capped at chance (`log(classes)`, the uniform prediction's loss; a diverged
run counts as chance): error rates on validation sets of 38-450 rows are too coarse to
show a gain (a good default already makes no or one error on wine and iris).
`hypergrad.analysis.tunability` draws `CANDIDATES` random configurations, takes the one
with the best mean error over the four data sets as the optimal default, and tunes each
hyperparameter alone on a grid of its values; repeated with three seeds (candidates and
training).

Reference: Probst, Boulesteix, Bischl, "Tunability: importance of hyperparameters of
machine learning algorithms", JMLR 20(53), 2019, https://arxiv.org/abs/1802.09596.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad import analysis
from hypergrad.problems import load
from hypergrad.space import Categorical, Int, Real, Space

from ._common import FAILS, HOLDS, claim, figure, over_seeds, series
from ._common import source as src
from .importance_few_hyperparameters import GREFF, scalars, train_errors

TITLE = "Tunability of an MLP family over four bundled data sets (Probst et al. 2019)"
PROBST = (
    "Probst, Boulesteix, Bischl, Tunability: Importance of Hyperparameters of Machine "
    "Learning Algorithms, JMLR 20(53), 2019, https://arxiv.org/abs/1802.09596"
)
DATASETS = ("breast_cancer", "wine", "iris", "digits")
SPACE = Space(
    {
        "learning_rate": Real(1e-4, 1.0, log=True),
        "width": Int(8, 128, log=True),
        "depth": Int(1, 3),
        "batch_size": Categorical((16, 32, 64)),
        "momentum": Real(0.0, 0.99),
    }
)


@functools.cache
def _data(name):
    d = load(name, seed=0)
    f = jnp.float32
    return tuple(
        (jnp.asarray(X, f), jnp.asarray(y, jnp.int32))
        for X, y in ((d.X_train, d.y_train), (d.X_val, d.y_val))
    )


def _risk(seed):
    def risk(config, dataset):
        train, val = _data(dataset)
        n_out = int(jnp.max(train[1])) + 1
        ((_, xent),) = train_errors(
            jax.random.key(seed),
            *scalars(config),
            train,
            (val,),
            batch_size=int(config["batch_size"]),
            n_out=n_out,
        )
        # A diverged run has no finite loss: it counts as chance, log(classes), the
        # loss of the uniform prediction; so does anything worse than chance.
        return float(jnp.minimum(jnp.nan_to_num(xent, nan=jnp.inf), math.log(n_out)))

    return risk


def run(quick: bool = False) -> dict:
    seeds = [0] if quick else [0, 1, 2]
    candidates, resolution = (8, 3) if quick else (32, 6)
    datasets = DATASETS[:2] if quick else DATASETS
    results = []
    for s in seeds:
        t = analysis.tunability(
            _risk(s), SPACE, datasets, candidates=candidates, resolution=resolution, seed=s
        )
        results.append(t)
        print(
            f"seed {s}: overall {np.round(t.overall, 3).tolist()}; "
            + ", ".join(f"{n} {v:.3f}" for n, v in t.mean().items()),
            flush=True,
        )
    names = SPACE.names
    mean = {n: over_seeds([t.mean()[n] for t in results]) for n in names}
    overall = over_seeds([float(np.mean(t.overall)) for t in results])
    # Share of the overall gain that the most tunable hyperparameter alone recovers, per
    # seed (averaged over data sets where the overall gain is positive).
    top_share = []
    for t in results:
        top = t.ranking()[0]
        rel = t.relative[top]
        top_share.append(float(np.nanmean(rel)) if np.any(np.isfinite(rel)) else 0.0)
    share = over_seeds(top_share)
    firsts = [t.ranking()[0] for t in results]
    claims = [
        claim(
            "one_hyperparameter_recovers_most",
            "Tuning the single most tunable hyperparameter, the others at the optimal "
            "default, recovers most of the gain of tuning all of them.",
            source=src(
                "Probst 2019",
                value="for most algorithms a few hyperparameters carry most of the "
                "tunability; qualitative",
                reference=PROBST,
            ),
            ours=share,
            verdict=HOLDS if share["low"] > 0.5 else FAILS,
            reason="ours: relative tunability d_i / d of the most tunable hyperparameter, mean "
            "over data sets, per seed; holds if its interval lies above 0.5 (overall "
            f"tunability d: {overall['value']:.3g} nats)",
            overall_tunability=overall,
        ),
        claim(
            "learning_rate_most_tunable",
            "Across data sets, the learning rate is the most tunable hyperparameter.",
            source=src(
                "Greff 2017",
                value="learning rate by far the most important (fANOVA)",
                reference=GREFF,
                figure="Fig. 5",
            ),
            ours=mean["learning_rate"],
            verdict=HOLDS if all(f == "learning_rate" for f in firsts) else FAILS,
            reason="ours: the learning rate's tunability (validation cross-entropy gained), mean "
            "over "
            f"data sets; holds if it ranks first for every seed (first: {firsts})",
        ),
    ]
    figures = [
        figure(
            "tunability",
            "Tunability of each hyperparameter (mean over data sets)",
            xlabel="hyperparameter",
            ylabel="validation cross-entropy gained by tuning it alone",
            kind="bar",
            series=[
                series(
                    "mean over seeds (95% interval)",
                    list(names),
                    [mean[n]["value"] for n in names],
                    low=[mean[n]["low"] for n in names],
                    high=[mean[n]["high"] for n in names],
                )
            ],
        )
    ]
    return {
        "seeds": seeds,
        "settings": {
            "family": "tanh MLP, minibatch SGD with momentum, 10 epochs, float32",
            "space": {n: repr(SPACE.dims[n]) for n in names},
            "datasets": list(datasets),
            "risk": "validation cross-entropy, capped at log(classes)",
            "candidates": candidates,
            "resolution": resolution,
        },
        "claims": claims,
        "figures": figures,
        "data": {"tunability": [t.as_dict() for t in results]},
    }
