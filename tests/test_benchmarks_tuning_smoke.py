"""Smoke test of `python -m benchmarks run --quick tuning`: the results file holds every
case with its baseline and ratio. No timing is asserted."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A benchmark run in a subprocess (tens of seconds on two cores): run by .ci/run's second
# pytest call (-m slow), not by the README's test command.
pytestmark = pytest.mark.slow


def test_tuning_benchmark_quick_writes_its_cases(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--out", str(tmp_path), "tuning"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    record = json.loads((tmp_path / "tuning.json").read_text())
    assert record["benchmark"] == "tuning" and record["quick"] is True
    cases = {c["name"].split("/")[0]: c for c in record["cases"]}
    assert set(cases) == {"population", "many_hparams", "mixed", "float32"}
    for c in record["cases"]:
        assert c["baseline"]["name"], c["name"]
        assert c["ratio"] > 0 and math.isfinite(c["ratio"]), c["name"]
    # The vmap-ed population computes what the loop computes.
    assert cases["population"]["figures"]["max_relative_difference_vs_loop"] < 1e-6
    # The README's example in float32 and in float64 tunes to the same penalty.
    f32 = cases["float32"]
    assert f32["figures"]["dtype"] == "float32" and f32["baseline"]["dtype"] == "float64"
    assert f32["figures"]["alpha"] == pytest.approx(f32["baseline"]["alpha"], rel=0.05)
    # Regret is measured against an optimum no method can beat.
    for c in record["cases"]:
        if c["name"].startswith("mixed"):
            assert c["figures"]["final_regret"] >= -1e-9
            assert c["baseline"]["final_regret"] >= -1e-9
