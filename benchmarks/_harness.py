"""The benchmark harness: a registry of named benchmarks, timing, and the results files.

Interface: a benchmark is a module in `REGISTRY` with a function `run(quick: bool)` that
returns `{"cases": [case(...), ...], "definitions": {...}}` (or just the list of cases).
`run_benchmark(name, quick, out_dir)` calls it and writes `out_dir/NAME.json`
(`NAME-DEVICE.json` on an accelerator) holding the machine, the date, the definitions and
the cases. Invariant: every case carries its figures, and where it is compared, the
baseline measured in the same process run, `ratio = ours / baseline`, the goal and
whether the goal is met.

Adding a benchmark is one line in `REGISTRY`; modules are imported only when run, so a
benchmark's peers (jaxopt, optimistix, ...) are needed only by the benchmarks that use
them.
"""

import argparse
import datetime
import importlib
import importlib.metadata
import json
import math
import operator
import os
import platform
import statistics
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# name -> module path; the module defines `run(quick: bool)`.
REGISTRY: dict[str, str] = {
    "estimators": "benchmarks.estimators",
    "hypergradient_cost": "benchmarks.hypergradient_cost",
    "regularization": "benchmarks.regularization",
    "startup": "benchmarks.startup",
    "threads": "benchmarks.threads",
    "tuning": "benchmarks.tuning",
}

# Versions recorded in every results file: the stack, then the peers of the `bench` extra.
_PACKAGES = (
    "jax",
    "jaxlib",
    "numpy",
    "optax",
    "hypergrad-jax",
    "scikit-learn",
    "jaxopt",
    "optimistix",
    "lineax",
    "equinox",
    "optuna",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """CPU model, cores, JAX devices and the versions of python and the packages."""
    import jax

    devices = jax.devices()
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.device_kind}" for d in devices],
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in _PACKAGES},
        "x64": bool(jax.config.jax_enable_x64),
    }


# --- timing -------------------------------------------------------------------------------


# Extra rounds of `time_side_by_side(..., min_total_s=...)` stop here.
MAX_ROUNDS_S = 20.0
MAX_REPS = 200


def _call(fn, args):
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def time_side_by_side(calls: dict, reps: int, min_total_s: float = 0.0) -> dict:
    """Time compiled functions side by side: `{name: (fn, args)}` -> `{name: figures}`.

    Each `fn` should be a fresh `jax.jit` wrapper: its first call is timed on its own
    (`first_call_s`, compilation included), then the functions are called in turns,
    at least `reps` rounds, so drift of a shared machine hits all of them alike; `time_s`
    is the median of the rounds (compilation excluded), `min_s` the fastest. With
    `min_total_s`, calls of a few milliseconds get more rounds: until the fastest entry
    has run that long, at most `MAX_REPS` rounds and `MAX_ROUNDS_S` seconds of rounds
    (the median of 7 calls of 3 ms moved by 30% between two runs on a quiet machine).
    An entry that reuses a function already called (other arguments) has no
    `first_call_s`.
    """
    first, seen, warm = {}, set(), []
    for name, (fn, args) in calls.items():
        t = _call(fn, args)
        if id(fn) not in seen:  # a function already called has no compile-inclusive call
            first[name] = t
        seen.add(id(fn))
        warm.append(_call(fn, args))
    wanted = math.ceil(min_total_s / max(min(warm), 1e-9))
    affordable = math.floor(MAX_ROUNDS_S / max(sum(warm), 1e-9))
    reps = max(reps, min(MAX_REPS, wanted, affordable))
    runs = {name: [] for name in calls}
    for _ in range(reps):
        for name, (fn, args) in calls.items():
            runs[name].append(_call(fn, args))
    out = {}
    for name in calls:
        out[name] = {"time_s": statistics.median(runs[name]), "min_s": min(runs[name])}
        if name in first:
            out[name]["first_call_s"] = first[name]
        out[name]["reps"] = reps
    return out


def time_one(fn, args, reps: int) -> dict:
    """`time_side_by_side` for one function."""
    return time_side_by_side({"_": (fn, args)}, reps)["_"]


# --- cases --------------------------------------------------------------------------------

_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


def _meets(ratio: float, goal: str) -> bool:
    op, _, bound = goal.partition(" ")
    if op not in _OPS:
        raise ValueError(f"goal must read like '<= 0.5', got goal={goal!r}")
    return bool(_OPS[op](ratio, float(bound)))


def case(
    name: str,
    figures: dict,
    *,
    baseline: dict | None = None,
    key: str = "time_s",
    goal: str | None = None,
    note: str | None = None,
) -> dict:
    """One result: our `figures`, the `baseline`'s (with a `"name"`), `ratio` =
    `figures[key] / baseline[key]`, the `goal` on the ratio (`"<= 0.5"`) and `met`."""
    out = {"name": name, "figures": figures}
    if baseline is not None:
        ratio = figures[key] / baseline[key]
        out.update(baseline=baseline, ratio_of=key, ratio=ratio)
        if goal is not None:
            out.update(goal=goal, met=_meets(ratio, goal))
    elif goal is not None:
        raise ValueError(f"case {name!r}: a goal needs a baseline")
    if note:
        out["note"] = note
    return out


def _plain(x):
    """JSON-ready: numpy and JAX scalars to Python numbers, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (str, bool)) or x is None:
        return x
    if isinstance(x, int):
        return x
    try:
        import numpy as np

        arr = np.asarray(x)
    except Exception:  # noqa: BLE001 - anything unknown is recorded by its repr
        return repr(x)
    if arr.ndim == 0:
        if arr.dtype.kind == "b":
            return bool(arr)
        if arr.dtype.kind in "iu":
            return int(arr)
        value = float(arr)
        return value if math.isfinite(value) else None
    return _plain(arr.tolist())


# --- running ------------------------------------------------------------------------------


def _device_suffix() -> str:
    import jax

    backend = jax.default_backend()
    return "" if backend == "cpu" else f"-{backend}"


def run_benchmark(name: str, quick: bool = False, out_dir: Path | str | None = None) -> Path:
    """Run the benchmark `name` and write its results file; returns the file's path."""
    if name not in REGISTRY:
        raise ValueError(f"no benchmark named {name!r}; known: {sorted(REGISTRY)}")
    module = importlib.import_module(REGISTRY[name])
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    result = module.run(quick=quick)
    runtime = time.perf_counter() - start
    if isinstance(result, list):
        result = {"cases": result}
    record = {
        "benchmark": name,
        "quick": quick,
        "date": date,
        "runtime_s": runtime,
        "machine": machine(),
        **result,
    }
    out_dir = RESULTS_DIR if out_dir is None else Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}{_device_suffix()}.json"
    path.write_text(json.dumps(_plain(record), indent=2, allow_nan=False) + "\n")
    return path


def _summary(path: Path) -> str:
    record = json.loads(path.read_text())
    lines = [f"{record['benchmark']}: {path} ({record['runtime_s']:.0f} s)"]
    for c in record["cases"]:
        if "goal" in c:
            verdict = "met" if c["met"] else "NOT met"
            # A case may carry a goal but no ratio (a side that never reached a target).
            ratio = f"ratio {c['ratio']:.3g}" if "ratio" in c else f"no ratio ({c.get('note')})"
            lines.append(f"  {c['name']}: {ratio} (goal {c['goal']}: {verdict})")
        elif "ratio" in c:
            lines.append(f"  {c['name']}: ratio {c['ratio']:.3g}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run benchmarks and write their results files")
    run_p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (all if none)")
    run_p.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    run_p.add_argument("--out", type=Path, default=None, help=f"results folder ({RESULTS_DIR})")
    sub.add_parser("list", help="list the registered benchmarks")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(sorted(REGISTRY)))
        return 0
    names = args.names or sorted(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {sorted(REGISTRY)}")
    for name in names:
        path = run_benchmark(name, quick=args.quick, out_dir=args.out)
        print(_summary(path), file=sys.stdout, flush=True)
    return 0
