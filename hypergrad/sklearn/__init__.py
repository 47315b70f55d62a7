"""scikit-learn estimators that tune their own regularization by hypergradient (needs the
`sklearn` extra)."""

from ._estimators import HyperElasticNet as HyperElasticNet
from ._estimators import HyperLasso as HyperLasso
from ._estimators import HyperLogisticRegression as HyperLogisticRegression
from ._estimators import HyperRidge as HyperRidge
