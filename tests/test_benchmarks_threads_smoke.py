"""Smoke test of `python -m benchmarks run --quick threads`: it writes its results file
with both loads and finite times on both sides. No timing is asserted."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # fresh processes fitting HyperLasso: .ci/run's -m slow call


def test_threads_benchmark_quick_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--out", str(tmp_path), "threads"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "threads.json").read_text())
    assert record["benchmark"] == "threads" and record["quick"] is True
    names = [c["name"] for c in record["cases"]]
    assert len(names) == 2 and any("quiet" in n for n in names) and any("busy" in n for n in names)
    for c in record["cases"]:
        assert all(math.isfinite(t) and t > 0 for t in c["figures"]["runs_s"])
        assert all(math.isfinite(t) and t > 0 for t in c["baseline"]["runs_s"])
