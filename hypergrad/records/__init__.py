"""hypergrad.records."""
