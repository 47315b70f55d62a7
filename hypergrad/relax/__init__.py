"""Differentiable relaxations of discrete choices and non-differentiable metrics."""

from ._categorical import AbstractRelaxation as AbstractRelaxation
from ._categorical import GumbelSoftmax as GumbelSoftmax
from ._categorical import Softmax as Softmax
from ._categorical import annealed_temperature as annealed_temperature
from ._categorical import gumbel_argmax as gumbel_argmax
from ._categorical import gumbel_softmax as gumbel_softmax
from ._categorical import mix as mix
from ._categorical import straight_through as straight_through
from ._integer import discretize_int as discretize_int
from ._integer import int_distribution as int_distribution
from ._integer import int_interpolation as int_interpolation
from ._integer import stochastic_round as stochastic_round
from ._metrics import margins as margins
from ._metrics import smooth_accuracy as smooth_accuracy
from ._metrics import smooth_hinge as smooth_hinge
