"""hypergrad.problems."""
