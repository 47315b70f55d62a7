"""hypergrad.space."""
