"""The outer side: hypergradient descent over populations and seeds (`descend`), HOAG,
the online mode, and the tuner that combines them with black-box search (`tune`)."""

from ._aggregate import SeedSummary as SeedSummary
from ._aggregate import aggregate_seeds as aggregate_seeds
from ._descent import DescentResult as DescentResult
from ._descent import DescentState as DescentState
from ._descent import decades as decades
from ._descent import descend as descend
from ._descent import stack_problems as stack_problems
from ._hoag import HoagResult as HoagResult
from ._hoag import hoag as hoag
from ._online import OnlineResult as OnlineResult
from ._online import online_bilevel as online_bilevel
from ._settings import TuneSettings as TuneSettings
from ._tune import Member as Member
from ._tune import Round as Round
from ._tune import TuneResult as TuneResult
from ._tune import tune as tune
