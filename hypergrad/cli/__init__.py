"""The `hypergrad` command line."""

from ._main import main as main
