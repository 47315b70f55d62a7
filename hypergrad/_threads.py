"""One LAPACK thread while the library's compiled loops run.

Interface: `serial_lapack()`, a context manager (also exported as
`hypergrad.serial_lapack`). Inside it, the BLAS libraries loaded in the process (SciPy's
and NumPy's OpenBLAS) use one thread; on leaving, their previous thread counts come back.
`hoag`, `tune`, `descend` and the fits of `HyperLasso`, `HyperElasticNet` and
`HyperLogisticRegression` enter it themselves; wrap your own loops of `hypergradient` or
`solve` calls in it for the same effect. Setting
`HYPERGRAD_SERIAL_LAPACK=0` (or `false`, `off`, `no`; read at the first use) turns it
into a no-op.

Why. On CPU, JAX runs its linear algebra (`cholesky`, `solve`, `eigh`, ...) through
SciPy's LAPACK, that is OpenBLAS with as many threads as cores. The hypergradients of the
sparse models factor a small matrix (the working set's support, 32 to 256 square) at
every outer step and fold, and a threaded factorization of that size mostly waits for
its threads, which the operating system deschedules whenever anything else runs.
`python -m benchmarks run threads` (fresh processes, warm cache, `HyperLasso().fit` on
240 x 1500 rows, the 2-core machine): 0.109 s against 0.131 s with the default threads
when quiet, 0.142 s against 0.185 s beside a process spinning on one core. Large
factorizations would lose up to a factor of the number of cores instead; the library's
inside its loops are small (`HyperRidge`, which factors the data on the host and nothing
in its search, does not enter the block).

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
