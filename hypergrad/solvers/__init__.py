"""hypergrad.solvers."""
