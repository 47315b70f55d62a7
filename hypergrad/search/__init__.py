"""hypergrad.search."""
