"""hypergrad.tune."""
