"""Argument checks the analyses share; each error names the argument and the value."""

import optuna


def as_study(study) -> optuna.Study:
    """The `optuna.Study` of `study` (a hypergrad `Records` holds one)."""
    study = getattr(study, "study", study)
    if not isinstance(study, optuna.Study):
        raise TypeError(f"study must be an optuna.Study or hypergrad Records, got {study!r}")
    return study


def direction_sign(direction: str) -> float:
    """+1 for `"minimize"`, -1 for `"maximize"`: multiplied in, lower is better."""
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"direction must be 'minimize' or 'maximize', got direction={direction!r}")
    return 1.0 if direction == "minimize" else -1.0


def check_int(name: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int of at least {low}, got {name}={value!r}")


def check_objective(study: optuna.Study, objective) -> int:
    n = len(study.directions)
    if isinstance(objective, bool) or not isinstance(objective, int) or not 0 <= objective < n:
        raise ValueError(f"objective must be an int in [0, {n - 1}], got objective={objective!r}")
    return objective
