"""hypergrad: gradient-based hyperparameter optimization on JAX and optax.

The top level re-exports the entry points and the differentiation methods; solvers,
problems and the rest live in their subpackages. Importing hypergrad turns on its
compilation cache (`hypergrad._cache`: compiled programs kept on disk, under
`HYPERGRAD_CACHE_DIR` or the user's cache folder; `HYPERGRAD_CACHE=0` or
`disable_cache()` turns it off) unless the user configured JAX's own.
"""

from . import _cache
from ._bilevel import BilevelProblem as BilevelProblem
from ._cache import cache_dir as cache_dir
from ._cache import disable_cache as disable_cache
from ._cache import enable_cache as enable_cache
from ._threads import serial_lapack as serial_lapack
from .methods import CG as CG
from .methods import ES as ES
from .methods import GMRES as GMRES
from .methods import PES as PES
from .methods import BiCGStab as BiCGStab
from .methods import Dense as Dense
from .methods import Hypergradient as Hypergradient
from .methods import Identity as Identity
from .methods import Implicit as Implicit
from .methods import Neumann as Neumann
from .methods import Truncated as Truncated
from .methods import Unrolled as Unrolled
from .methods import hypergradient as hypergradient
from .methods import outer_loss as outer_loss
from .methods import solve as solve
from .solvers import Solution as Solution
from .solvers import Status as Status

__version__ = "0.1.0.dev0"

_cache.configure_at_import(__version__)
