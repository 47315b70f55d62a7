"""Re-run a recorded trial from its record and compare the results.

Interface: `reproduce(storage, study, trial, rtol=DEFAULT_RTOL) -> Reproduction`.

The record gives the objective (an importable reference), the configuration (the
trial's parameters), the seed and the budget; the objective runs again on them, and its
value(s) and intermediate values are compared with the recorded ones.

Invariant (the rule `matches` applies): on the machine, device and library versions of
the record (`hypergrad.records.same_machine`), the results must agree bit for bit;
anywhere else within `rtol` (relative, with an absolute floor of `rtol` times the largest
recorded magnitude for values near zero). `DEFAULT_RTOL = 1e-6`: float64 results of one
computation on another CPU or library version differ by the order in which reductions
add up, a few ulps amplified by the problem's conditioning; 1e-6 leaves room for
condition numbers up to about 1e9 and still catches a changed algorithm.
"""

from dataclasses import dataclass, field

import numpy as np
from optuna.trial import TrialState

from ._environment import X64, environment, same_machine
from ._records import EXACT_ATTR, FORMAT, FORMAT_ATTR, Records, call_objective, resolve
from ._storage import IncompatibleRecordError, RecordsError

DEFAULT_RTOL = 1e-6


@dataclass(frozen=True)
class Reproduction:
    """The comparison of a recorded trial with its re-run.

    Attributes:
      trial: the trial number.
      recorded, reproduced: the values (tuples, one entry per objective).
      recorded_intermediate, reproduced_intermediate: the intermediate values.
      same_machine: the re-run ran on the recorded CPU, device and versions.
      exact_expected: the record promises a bitwise re-run on the same machine (a
        member of a vmap-ed population, re-run alone, promises only `rtol`).
      exact: every value and intermediate value is bitwise equal.
      within_tolerance: every one is within `rtol`.
      rtol: the tolerance used away from the recorded machine.
      differences: what differs (machine attributes, largest relative error).
    """

    trial: int
    recorded: tuple
    reproduced: tuple
    recorded_intermediate: tuple
    reproduced_intermediate: tuple
    same_machine: bool
    exact: bool
    within_tolerance: bool
    rtol: float
    differences: list[str] = field(default_factory=list)
    exact_expected: bool = True

    @property
    def matches(self) -> bool:
        if self.same_machine and self.exact_expected:
            return self.exact
        return self.within_tolerance

    def summary(self) -> str:
        if self.exact:
            verdict = "reproduced bit for bit"
        elif self.within_tolerance and not self.same_machine:
            verdict = f"reproduced within rtol={self.rtol:g} (another machine or versions)"
        elif self.within_tolerance and not self.exact_expected:
            verdict = (
                f"reproduced within rtol={self.rtol:g} (a population member re-run alone; "
                "bitwise equality is not promised)"
            )
        else:
            verdict = "NOT reproduced"
        lines = [
            f"trial {self.trial}: {verdict}",
            f"  recorded value(s):   {_fmt(self.recorded)}",
            f"  reproduced value(s): {_fmt(self.reproduced)}",
        ]
        if self.recorded_intermediate:
            lines.append(
                f"  intermediate values: {len(self.recorded_intermediate)} recorded, "
                f"{len(self.reproduced_intermediate)} reproduced"
            )
        lines += [f"  {d}" for d in self.differences]
        return "\n".join(lines)


def _fmt(values) -> str:
    return ", ".join(repr(v) for v in values) if values else "(none)"


def _compare(a: np.ndarray, b: np.ndarray, rtol: float) -> tuple[bool, bool, float]:
    if a.shape != b.shape:
        return False, False, float("inf")
    if a.size == 0:
        return True, True, 0.0
    exact = bool(np.array_equal(a.view(np.uint64), b.view(np.uint64)))
    scale = np.maximum(np.abs(a), rtol * np.max(np.abs(a)))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(a == b, 0.0, np.abs(a - b) / scale)
    worst = float(np.max(rel))
    return exact, bool(worst <= rtol), worst


def reproduce(storage, study: str | None, trial: int, rtol: float = DEFAULT_RTOL) -> Reproduction:
    """Re-run trial `trial` of `study` in `storage` and compare; see the module docstring.

    Raises:
      RecordsError: the storage, study or trial cannot be read, the record is not a
        hypergrad record, was written by a later format, did not complete, or names an
        objective that cannot be imported.
    """
    if not (isinstance(rtol, float | int) and rtol >= 0):
        raise ValueError(f"rtol must be a non-negative number, got {rtol!r}")
    records = Records.open(storage, study, read_only=True)  # reading never writes
    t = records.trial(trial)
    attrs = t.user_attrs
    fmt = attrs.get(FORMAT_ATTR)
    if fmt is None:
        raise RecordsError(
            f"trial {trial} of study {records.name!r} was not recorded by hypergrad "
            "(no record format); it cannot be re-run"
        )
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise IncompatibleRecordError(
            f"trial {trial} of study {records.name!r} has record format {fmt!r}; this "
            f"hypergrad reads formats up to {FORMAT}: upgrade hypergrad to re-run it"
        )
    if t.state != TrialState.COMPLETE:
        raise RecordsError(
            f"trial {trial} of study {records.name!r} is {t.state.name}, not COMPLETE: "
            "there is no value to compare with"
        )
    ref = attrs.get("objective")
    if not ref:
        raise RecordsError(
            f"trial {trial} of study {records.name!r} records no importable objective "
            "(it was a lambda, a local function or a script's __main__)"
        )
    objective = resolve(ref)
    import jax

    # The precision is process-wide JAX state, not an argument: restore the recorded one
    # for the re-run (float32 by default would differ from a float64 record).
    x64 = bool(jax.config.jax_enable_x64)
    jax.config.update(X64, bool(attrs.get(X64, x64)))
    try:
        outcome, _ = call_objective(
            objective, dict(t.params), int(attrs["seed"]), attrs.get("budget")
        )
    finally:
        jax.config.update(X64, x64)
    recorded = tuple(t.values)
    reproduced = (
        ()
        if outcome.value is None
        else (outcome.value if isinstance(outcome.value, tuple) else (outcome.value,))
    )
    rec_int = tuple(t.intermediate_values[k] for k in sorted(t.intermediate_values))
    new_int = tuple(outcome.intermediate)

    here = environment(getattr(objective, "__code__", None) and objective.__code__.co_filename)
    same = same_machine(attrs, here)
    differences = [
        f"{k}: recorded {attrs.get(k)!r}, now {here.get(k)!r}"
        for k in sorted(k for k in here if k.startswith("versions.") or k in ("device", "cpu"))
        if attrs.get(k) != here.get(k)
    ]
    if attrs.get("git_commit") and attrs.get("git_commit") != here.get("git_commit"):
        differences.append(
            f"git_commit: recorded {attrs['git_commit']}, now {here.get('git_commit')}"
        )
    ex_v, ok_v, worst_v = _compare(np.asarray(recorded, float), np.asarray(reproduced, float), rtol)
    ex_i, ok_i, worst_i = _compare(np.asarray(rec_int, float), np.asarray(new_int, float), rtol)
    if not (ex_v and ex_i):
        differences.append(
            f"largest relative difference: values {worst_v:.3g}, intermediate {worst_i:.3g}"
        )
    return Reproduction(
        trial=trial,
        recorded=recorded,
        reproduced=reproduced,
        recorded_intermediate=rec_int,
        reproduced_intermediate=new_int,
        same_machine=same,
        exact=ex_v and ex_i,
        within_tolerance=ok_v and ok_i,
        rtol=float(rtol),
        differences=differences,
        exact_expected=bool(attrs.get(EXACT_ATTR, True)),
    )
