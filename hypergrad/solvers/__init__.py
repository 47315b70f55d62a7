"""Inner solvers: pure `init / step / terminate` objects and the loops that run them."""

from ._base import AbstractSolver as AbstractSolver
from ._base import SolverState as SolverState
from ._base import run as run
from ._base import run_steps as run_steps
from ._batched import BatchedLBFGS as BatchedLBFGS
from ._cd import CoordinateDescent as CoordinateDescent
from ._cd import least_squares as least_squares
from ._hypergradient_descent import HypergradientDescentState as HypergradientDescentState
from ._hypergradient_descent import hd_adam as hd_adam
from ._hypergradient_descent import hd_nesterov as hd_nesterov
from ._hypergradient_descent import hd_sgd as hd_sgd
from ._hypergradient_descent import hypergradient_descent as hypergradient_descent
from ._newton import Newton as Newton
from ._optax import LBFGS as LBFGS
from ._optax import OptaxSolver as OptaxSolver
from ._prox import FISTA as FISTA
from ._prox import L1 as L1
from ._prox import AbstractProx as AbstractProx
from ._prox import Box as Box
from ._prox import ElasticNet as ElasticNet
from ._prox import ProximalGradient as ProximalGradient
from ._prox_newton import ProxNewton as ProxNewton
from ._prox_newton import logistic_loss as logistic_loss
from ._solution import Solution as Solution
from ._solution import Status as Status
from ._solution import check_status as check_status
