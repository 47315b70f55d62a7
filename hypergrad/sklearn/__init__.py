"""hypergrad.sklearn."""
