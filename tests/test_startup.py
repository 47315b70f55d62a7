"""What a fresh process imports: `import hypergrad` stays on JAX and optax, the analysis
package loads a submodule only when one of its names is used (`hypergrad._lazy`), and the
command line imports only the module of the command it runs.

Each check runs in a subprocess: `sys.modules` of the test process holds whatever earlier
tests imported. No timing here (timings go to `python -m benchmarks run startup`).
"""

import importlib
import json
import subprocess
import sys

import pytest

from hypergrad import _lazy


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_hypergrad_leaves_optional_stacks_alone():
    mods = _modules_after("import hypergrad")
    assert "jax" in mods and "hypergrad.methods" in mods
    for heavy in ("optuna", "scipy", "sklearn", "hypergrad.tune", "hypergrad.analysis"):
        assert heavy not in mods, heavy


def test_analysis_name_loads_only_its_submodule():
    mods = _modules_after("from hypergrad.analysis import GAP_THRESHOLD")
    assert "hypergrad.analysis._overfitting" in mods
    # fANOVA (through _importance) is what pulls in scikit-learn's forests.
    for other in ("hypergrad.analysis._importance", "hypergrad.analysis._tunability"):
        assert other not in mods, other
    assert "sklearn" not in mods


def test_lazy_names_are_the_submodules_objects():
    analysis = importlib.import_module("hypergrad.analysis")
    subs = {
        name: importlib.import_module(f"hypergrad.analysis.{name}")
        for name in ("_importance", "_overfitting", "_robustness", "_sensitivity")
        + ("_study", "_tunability")
    }
    for name in analysis.__all__:
        owners = [s for s, mod in subs.items() if getattr(mod, name, None) is not None]
        assert owners, name
        assert getattr(analysis, name) is getattr(subs[owners[0]], name)
    assert set(analysis.__all__) <= set(dir(analysis))


def test_lazy_unknown_name_and_duplicates():
    getattr_, _, _ = _lazy.attach("hypergrad.analysis", {"_overfitting": ["GAP_THRESHOLD"]})
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr_("no_such_name")
    with pytest.raises(ValueError, match="two submodules"):
        _lazy.attach("hypergrad.analysis", {"_study": ["reseed"], "_overfitting": ["reseed"]})


@pytest.mark.parametrize("command", ["report", "worker"])
def test_cli_imports_only_the_named_command(command):
    code = (
        "from hypergrad.cli._main import main\n"
        "try:\n"
        f"    main([{command!r}, '--help'])\n"
        "except SystemExit:\n"
        "    pass"
    )
    mods = _modules_after(code)
    assert f"hypergrad.cli._{command}" in mods
    assert "hypergrad.cli._demo" not in mods


def test_cli_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-c", "from hypergrad.cli import main; main(['--help'])"],
        capture_output=True,
        text=True,
    ).stdout
    for command in ("demo", "methods", "run", "report", "reproduce", "worker"):
        assert command in out, command
