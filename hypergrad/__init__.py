"""hypergrad: gradient-based hyperparameter optimization on JAX and optax."""

__version__ = "0.1.0.dev0"
