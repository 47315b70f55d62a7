"""After a tuning run: which hyperparameters matter, how robust the choice is to the
seed, and whether the validation set was overfit.

Global importance of a recorded study by Optuna's fANOVA and PED-ANOVA
(`param_importances`, `importances`); local sensitivity from hypergradients at one
configuration (`sensitivity`); tunability of a family of problems over data sets
(`tunability`); spread over seeds, rank stability and probability of being beaten
(`seed_robustness`, `probability_better`); the validation-to-test gap, a held-out
re-check and nested cross-validation (`validation_gap`, `held_out_recheck`,
`nested_cv`); and readers of these inputs from a study (`seed_table`, `reseed`,
`test_values`, `recorded_problem`).

Names are imported on first use (`hypergrad._lazy`): `tune` reads `GAP_THRESHOLD`
without loading Optuna's fANOVA and scikit-learn.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "_importance": [
            "EVALUATORS",
            "Importance",
            "importances",
            "make_evaluator",
            "param_importances",
        ],
        "_overfitting": [
            "GAP_THRESHOLD",
            "NestedCV",
            "ValidationGap",
            "ValidationOverfitWarning",
            "held_out_recheck",
            "nested_cv",
            "validation_gap",
        ],
        "_robustness": [
            "ProbabilityBetter",
            "SeedRobustness",
            "probability_better",
            "seed_robustness",
        ],
        "_sensitivity": [
            "MAX_HESSIAN_ENTRIES",
            "Sensitivity",
            "sensitivity",
        ],
        "_study": [
            "PER_SEED_ATTR",
            "TEST_VALUE_ATTR",
            "SeedTable",
            "recorded_problem",
            "reseed",
            "seed_table",
            "test_values",
        ],
        "_tunability": [
            "Tunability",
            "tunability",
        ],
    },
)
