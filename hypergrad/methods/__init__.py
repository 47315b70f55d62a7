"""hypergrad.methods."""
