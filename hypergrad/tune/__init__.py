"""hypergrad.tune."""

from ._hoag import HoagResult as HoagResult
from ._hoag import hoag as hoag
