"""Smoke test of the benchmark harness through `benchmarks/device.sh --quick`, the one
command an accelerator runs (issue 12): on CPU it runs the population section of
`tuning`, `hypergradient_cost` and `startup` at small sizes and writes their results files
(into a temporary folder, not over the committed results) with the machine, the date and
cases whose numbers are finite. No timing is asserted: speed is what the benchmark
reports, not what the tests check."""

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Benchmark runs in a subprocess (a few minutes on two cores): run by .ci/run's second
# pytest call (-m slow), not by the README's test command.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def device_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", "python")}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "device.sh"), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def record(device_run):
    path = device_run[0] / "hypergradient_cost.json"
    assert path.exists(), "the benchmark wrote no results file"
    return json.loads(path.read_text())


def test_device_script_writes_every_results_file_with_the_device(device_run):
    out, log = device_run
    assert "device.sh: backend cpu" in log
    for name in ("tuning", "hypergradient_cost", "startup"):
        path = out / f"{name}.json"
        assert path.exists(), name
        rec = json.loads(path.read_text())
        assert rec["benchmark"] == name and rec["quick"] is True
        assert rec["machine"]["devices"], name
    # The tuning run holds the population section alone (HYPERGRAD_TUNING_SECTIONS).
    tuning = json.loads((out / "tuning.json").read_text())
    assert tuning["cases"] and all(c["name"].startswith("population") for c in tuning["cases"])


def _numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _numbers(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _numbers(v)
    elif tree is None or (isinstance(tree, (int, float)) and not isinstance(tree, bool)):
        yield tree  # None stands for a non-finite number in the results file


def test_results_file_has_machine_and_date(record):
    assert record["benchmark"] == "hypergradient_cost"
    assert record["quick"] is True
    assert record["date"]
    machine = record["machine"]
    for key in ("cpu_model", "cpu_cores", "devices", "python", "versions"):
        assert machine[key], key
    for package in ("jax", "jaxlib", "numpy", "optax", "jaxopt", "optimistix"):
        assert machine["versions"][package], package


def test_cases_carry_figures_ratios_and_goals(record):
    names = {c["name"] for c in record["cases"]}
    # The goals of issue 2, each measured against its baseline.
    for name in (
        "ridge/implicit_cg_vs_inner_solve",
        "logistic/implicit_cg_vs_inner_solve",
        "ridge/vs_peers/end_to_end",
        "unrolled_reverse/memory_xla",
        "unrolled_reverse/time",
    ):
        assert name in names, name
    for c in record["cases"]:
        assert isinstance(c["figures"], dict), c["name"]
        if "goal" in c:
            assert c["baseline"]["name"], c["name"]
            assert c["ratio"] > 0 and math.isfinite(c["ratio"]), c["name"]
            assert isinstance(c["met"], bool), c["name"]
            assert c["ratio"] == pytest.approx(
                c["figures"][c["ratio_of"]] / c["baseline"][c["ratio_of"]]
            )


def test_numbers_are_finite_and_errors_small(record):
    numbers = list(_numbers(record["cases"]))
    assert numbers and all(x is not None and math.isfinite(x) for x in numbers)
    for c in record["cases"]:
        if c["name"].endswith("implicit_cg_vs_inner_solve"):
            # The CG tolerance is picked so the error reaches 1e-6 (the goal's accuracy).
            assert c["figures"]["error"] <= 1e-6, c["name"]
