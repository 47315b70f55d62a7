"""hypergrad.tune."""

from ._hoag import HoagResult as HoagResult
from ._hoag import hoag as hoag
from ._online import OnlineResult as OnlineResult
from ._online import online_bilevel as online_bilevel
