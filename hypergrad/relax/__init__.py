"""hypergrad.relax."""
