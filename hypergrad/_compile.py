"""How hypergrad's eager entry points compile: small problems for compile time.

Interface: `fast_compile(*trees)` says whether a program whose data are the arrays in
`trees` is compiled with `FAST_COMPILE` (the `compiler_options` of `jax.jit`): when
they hold at most `SMALL_DATA_ELEMENTS` elements in all and the default backend is the
CPU; otherwise with XLA's defaults; `EagerProgram(fn, static_argnames)` holds both jitted
versions of an entry point. `runs_compiled(data, numbers)` says whether an eager entry
point (`hypergrad.solvers.run`, `solve`) runs as one compiled program. The setting
`HYPERGRAD_FAST_COMPILE=0` (or `false`, `off`, `no`; read at every call) gives XLA's
defaults to every program.

Why. Called eagerly, `hypergradient` compiles one program per signature, and on small data
the user waits for XLA, not for the computation: L2 logistic regression on breast cancer
(284 x 30, float64, the `startup` benchmark's problem) computes its hypergradient in
about a millisecond after seconds of compilation. With LLVM's optimizations off
(`xla_backend_optimization_level=0`) and XLA's loop emitters in place of its MLIR
fusion emitters (`xla_cpu_use_fusion_emitters=False`) that program compiled in 0.47 s
instead of 1.75 s, and its compiled call took 2.0 ms instead of 1.2 ms (2-core CPU, one
fresh process each). The slower code costs more as the data grow: the lasso at 500 x
1000 by coordinate descent compiled in 1.2 s instead of 3.6 s but ran 300 ms a call
instead of 54 ms. Below `SMALL_DATA_ELEMENTS` (65536, breast cancer's 8520 and the
diabetes set's 4420 among them) a call costs at most a few milliseconds more, which
hundreds of calls take to add up to the second or more saved on the first.

What it leaves alone. A program the user compiles (`hypergradient` under the user's
`jax.jit`, `grad` or `vmap`) is the user's, with the user's options. The options are CPU
compiler settings, so other backends keep XLA's defaults. JAX's persistent cache keys a
program by its compile options too: the two kinds of program never share an entry.
"""

import os

import jax
import numpy as np

ENV_SWITCH = "HYPERGRAD_FAST_COMPILE"

# At most this many array elements in the data: compiled for compile time.
SMALL_DATA_ELEMENTS = 2**16

# XLA debug options (names as in XLA_FLAGS, without the dashes).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}

_OFF = ("0", "false", "off", "no")


def fast_compile_enabled() -> bool:
    """Whether the setting allows compiling small programs for compile time."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in _OFF


def fast_compile(*trees) -> bool:
    """Whether data this small, on this backend, get `FAST_COMPILE` (the setting on)."""
    if not fast_compile_enabled() or jax.default_backend() != "cpu":
        return False
    return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(trees)) <= SMALL_DATA_ELEMENTS


class EagerProgram:
    """`fn` under `jax.jit` twice, with XLA's defaults and with `FAST_COMPILE`, for an
    eager entry point: `program.for_data(*trees)` is the one that data this size get
    (`fast_compile`). Each keeps its own cache of compiled programs."""

    def __init__(self, fn, static_argnames):
        self._plain = jax.jit(fn, static_argnames=static_argnames)
        self._small = jax.jit(fn, static_argnames=static_argnames, compiler_options=FAST_COMPILE)

    def for_data(self, *trees):
        return self._small if fast_compile(*trees) else self._plain


def _concrete_array(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic)) or (
        isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)
    )


def _concrete_number(x) -> bool:
    return _concrete_array(x) or isinstance(x, (bool, int, float))


def runs_compiled(data, numbers=()) -> bool:
    """Whether an eager entry point (`run`, `solve`, the k-fold criteria) runs as one
    compiled program: no leaf is traced (under a transformation the caller's program
    holds the computation), every leaf of `data` is an array (a Python object there may
    be read as a static value by the user's function, which `jit` would trace) and every
    leaf of `numbers` an array or a Python number.

    Why. Called eagerly, `lax.while_loop` compiles its loop anew at every call (its body
    is a new closure each time): `run` of L-BFGS on breast cancer took 0.75 s a call,
    `solve` as long, the lasso's coordinate descent 2 s, against milliseconds compiled."""
    return all(map(_concrete_array, jax.tree.leaves(data))) and all(
        map(_concrete_number, jax.tree.leaves(numbers))
    )
