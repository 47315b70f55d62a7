"""Input contracts of the entry points, checked on the host before any tracing or solve.

Interface: `check_problem_call(problem, hparams, init_params=None, init_adjoint=None)`
returns `hparams` with integer leaves converted to the problem's float dtype, or raises
an error that names the argument, the value and (for a key) the closest valid key.
`check_solver_carries_penalty(problem, solver)` refuses a replacement solver that drops
the problem's non-smooth term. `check_float_hparams(hparams)` converts integer leaves of
`solve`'s hyperparameters. `warn_not_stationary(solution, where)` warns when `Implicit`
differentiated a fixed-step run far from stationary (status `not_stationary`; with
`throw=True` the status check raises instead).

Invariant: every check that needs a value runs only on concrete values (a `jax.core.Tracer`
is skipped, so the same calls work under `jit`, `grad` and `vmap`); structural checks
(keys, shapes, dtypes) hold for traced values too, since they read only the abstract value.

Domains: `DOMAINS` gives, for the ready problems of `hypergrad.problems` (by
`BilevelProblem.name`), each hyperparameter's documented domain: penalties `>= 0`, a
learning rate `> 0`, and a logistic regression's single penalty `> 0` (unpenalized, its loss
has no minimizer on separable data). A problem of another name has no domain check.
"""

import difflib
import functools
import warnings
from collections.abc import Mapping

import jax
import numpy as np

_NONNEG = (">=", 0.0)
_POS = (">", 0.0)

DOMAINS: dict[str, dict[str, tuple[str, float]]] = {
    "ridge": {"alpha": _NONNEG},
    "ridge_rows": {"alpha": _NONNEG},
    "logistic": {"alpha": _POS},
    "logistic_per_feature": {"alpha": _POS},
    "logistic_rows": {"alpha": _POS},
    "lasso": {"alpha": _NONNEG},
    "weighted_lasso": {"alpha": _NONNEG},
    "sparse_logistic": {"alpha": _POS},
    "elastic_net": {"alpha1": _NONNEG, "alpha2": _NONNEG},
    "elastic_net_logistic": {"alpha1": _NONNEG, "alpha2": _NONNEG},
    "mlp_digits": {"learning_rate": _POS, "weight_decay": _NONNEG},
}

# Why a domain is strict, where it is not a matter of sign.
_WHY = {
    name: ": without a penalty the logistic loss has no minimizer on linearly separable "
    "data (the weights grow without bound while the gradient vanishes, so a solver would "
    "report convergence at an arbitrary point)"
    for name in ("logistic", "logistic_per_feature", "logistic_rows", "sparse_logistic")
}


def _concrete(x):
    return not isinstance(x, jax.core.Tracer)


def _closest(key, valid):
    match = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_keys(given, expected, name="hparams", allow_extra=False):
    """Raise `ValueError` naming missing, extra and misspelled keys of a dict `given`
    against the dict `expected` (nested dicts by their path). `allow_extra`: keys beyond
    `expected` are accepted when none is missing (the hyperparameters of a solver the
    caller supplies, such as its learning rate); with a key missing they are named as
    the likely misspellings."""
    if not isinstance(expected, Mapping):
        return
    if not isinstance(given, Mapping):
        raise TypeError(f"{name} must be a dict with keys {sorted(expected)}, got {name}={given!r}")
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    if allow_extra and not missing:
        extra = []
    if missing or extra:
        parts = []
        for k in extra:
            parts.append(f"unknown key {k!r}{_closest(k, missing or list(expected))}")
        for k in missing:
            parts.append(f"missing key {k!r}")
        raise ValueError(
            f"{name} has the wrong keys: {'; '.join(parts)}. Expected exactly the keys "
            f"{sorted(map(str, expected))}, got {name} keys {sorted(map(str, given))}"
        )
    for k in expected:
        check_keys(given[k], expected[k], f"{name}[{k!r}]")


def _float_dtype(reference):
    dtype = getattr(reference, "dtype", None)
    if dtype is not None and np.dtype(dtype).kind in "fc":
        return dtype
    return jax.dtypes.canonicalize_dtype(np.float64)


def _convert_ints(tree, reference, name):
    """Integer and boolean leaves of `tree` as floats (the dtype of the matching leaf of
    `reference`, else JAX's default float); a leaf of another non-float kind is refused."""
    # None is a leaf here: `{"alpha": None}` is a value to refuse, not an empty subtree.
    paths = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
    ref_leaves = None
    if reference is not None:
        ref_flat, ref_def = jax.tree_util.tree_flatten(reference)
        if ref_def == paths[1]:
            ref_leaves = ref_flat
    out = []
    for i, (path, leaf) in enumerate(paths[0]):
        kind = _kind(leaf)
        if kind in ("i", "u", "b"):
            ref = ref_leaves[i] if ref_leaves is not None else None
            leaf = (
                np.asarray(leaf, _float_dtype(ref))
                if _concrete(leaf)
                else leaf.astype(_float_dtype(ref))
            )
        elif kind is None or kind not in "fc":
            raise TypeError(
                f"{name}{jax.tree_util.keystr(path)} must be a number or a float array, got "
                f"{name}{jax.tree_util.keystr(path)}={leaf!r}"
            )
        out.append(leaf)
    return jax.tree_util.tree_unflatten(paths[1], out)


def _kind(leaf):
    """The NumPy kind letter of a leaf's dtype (`f`, `i`, ...), None for a non-number."""
    if leaf is None:  # np.result_type(None) is float64
        return None
    if hasattr(leaf, "dtype"):
        return np.dtype(leaf.dtype).kind
    try:
        return np.result_type(leaf).kind
    except TypeError:
        return None


def check_float_hparams(hparams, name="hparams"):
    """`solve`'s hyperparameters with integer leaves as floats; strings and other
    non-numbers refused by name."""
    return _convert_ints(hparams, None, name)


def check_shapes_like(given, reference, name, like):
    """`given` must have the tree structure and leaf shapes of `reference`."""
    if given is None:
        return
    g_leaves, g_def = jax.tree_util.tree_flatten(given)
    r_leaves, r_def = jax.tree_util.tree_flatten(reference)
    if g_def != r_def:
        raise ValueError(
            f"{name} must have the structure of {like}: expected {r_def}, got {name}={g_def}"
        )
    for path_leaf, r in zip(jax.tree_util.tree_flatten_with_path(given)[0], r_leaves, strict=True):
        path, g = path_leaf
        if np.shape(g) != np.shape(r):
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} must have the shape of {like}, "
                f"{np.shape(r)}; got shape {np.shape(g)}"
            )


def _rows(data):
    """Number of rows of a data split: the leading axis of its first array, and for data
    with a `weight` field (`Rows`, K folds) the number of rows of positive weight."""
    if data is None:
        return None
    weight = getattr(data, "weight", None)
    if weight is not None and _concrete(weight):
        return int(np.sum(np.asarray(weight) > 0))
    for leaf in jax.tree.leaves(data):
        if np.ndim(leaf) >= 1:
            return np.shape(leaf)[0]
    return None


def check_nonempty(problem):
    """A problem's training and validation data must hold at least one row."""
    for split in ("train", "val"):
        rows = _rows(getattr(problem, split))
        if rows == 0:
            raise ValueError(
                f"problem.{split} has no rows (problem {problem.name!r}): a bilevel problem "
                "needs training and validation data"
            )


def check_domains(problem, hparams, name="hparams", throw=False):
    """Hyperparameter values must lie in the problem's documented domain: concrete values
    are checked now; traced ones (under `jit`, `grad`, `vmap`) only with `throw=True`, by
    a host callback when the program runs (the error then arrives wrapped in JAX's
    runtime error, as `check_status`'s does)."""
    for key, (op, bound) in DOMAINS.get(getattr(problem, "name", None), {}).items():
        if not isinstance(hparams, Mapping) or key not in hparams:
            continue
        check = functools.partial(_check_domain, problem.name, f"{name}[{key!r}]", key, op, bound)
        value = hparams[key]
        if _concrete(value):
            check(value)
        elif throw:
            jax.debug.callback(check, value)


def _check_domain(problem_name, label, key, op, bound, value):
    arr = np.asarray(value)
    # Non-finite values are left to the finiteness check, whose message says so.
    bad = np.isfinite(arr) & (arr < bound if op == ">=" else arr <= bound)
    if np.any(bad):
        word = "non-negative" if op == ">=" else "positive"
        raise ValueError(
            f"{label} must be {word} ({key} {op} {bound:g}) for problem "
            f"{problem_name!r}{_WHY.get(problem_name, '')}, got {label}={value!r}"
        )


def check_problem_call(
    problem, hparams, init_params=None, init_adjoint=None, throw=False, allow_extra=False
):
    """The contract of an entry point that takes a `BilevelProblem`: returns `hparams`
    with integer leaves converted; raises on wrong keys, non-numbers, warm starts of the
    wrong shapes (hyperparameter shapes are checked by `solve`), empty data and concrete
    values outside the documented domain (traced values: with `throw=True`, when the
    program runs). `allow_extra`: the caller supplied its own solver, whose
    hyperparameters may come as extra keys (see `check_keys`)."""
    check_keys(hparams, problem.hparams, allow_extra=allow_extra)
    hparams = _convert_ints(hparams, problem.hparams, "hparams")
    check_shapes_like(init_params, problem.init_params, "init_params", "problem.init_params")
    check_shapes_like(init_adjoint, problem.init_params, "init_adjoint", "problem.init_params")
    check_nonempty(problem)
    check_domains(problem, hparams, throw=throw)
    return hparams


def check_solver_carries_penalty(problem, solver):
    """A replacement for a problem's proximal solver must carry the same non-smooth term
    (`solver.prox == problem.solver.prox`): the problem's `inner` is only the smooth part,
    so a solver without the penalty minimizes another objective."""
    own = getattr(problem.solver, "prox", None)
    if own is None or solver is problem.solver:
        return
    theirs = getattr(solver, "prox", None)
    if theirs != own:
        raise ValueError(
            f"solver={solver!r} does not carry problem {problem.name!r}'s penalty {own!r}: "
            "the problem's inner objective is only the smooth part. Pass a proximal solver "
            f"with the same prox, e.g. solver=FISTA(problem.solver.prox, ...), got "
            f"solver.prox={theirs!r}"
        )


def warn_not_stationary(solution, where: str) -> None:
    """A `RuntimeWarning` when a concrete `solution` has status `not_stationary`:
    `Implicit` differentiated a fixed-step run (no tolerance) whose optimality residual
    is above `Implicit.residual_tol`, so the hypergradient may be wrong even in sign.
    `throw=True` raises instead (through `check_status`); traced statuses only report."""
    from .solvers import Status

    status = solution.status
    if isinstance(status, jax.core.Tracer):
        return
    status = np.asarray(status)
    far = status == Status.NOT_STATIONARY
    if np.any(far):
        warnings.warn(
            f"{where}: {Status.MESSAGES[Status.NOT_STATIONARY]} ({int(np.sum(far))} of "
            f"{status.size} solves; optimality residual "
            f"{np.max(np.asarray(solution.stats['grad_norm'])[far]):.3g})",
            RuntimeWarning,
            stacklevel=3,
        )
