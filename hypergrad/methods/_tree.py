"""Pytree helpers for custom derivative rules: symbolic zeros, zero tangents, and which
hyperparameter leaves a function actually reads."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero


def is_zero(t) -> bool:
    """Whether a tangent is known to be zero when the rule is traced."""
    if isinstance(t, SymbolicZero):
        return True
    return getattr(t, "dtype", None) == jax.dtypes.float0


def flatten_tangents(tangents):
    return jax.tree.leaves(tangents, is_leaf=lambda t: isinstance(t, SymbolicZero))


def zero_tangent(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


def zero_tangents(tree):
    return jax.tree.map(zero_tangent, tree)


def _used_inputs(fn, leaves) -> list[bool]:
    """For each of `leaves`, whether the traced program of `fn(*leaves)` reads it.

    Conservative: a leaf that enters any operation counts as read, even if the operation
    turns out not to matter (e.g. `0 * x`).
    """
    specs = [jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) for x in leaves]
    jaxpr = jax.make_jaxpr(fn)(*specs).jaxpr
    read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars}
    read |= {id(v) for v in jaxpr.outvars}
    return [id(v) in read for v in jaxpr.invars]


def leaves_read_by(fn, tree) -> list[bool]:
    """`_used_inputs` for the leaves of a pytree argument: `fn(tree)`."""
    leaves, treedef = jax.tree.flatten(tree)
    return _used_inputs(lambda *ls: fn(jax.tree.unflatten(treedef, ls)), leaves)


def leaf_paths(tree) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
