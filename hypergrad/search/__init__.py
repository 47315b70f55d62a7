"""Black-box search behind one batched interface, `ask(n)` / `tell(proposals, values)`.

Random, Sobol, grid, successive halving and ASHA are built in; `OptunaSearch` adapts
Optuna's samplers (TPE, GP, CMA-ES, NSGA-II). `run` evaluates and records every trial.
"""

from ._base import AbstractProposer as AbstractProposer
from ._base import Proposal as Proposal
from ._grid import GridSearch as GridSearch
from ._grid import grid_points as grid_points
from ._halving import ASHA as ASHA
from ._halving import SuccessiveHalving as SuccessiveHalving
from ._halving import rung_budgets as rung_budgets
from ._optuna import OptunaSearch as OptunaSearch
from ._optuna import make_sampler as make_sampler
from ._optuna import suggest as suggest
from ._optuna import to_optuna_distributions as to_optuna_distributions
from ._random import RandomSearch as RandomSearch
from ._random import SobolSearch as SobolSearch
from ._run import SearchResult as SearchResult
from ._run import run as run
