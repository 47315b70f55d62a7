"""One LAPACK thread while the library's compiled loops run.

Interface: `serial_lapack()`, a context manager (also exported as
`hypergrad.serial_lapack`). Inside it, the BLAS libraries loaded in the process (SciPy's
and NumPy's OpenBLAS) use one thread; on leaving, their previous thread counts come back.
`hoag`, `tune`, `descend` and the estimators' `fit` enter it themselves; wrap your own
loops of `hypergradient` or `solve` calls in it for the same effect. Setting
`HYPERGRAD_SERIAL_LAPACK=0` (or `false`, `off`, `no`; read at the first use) turns it
into a no-op.

Why. On CPU, JAX runs its linear algebra (`cholesky`, `solve`, `eigh`, ...) through
SciPy's LAPACK, that is OpenBLAS with as many threads as cores. The hypergradients of the
sparse models factor a small matrix (the working set's support, 32 to 256 square) at
every outer step and fold, and a threaded factorization of that size mostly waits for
its threads, which the operating system deschedules whenever anything else runs.
Measured on the 2-core machine (jax 0.10.2; the scripts are described in the commit
that added it): 40 Cholesky factorizations of a 256 x 256 matrix in one compiled loop,
18 ms with one thread; with two, 18 ms on the quiet machine (49 ms on the first call)
and 62 ms to 6.2 s while a test run used the other core. `HyperLasso().fit` on 240 x
1500 rows: 0.11-0.13 s against 0.12-0.15 s quiet, 0.12 s against 0.19 s beside a busy
loop on one core. Large factorizations would lose up to a factor of the number of cores
instead; the library's inside its loops are small (`HyperRidge` factors the data on
the host, outside the block, with the user's threads).

What it touches: the thread count of every BLAS library of the process, for the time of
the block (threadpoolctl, which scikit-learn also uses and brings). Like threadpoolctl's
own limits it is process-wide: another Python thread calling NumPy meanwhile also gets
one thread. Without threadpoolctl installed it does nothing.
"""

import contextlib
import functools
import os


@functools.cache
def _controller():
    """threadpoolctl's view of the BLAS libraries, SciPy's LAPACK loaded first (JAX loads
    it on its first linear-algebra call; the controller sees the libraries loaded when it
    is made)."""
    setting = os.environ.get("HYPERGRAD_SERIAL_LAPACK", "1").strip().lower()
    if setting in ("0", "false", "off", "no"):
        return None
    try:
        import scipy.linalg.cython_lapack  # noqa: F401
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def serial_lapack():
    """Within this block, BLAS and LAPACK calls (JAX's on CPU among them) use one thread
    (see `hypergrad._threads`)."""
    controller = _controller()
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield
