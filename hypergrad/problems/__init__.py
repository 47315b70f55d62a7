"""Ready bilevel problems and the data they use."""

from .._bilevel import BilevelProblem as BilevelProblem
from ._data import Split as Split
from ._data import load as load
from ._data import split_data as split_data
from ._data import synthetic_classification as synthetic_classification
from ._data import synthetic_regression as synthetic_regression
from ._linear_models import accuracy as accuracy
from ._linear_models import logistic as logistic
from ._linear_models import ridge as ridge
from ._linear_models import ridge_hypergradient as ridge_hypergradient
from ._linear_models import ridge_solution as ridge_solution
from ._mlp import mlp_accuracy as mlp_accuracy
from ._mlp import mlp_digits as mlp_digits
from ._sparse import Rows as Rows
from ._sparse import alpha_max as alpha_max
from ._sparse import elastic_net as elastic_net
from ._sparse import lasso as lasso
from ._sparse import log_loss as log_loss
from ._sparse import mean_squared_error as mean_squared_error
from ._sparse import ridge_rows as ridge_rows
from ._sparse import sparse_logistic as sparse_logistic
from ._sparse import squared_loss as squared_loss
from ._sparse import weighted_lasso as weighted_lasso
