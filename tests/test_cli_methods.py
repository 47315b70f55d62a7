"""`hypergrad methods` runs end to end and its exact methods agree with the reference."""

from hypergrad.cli import main
from hypergrad.cli._methods import run_methods


def test_methods_table_rows():
    lines = []
    rows = run_methods(out=lines.append)
    by_name = {r["method"]: r for r in rows}
    # Newton to gradient norm 1e-12 and linear solves to 1e-10 relative: errors far
    # below 1e-7 for the exact implicit methods and the converged unrolls.
    for name in ("Implicit(CG)", "Implicit(Dense)", "Unrolled(reverse)", "Unrolled(forward)"):
        assert by_name[name]["relative_error"] < 1e-7, name
    # The one-step approximation is an approximation: it must show a visible error.
    assert by_name["Implicit(Identity)"]["relative_error"] > 1e-2
    assert any("Implicit(CG)" in line for line in lines)


def test_methods_rejects_bad_alpha(capsys):
    import pytest

    with pytest.raises(SystemExit, match="--alpha must be positive"):
        main(["methods", "--alpha", "-1"])
