"""The experiments' framework: discovery by name, claims with intervals and verdicts, and
the results file.

Interface: an experiment is a module `experiments/NAME.py` (a name without a leading
underscore) that defines

    TITLE = "one line"
    def run(quick: bool) -> dict:
        return {
            "seeds": [0, 1, 2, 3, 4],         # [] where nothing is random
            "settings": {...},                # sizes, data, budgets: what was run
            "claims": [claim(...), ...],      # at least one
            "figures": [figure(...), ...],    # optional: drawn by `python -m paper build`
            "data": {...},                    # optional: raw numbers behind the claims
        }

`run_experiment(NAME, quick)` calls it and writes `experiments/results/NAME.json` (a
quick run writes `experiments/results/quick/NAME.json`, never over a full run's file)
holding `experiment`, `title`, `command`, `quick`, `date`, `wall_seconds`, `machine` and
what `run` returned.

Invariant (checked before the file is written): every claim carries its sentence, its
source (paper, reference, the figure or table where it has one, the source's number as
text), ours (`over_seeds`: a statistic with an interval over seeds; or `measured`: a
deterministic number, with the reason it has no interval) and a verdict in `VERDICTS`
with its reason. A claim that does not hold is written like one that does.
"""

import datetime
import importlib
import json
import math
import pkgutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._harness import _plain, _version
from benchmarks._harness import machine as _harness_machine

RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK_DIR = RESULTS_DIR / "quick"

HOLDS, FAILS, NOT_COMPARABLE = "holds", "does not hold", "not comparable"
VERDICTS = (HOLDS, FAILS, NOT_COMPARABLE)

# Versions recorded besides the benchmark harness's stack: what the experiments and the
# paper use.
_EXTRA_PACKAGES = ("scipy", "matplotlib", "markdown")


# --- claims -------------------------------------------------------------------------------


def source(paper: str, *, value: str, reference: str, figure: str | None = None) -> dict:
    """What the source paper says: `paper` ("Pedregosa 2016"), `value` (its number as
    text, e.g. "~1e-3 in ~1.4 s"), `reference` (title and arXiv link), `figure` ("Fig. 2",
    None where the claim is not read off a figure or table)."""
    for name, v in (("paper", paper), ("value", value), ("reference", reference)):
        if not isinstance(v, str) or not v:
            raise ValueError(f"source {name} must be a non-empty string, got {name}={v!r}")
    return {"paper": paper, "figure": figure, "value": value, "reference": reference}


def over_seeds(
    values,
    *,
    unit: str = "",
    stat: str = "mean",
    log: bool = False,
    confidence: float = 0.95,
) -> dict:
    """A statistic over seeds with its interval.

    Args:
      values: one number per seed (at least 2 for an interval).
      unit: printed after the number ("s", "", "x").
      stat: `"mean"`: the mean with the two-sided Student-t interval
        `mean +- t_{(1+c)/2, S-1} s / sqrt(S)`; `"median"`: the median with the range
        (min to max) over seeds, for heavy-tailed numbers such as times.
      log: for `"mean"`, the interval of the mean of `log10(values)`, mapped back (a
        geometric mean), for positive numbers spread over decades (errors, regrets).
      confidence: the Student-t interval's level.

    Returns:
      `{"value", "low", "high", "n", "interval", "unit", "per_seed"}`.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("over_seeds needs at least one value")
    if stat not in ("mean", "median"):
        raise ValueError(f"stat must be 'mean' or 'median', got stat={stat!r}")
    if np.any(np.isnan(v)):
        raise ValueError(f"over_seeds got NaN: {v.tolist()}")
    finite = v[np.isfinite(v)]
    if stat == "median":
        value = float(np.median(v))
        low, high = float(np.min(v)), float(np.max(v))
        kind = f"median, range over {v.size} seeds"
    else:
        if finite.size != v.size:
            raise ValueError(f"over_seeds(stat='mean') needs finite values, got {v.tolist()}")
        import scipy.stats

        if log:
            if np.any(v <= 0):
                raise ValueError(f"log=True needs positive values, got {v.tolist()}")
            x = np.log10(v)
        else:
            x = v
        mean = x.mean()
        if v.size > 1:
            half = scipy.stats.t.ppf(0.5 + confidence / 2, v.size - 1) * x.std(ddof=1)
            half /= np.sqrt(v.size)
        else:
            half = math.inf
        low, high = mean - half, mean + half
        if log:
            mean, low, high = 10**mean, 10**low, 10**high
        value, low, high = float(mean), float(low), float(high)
        what = "geometric mean" if log else "mean"
        kind = f"{what}, {round(100 * confidence)}% Student-t interval over {v.size} seeds"
    return {
        "value": value,
        "low": low,
        "high": high,
        "n": int(v.size),
        "interval": kind,
        "unit": unit,
        "per_seed": v.tolist(),
    }


def measured(value, *, unit: str = "", why: str) -> dict:
    """A deterministic number (no randomness enters, or one run): `why` says why it has
    no interval over seeds."""
    if not why:
        raise ValueError("measured needs `why`: the reason the number has no interval")
    value = float(value)
    return {
        "value": value,
        "low": value,
        "high": value,
        "n": 1,
        "interval": f"none: {why}",
        "unit": unit,
        "per_seed": [value],
    }


def verdict(holds: bool) -> str:
    return HOLDS if holds else FAILS


def claim(
    id: str, text: str, *, source: dict, ours: dict, verdict: str, reason: str, **extra
) -> dict:
    """One claim: `text` in one sentence, the `source`'s statement, `ours` (from
    `over_seeds` or `measured`), the `verdict` (one of `VERDICTS`) and its `reason`
    (what was measured against what threshold). `extra` holds further named numbers."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got verdict={verdict!r}")
    if not reason:
        raise ValueError(f"claim {id!r}: a verdict needs its reason")
    return {
        "id": id,
        "claim": text,
        "source": source,
        "ours": ours,
        "verdict": verdict,
        "reason": reason,
        **extra,
    }


def series(label: str, x, y, *, low=None, high=None) -> dict:
    """One line of a figure; `low`/`high` draw a band (an interval over seeds)."""
    out = {"label": label, "x": _plain(x), "y": _plain(y)}
    if low is not None:
        out["low"], out["high"] = _plain(low), _plain(high)
    return out


def figure(
    id: str,
    title: str,
    *,
    xlabel: str,
    ylabel: str,
    series: list,
    xscale: str = "linear",
    yscale: str = "linear",
    kind: str = "line",
    caption: str = "",
) -> dict:
    """A figure the paper draws from the results file (`kind`: "line", "scatter", or
    "bar" with categorical x)."""
    if kind not in ("line", "scatter", "bar"):
        raise ValueError(f"kind must be 'line', 'scatter' or 'bar', got kind={kind!r}")
    return {
        "id": id,
        "title": title,
        "xlabel": xlabel,
        "ylabel": ylabel,
        "xscale": xscale,
        "yscale": yscale,
        "kind": kind,
        "series": series,
        "caption": caption,
    }


def check_report(name: str, report: dict) -> None:
    """Refuse a report that breaks the results-file invariant, naming what is missing."""
    for key in ("seeds", "settings", "claims"):
        if key not in report:
            raise ValueError(f"experiment {name!r}: run() returned no {key!r}")
    if not report["claims"]:
        raise ValueError(f"experiment {name!r}: run() returned no claims")
    ids = [c["id"] for c in report["claims"]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"experiment {name!r}: claim ids repeat: {ids}")
    for c in report["claims"]:
        for key in ("claim", "source", "ours", "verdict", "reason"):
            if not c.get(key):
                raise ValueError(f"experiment {name!r}, claim {c.get('id')!r}: no {key!r}")
        if c["verdict"] not in VERDICTS:
            raise ValueError(f"claim {c['id']!r}: verdict {c['verdict']!r} not in {VERDICTS}")
        for key in ("value", "low", "high", "n", "interval"):
            if key not in c["ours"]:
                raise ValueError(f"claim {c['id']!r}: ours has no {key!r}")


# --- the results file ---------------------------------------------------------------------


def machine() -> dict:
    """The benchmark harness's machine description (CPU, cores, devices, versions of
    python, jax, jaxlib, numpy, optax, optuna and the peers) plus the paper's tools."""
    out = _harness_machine()
    out["versions"].update({p: _version(p) for p in _EXTRA_PACKAGES})
    out["git"] = _git()
    return out


def _git() -> dict:
    """The commit the run started from and the library files that differed from it (the
    tree is shared: a run may see someone's uncommitted edits, and says so)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args):
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return out.stdout.rstrip() if out.returncode == 0 else None

    changed = git("status", "--porcelain", "--", "hypergrad")
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_library_files": [] if not changed else [ln[3:] for ln in changed.splitlines()],
    }


def names() -> list[str]:
    """Every experiment: the public modules of this package."""
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def command(name: str, quick: bool) -> str:
    return f"python -m experiments run {name}" + (" --quick" if quick else "")


def run_experiment(name: str, quick: bool = False, out_dir: Path | str | None = None) -> Path:
    """Run experiment `name` and write its results file; returns the file's path."""
    known = names()
    if name not in known:
        raise ValueError(f"no experiment named {name!r}; known: {known}")
    module = importlib.import_module(f"experiments.{name}")
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    report = module.run(quick=quick)
    wall = time.perf_counter() - started
    check_report(name, report)
    record = {
        "experiment": name,
        "title": getattr(module, "TITLE", name),
        "command": command(name, quick),
        "quick": bool(quick),
        "date": date,
        "wall_seconds": round(wall, 1),
        "machine": machine(),
        **report,
    }
    if out_dir is None:
        out_dir = QUICK_DIR if quick else RESULTS_DIR
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(_plain(record), indent=2, allow_nan=False) + "\n")
    return path


def summary(path: Path) -> str:
    """Claims and verdicts of one results file, for the terminal."""
    record = json.loads(Path(path).read_text())
    lines = [f"{record['experiment']}: {path} ({record['wall_seconds']} s)"]

    def g(x):  # non-finite numbers are null in the file
        return "inf" if x is None else f"{x:.4g}"

    for c in record["claims"]:
        o = c["ours"]
        lines.append(
            f"  [{c['verdict']}] {c['id']}: ours {g(o['value'])} "
            f"[{g(o['low'])}, {g(o['high'])}] {o['unit']} | source {c['source']['value']}"
        )
    return "\n".join(lines)


# --- pieces several experiments share ----------------------------------------------------


def suboptimality(values, best: float, null: float):
    """Normalized suboptimality `(v - v_best) / (v_null - v_best)` (BENCHMARKS.md)."""
    return (np.asarray(values, dtype=np.float64) - best) / (null - best)


def time_to(times, subopt, target: float) -> float:
    """The first time at which the running best suboptimality is at most `target` (inf
    if never)."""
    running = np.minimum.accumulate(np.asarray(subopt, dtype=np.float64))
    hit = np.nonzero(running <= target)[0]
    return float(np.asarray(times)[hit[0]]) if hit.size else math.inf


def timed_hoag(problem, hparams, **kwargs):
    """`hypergrad.tune.hoag` with a clock per outer step, compilation excluded.

    With a callback, `hoag` runs its outer steps one at a time from Python and its history
    carries `time_s` (without one it may run the whole loop compiled, and says None). Each
    mode runs once untimed first (compilation), then timed. Returns `(result, times,
    whole_loop_s)`: the stepwise run's result and per-step times, and the wall time of the
    same call without a callback (the compiled loop, where the library offers one).
    """
    from hypergrad.tune import hoag

    def noop(entry):
        del entry

    # The warm-up runs every step: a shorter one left programs of later steps to compile
    # inside the timed run (6 s at the fifth step on the first problem).
    hoag(problem, hparams, **kwargs, callback=noop)
    result = hoag(problem, hparams, **kwargs, callback=noop)
    times = [float(e["time_s"]) for e in result.history]
    hoag(problem, hparams, **kwargs)
    start = time.perf_counter()
    hoag(problem, hparams, **kwargs)
    return result, times, time.perf_counter() - start


def quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def train_minibatch(loss, params, train, tx, steps: int, batch: int, key):
    """`steps` optax steps of `loss(params, (X, y))` on minibatches drawn with `key`.

    Returns the final params and the final optimizer state.
    """
    X, y = train
    n = X.shape[0]

    def body(carry, k):
        p, s = carry
        idx = jax.random.choice(k, n, (batch,), replace=False)
        g = jax.grad(loss)(p, (X[idx], y[idx]))
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, state), _ = jax.lax.scan(body, (params, tx.init(params)), jax.random.split(key, steps))
    return params, state


def softmax_xent(logits, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
