"""Benchmark `threads`: the library's loops with one LAPACK thread (`hypergrad.serial_lapack`,
the default) against the process's default OpenBLAS threads (`HYPERGRAD_SERIAL_LAPACK=0`).

Cases (definitions are repeated in the results file):

- `HyperLasso().fit` on the estimators benchmark's synthetic 300 x 1500 design (240
  training rows), in fresh processes sharing one warm compilation cache: the median of 5
  fits after a first one, on the quiet machine and beside a busy loop (a second process
  spinning on one core, what a test run or another job does to a user's machine). Ratio:
  one thread over the default threads; no goal (it documents `hypergrad/_threads.py`).

Run: `python -m benchmarks run threads` (`--quick`: 3 fits per process, one pair each).
The two settings alternate, 3 pairs per load (1 with --quick).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from ._harness import case

_CHILD = """
import json, statistics, sys, time
import numpy as np
from benchmarks.estimators import _correlated
from hypergrad.sklearn import HyperLasso
X, y = _correlated(300, 1500)
order = np.random.default_rng(0).permutation(len(y))[:240]  # the estimators' split
X, y = X[order], y[order]
HyperLasso().fit(X, y)  # compiled, or loaded from the cache
times = []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    HyperLasso().fit(X, y)
    times.append(time.perf_counter() - start)
print(json.dumps(statistics.median(times)))
"""


def _fit_seconds(serial: bool, fits: int, cache: str) -> float:
    env = dict(os.environ, HYPERGRAD_CACHE_DIR=cache, HYPERGRAD_CACHE="1")
    env["HYPERGRAD_SERIAL_LAPACK"] = "1" if serial else "0"
    env.pop("OPENBLAS_NUM_THREADS", None)  # the user's default threads
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(fits)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def _busy_loop():
    """A process spinning on one core (the last one) until stopped."""
    code = "import os; os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})\nwhile True: pass"
    return subprocess.Popen([sys.executable, "-c", code])


def run(quick: bool = False) -> dict:
    fits, pairs = (3, 1) if quick else (5, 3)
    cases = []
    with tempfile.TemporaryDirectory(prefix="hg-threads-") as cache:
        _fit_seconds(True, 1, cache)  # fills the cache: every timed process loads
        for load in ("quiet", "busy loop on one core"):
            busy = _busy_loop() if load != "quiet" else None
            try:
                one, default = [], []
                for _ in range(pairs):
                    one.append(_fit_seconds(True, fits, cache))
                    default.append(_fit_seconds(False, fits, cache))
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            cases.append(
                case(
                    f"HyperLasso fit 240 x 1500, {load}: one LAPACK thread vs default threads",
                    {"time_s": statistics.median(one), "runs_s": one},
                    baseline={
                        "name": "HYPERGRAD_SERIAL_LAPACK=0 (OpenBLAS's default threads)",
                        "time_s": statistics.median(default),
                        "runs_s": default,
                    },
                    note=f"median over processes of each process's median of {fits} fits",
                )
            )
    definitions = {
        "data": "benchmarks.estimators._correlated(300, 1500), 240 rows (its 80% split)",
        "cpu_count": os.cpu_count(),
    }
    return {"cases": cases, "definitions": definitions}
