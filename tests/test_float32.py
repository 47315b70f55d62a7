"""float32: every method's hypergradient against float64 references, with default tolerances.

The tests run with float64 enabled (conftest), so the float32 problems are built from
arrays of dtype float32 explicitly. Tolerances follow the dtype (`dtype_tol`: an
iterative target never below 1000 ulps, 1.2e-4 in float32): the problems' default
solvers and the linear solvers' defaults must then converge (`throw=True` quiet) and
give hypergradients within float32 reach of the float64 reference: relative error at
most 1e-3, i.e. 1000 ulps times a condition number below 10 on these small problems
(up to the step-count methods, which run the same number of steps in both dtypes).
"""

import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad as hg
from hypergrad.methods._linear import dtype_tol
from hypergrad.solvers import Status

from ._problems import logistic_problem, ridge_problem
from .test_methods_conformance import METHODS, _gd, _tight, exact_hypergradient

F32_RTOL = 1e-3

PROBLEMS = {
    "ridge": lambda dtype: ridge_problem(dtype=dtype),
    "logistic": lambda dtype: logistic_problem(dtype=dtype),
}

# Each method at its defaults (implicit: the linear solver's default tolerance) with the
# problem's own solver; the step-count methods with gradient descent as in conformance.
DEFAULTS = {
    "implicit_cg": lambda pb: hg.Implicit(hg.CG()),
    "implicit_gmres": lambda pb: hg.Implicit(hg.GMRES()),
    "implicit_bicgstab": lambda pb: hg.Implicit(hg.BiCGStab()),
    "implicit_dense": lambda pb: hg.Implicit(hg.Dense()),
}


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_dtype_tol_rule():
    assert dtype_tol(1e-10, np.float64) == 1e-10  # float64 defaults unchanged
    assert dtype_tol(1e-10, np.float32) == 1000 * float(np.finfo(np.float32).eps)
    assert dtype_tol(0.5, np.float32) == 0.5


@pytest.mark.parametrize("problem_name", sorted(PROBLEMS))
def test_default_solvers_converge_in_float32_and_throw_stays_quiet(problem_name):
    pb = PROBLEMS[problem_name](np.float32)
    res = hg.hypergradient(pb, pb.hparams, throw=True)
    assert int(res.solution.status) == Status.CONVERGED
    assert res.grad["alpha"].dtype == jnp.float32


@pytest.mark.parametrize("problem_name", sorted(PROBLEMS))
@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_float32_hypergradient_matches_the_float64_reference(problem_name, method_name):
    pb32 = PROBLEMS[problem_name](np.float32)
    pb64 = PROBLEMS[problem_name](np.float64)
    make_method, make_solver = METHODS[method_name]
    if method_name in DEFAULTS:
        method, solver = DEFAULTS[method_name](pb32), None  # defaults, dtype rule
    elif make_solver is _tight:  # Neumann: its fixed number of terms
        method, solver = make_method(pb32), None
    else:
        method, solver = make_method(pb32), _gd(pb32)
    res = hg.hypergradient(pb32, pb32.hparams, method=method, solver=solver)
    g = res.grad["alpha"]
    assert g.dtype == jnp.float32
    h64 = {"alpha": jnp.asarray(pb32.hparams["alpha"], jnp.float64)}
    ref = exact_hypergradient(pb64, h64)["alpha"]
    assert _rel_err(g, ref) <= F32_RTOL, (problem_name, method_name, _rel_err(g, ref))
