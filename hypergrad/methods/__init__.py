"""Differentiation methods, linear solvers, optimality conditions and entry points."""

from ._base import AbstractMethod as AbstractMethod
from ._implicit import Implicit as Implicit
from ._linear import CG as CG
from ._linear import GMRES as GMRES
from ._linear import AbstractLinearSolver as AbstractLinearSolver
from ._linear import BiCGStab as BiCGStab
from ._linear import Dense as Dense
from ._linear import Identity as Identity
from ._linear import Neumann as Neumann
from ._optimality import OptimalityCondition as OptimalityCondition
from ._optimality import stationarity as stationarity
from ._prox_fixed_point import prox_fixed_point as prox_fixed_point
from ._prox_fixed_point import support_size as support_size
from ._solve import Hypergradient as Hypergradient
from ._solve import hypergradient as hypergradient
from ._solve import outer_loss as outer_loss
from ._solve import problem_method as problem_method
from ._solve import solve as solve
from ._unrolled import Truncated as Truncated
from ._unrolled import Unrolled as Unrolled
from ._zero_order import ES as ES
from ._zero_order import PES as PES
from ._zero_order import PESState as PESState
from ._zero_order import es_value_and_grad as es_value_and_grad
