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
"""

from ._importance import EVALUATORS as EVALUATORS
from ._importance import Importance as Importance
from ._importance import importances as importances
from ._importance import make_evaluator as make_evaluator
from ._importance import param_importances as param_importances
from ._overfitting import GAP_THRESHOLD as GAP_THRESHOLD
from ._overfitting import NestedCV as NestedCV
from ._overfitting import ValidationGap as ValidationGap
from ._overfitting import ValidationOverfitWarning as ValidationOverfitWarning
from ._overfitting import held_out_recheck as held_out_recheck
from ._overfitting import nested_cv as nested_cv
from ._overfitting import validation_gap as validation_gap
from ._robustness import ProbabilityBetter as ProbabilityBetter
from ._robustness import SeedRobustness as SeedRobustness
from ._robustness import probability_better as probability_better
from ._robustness import seed_robustness as seed_robustness
from ._sensitivity import MAX_HESSIAN_ENTRIES as MAX_HESSIAN_ENTRIES
from ._sensitivity import Sensitivity as Sensitivity
from ._sensitivity import sensitivity as sensitivity
from ._study import PER_SEED_ATTR as PER_SEED_ATTR
from ._study import TEST_VALUE_ATTR as TEST_VALUE_ATTR
from ._study import SeedTable as SeedTable
from ._study import recorded_problem as recorded_problem
from ._study import reseed as reseed
from ._study import seed_table as seed_table
from ._study import test_values as test_values
from ._tunability import Tunability as Tunability
from ._tunability import tunability as tunability

__all__ = [
    "EVALUATORS",
    "GAP_THRESHOLD",
    "MAX_HESSIAN_ENTRIES",
    "PER_SEED_ATTR",
    "TEST_VALUE_ATTR",
    "Importance",
    "NestedCV",
    "ProbabilityBetter",
    "SeedRobustness",
    "SeedTable",
    "Sensitivity",
    "Tunability",
    "ValidationGap",
    "ValidationOverfitWarning",
    "held_out_recheck",
    "importances",
    "make_evaluator",
    "nested_cv",
    "param_importances",
    "probability_better",
    "recorded_problem",
    "reseed",
    "seed_robustness",
    "seed_table",
    "sensitivity",
    "test_values",
    "tunability",
    "validation_gap",
]
