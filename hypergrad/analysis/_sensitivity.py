"""Local sensitivity of the validation objective to each continuous dimension, from
hypergradients at one configuration.

Interface: `sensitivity(problem, space, config, *, method=None, solver=None,
hessian="auto") -> Sensitivity`.

For a continuous dimension with bounds `[low, high]` the space's position is
`t = (x - low) / (high - low)` (or the same in `log x`), and its unconstrained
coordinate is `u = logit(t)` (`hypergrad.space.Real`). With `f` the outer objective at the
inner solution (`hypergrad.outer_loss`), the result holds, per dimension:

    grad        = df/du                 (what the tuner descends along)
    scaled_grad = df/dt = df/du / (t (1 - t))
                = df/dx * (high - low)   or   df/dlog x * log(high / low)
    hess_diag   = d2f/du2,  scaled_hess_diag = d2f/dt2

`scaled_grad` is the hypergradient scaled to the dimension's range: the first-order
change of the objective if the dimension alone crossed its whole range in its own
(linear or log) coordinate, in the objective's units, so dimensions of different units
compare. The diagonal of the Hessian comes from one Hessian-vector product per scalar
entry (forward over reverse, `jax.jvp` of `jax.grad`) through the same method; "auto"
computes it when there are at most `MAX_HESSIAN_ENTRIES` entries.

Invariants: `grad[n] == scaled_grad[n] * t (1 - t)`; the values agree with central
finite differences of `outer_loss` in `u` (a test checks it); a dimension the objective
does not read has zero sensitivity.

Derivatives are taken in `t`, not `u`, so that a configuration on a bound (where
`u = +-inf`) still has finite, meaningful numbers.
"""

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._bilevel import BilevelProblem
from ..methods import Implicit, outer_loss
from ..space import Real, Space

# Hessian-vector products cost about two hypergradients each; beyond this many scalar
# entries "auto" skips the diagonal (per-feature penalties have thousands).
MAX_HESSIAN_ENTRIES = 32


class Sensitivity(NamedTuple):
    """Hypergradient sensitivity at one configuration; see the module docstring.

    Attributes:
      names: the continuous dimensions analysed (active in the configuration).
      value: the outer objective there.
      position: each dimension's position `t` in `[0, 1]` (log scale where `log=True`).
      grad, hess_diag: `df/du`, `d2f/du2` in the space's unconstrained coordinates.
      scaled_grad, scaled_hess_diag: `df/dt`, `d2f/dt2`, per unit of the whole range.
      method: the differentiation method (its repr).
      hessian: whether the Hessian diagonals were computed (else they are `None`).
    """

    names: tuple[str, ...]
    value: float
    position: dict[str, np.ndarray]
    grad: dict[str, np.ndarray]
    scaled_grad: dict[str, np.ndarray]
    hess_diag: dict[str, np.ndarray] | None
    scaled_hess_diag: dict[str, np.ndarray] | None
    method: str
    hessian: bool

    def magnitude(self, name: str) -> float:
        """`sum |scaled_grad[name]|`: the first-order change if every entry crossed its
        range (one entry for a scalar dimension)."""
        return float(np.sum(np.abs(self.scaled_grad[name])))

    def ranking(self) -> list[str]:
        """The dimensions by decreasing `magnitude` (ties by curvature)."""
        curv = self.scaled_hess_diag or {}
        return sorted(
            self.names,
            key=lambda n: (-self.magnitude(n), -float(np.sum(np.abs(curv.get(n, 0.0))))),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain Python numbers and lists (for JSON)."""

        def plain(d):
            return None if d is None else {k: np.asarray(v).tolist() for k, v in d.items()}

        return {
            "value": self.value,
            "method": self.method,
            "ranking": self.ranking(),
            "magnitude": {n: self.magnitude(n) for n in self.names},
            "position": plain(self.position),
            "grad": plain(self.grad),
            "scaled_grad": plain(self.scaled_grad),
            "hess_diag": plain(self.hess_diag),
            "scaled_hess_diag": plain(self.scaled_hess_diag),
        }


def _from_position(dim: Real, t):
    """`x` at position `t` of `dim` (the inverse of the position in `Real`)."""
    if dim.log:
        lo, hi = math.log(dim.low), math.log(dim.high)
        return jnp.exp(lo + t * (hi - lo))
    return dim.low + t * (dim.high - dim.low)


def _to_position(dim: Real, x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if dim.log:
        lo, hi = math.log(dim.low), math.log(dim.high)
        return (np.log(x) - lo) / (hi - lo)
    return (x - dim.low) / (dim.high - dim.low)


def _check(problem, space, config):
    if not isinstance(problem, BilevelProblem):
        raise TypeError(f"problem must be a BilevelProblem, got problem={problem!r}")
    if not isinstance(space, Space):
        raise TypeError(f"space must be a hypergrad.space.Space, got space={space!r}")
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping of names to values, got config={config!r}")
    if not isinstance(problem.hparams, Mapping):
        raise ValueError(
            "problem.hparams must be a dict with one entry per continuous dimension, got "
            f"{type(problem.hparams).__name__}"
        )
    names = tuple(n for n in space.continuous if n in config)
    if not names:
        raise ValueError(
            f"config has no continuous dimension of the space {space.continuous}: "
            f"config={dict(config)!r}"
        )
    for n in names:
        if n not in problem.hparams:
            raise ValueError(
                f"config[{n!r}] is a continuous dimension but problem.hparams has no {n!r} "
                f"(it has {sorted(problem.hparams)})"
            )
        dim = space.dims[n]
        v = np.asarray(config[n], np.float64)
        if not np.all(np.isfinite(v)) or np.any(v < dim.low) or np.any(v > dim.high):
            raise ValueError(
                f"config[{n!r}] must lie in [{dim.low}, {dim.high}], got {config[n]!r}"
            )
    return names


def sensitivity(
    problem: BilevelProblem,
    space: Space,
    config: Mapping[str, Any],
    *,
    method=None,
    solver=None,
    init_params=None,
    hessian: bool | str = "auto",
) -> Sensitivity:
    """The hypergradient sensitivity of `problem`'s outer objective at `config`.

    Args:
      problem: the bilevel problem; `problem.hparams` has an entry for every continuous
        dimension of `space` active in `config` (discrete choices are already built in:
        make the problem for them first). Entries the space does not name stay fixed.
      space: the search space (its bounds scale the result).
      config: the configuration (continuous values in natural units; an array-valued
        dimension may hold a list or an array of the hyperparameter's shape).
      method: the differentiation method (`hypergrad.Implicit()` by default); pass
        `hypergrad.Unrolled()` for hyperparameters only the solver reads (learning rates).
      solver, init_params: passed to `hypergrad.outer_loss`.
      hessian: `True`, `False`, or `"auto"` (when at most `MAX_HESSIAN_ENTRIES` scalars).

    Returns:
      A `Sensitivity`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from hypergrad import problems
      >>> from hypergrad.space import Real, Space
      >>> jax.config.update("jax_enable_x64", True)
      >>> X, y = problems.synthetic_regression(60, 5, seed=0)
      >>> pb = problems.ridge(X[:30], y[:30], X[30:], y[30:], alpha=1.0)
      >>> s = sensitivity(pb, Space({"alpha": Real(1e-3, 1e2, log=True)}), {"alpha": 0.1})
      >>> bool(abs(s.grad["alpha"] - s.scaled_grad["alpha"] * s.position["alpha"]
      ...          * (1 - s.position["alpha"])) < 1e-12)
      True
    """
    names = _check(problem, space, config)
    if hessian not in (True, False, "auto"):
        raise ValueError(f"hessian must be True, False or 'auto', got hessian={hessian!r}")
    dims = {n: space.dims[n] for n in names}
    dtypes = {n: jnp.result_type(problem.hparams[n]) for n in names}
    shapes = {n: jnp.shape(problem.hparams[n]) for n in names}
    t0 = {
        n: jnp.asarray(
            np.broadcast_to(_to_position(dims[n], config[n]), shapes[n]), dtype=dtypes[n]
        )
        for n in names
    }

    def f(t):
        h = dict(problem.hparams)
        h.update({n: _from_position(dims[n], t[n]).astype(dtypes[n]) for n in names})
        return outer_loss(problem, h, solver=solver, method=method, init_params=init_params)

    value, g_t = jax.jit(jax.value_and_grad(f))(t0)
    size = sum(int(np.prod(s)) for s in shapes.values())
    want_h = hessian is True or (hessian == "auto" and size <= MAX_HESSIAN_ENTRIES)
    h_t = None
    if want_h:
        flat0, unflatten = ravel_pytree(t0)
        hvp = jax.jit(lambda e: ravel_pytree(jax.jvp(jax.grad(f), (t0,), (unflatten(e),))[1])[0])
        eye = np.eye(flat0.size, dtype=flat0.dtype)
        diag = np.array([np.asarray(hvp(jnp.asarray(eye[k])))[k] for k in range(flat0.size)])
        h_t = {n: np.asarray(v) for n, v in unflatten(jnp.asarray(diag)).items()}
    pos = {n: np.asarray(t0[n], np.float64) for n in names}
    g_t = {n: np.asarray(g_t[n], np.float64) for n in names}
    # dt/du = t(1-t), d2t/du2 = t(1-t)(1-2t): the chain rule to the unconstrained coordinate.
    dt = {n: pos[n] * (1 - pos[n]) for n in names}
    g_u = {n: g_t[n] * dt[n] for n in names}
    h_u = None
    if h_t is not None:
        h_u = {n: h_t[n] * dt[n] ** 2 + g_t[n] * dt[n] * (1 - 2 * pos[n]) for n in names}
    return Sensitivity(
        names=names,
        value=float(value),
        position=pos,
        grad=g_u,
        scaled_grad=g_t,
        hess_diag=h_u,
        scaled_hess_diag=h_t,
        method=repr(Implicit() if method is None else method),
        hessian=want_h,
    )
