"""Search spaces: real, integer and categorical dimensions, conditions, forbidden combinations.

A `Space` validates configurations, samples batches ready for `jax.vmap`, and maps its
continuous dimensions to unconstrained coordinates for hypergradient descent.
"""

from ._dims import RELAX_KINDS as RELAX_KINDS
from ._dims import RELAXED as RELAXED
from ._dims import Categorical as Categorical
from ._dims import Condition as Condition
from ._dims import Forbidden as Forbidden
from ._dims import Int as Int
from ._dims import InvalidConfigError as InvalidConfigError
from ._dims import InvalidSpaceError as InvalidSpaceError
from ._dims import Real as Real
from ._space import Batch as Batch
from ._space import Config as Config
from ._space import Space as Space
