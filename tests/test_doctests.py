"""Every docstring example in `hypergrad/` runs, one test per module that has any.

The modules are found by walking the package (not listed by hand), so a new module's
examples are run without anyone remembering to add it here; a module that fails to
import fails its test rather than dropping out of the list. Examples run with float64
on (as `tests/conftest.py` sets for the whole suite) and in a temporary working
directory, so that examples which write files leave nothing behind.
"""

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import hypergrad

PACKAGE = Path(hypergrad.__file__).parent


def _modules_with_examples() -> list[str]:
    """Names of the package's modules whose source holds a `>>>` prompt (read as text, so
    that collection imports nothing but the package itself)."""
    names = []
    for info in pkgutil.walk_packages(hypergrad.__path__, prefix="hypergrad."):
        relative = info.name.split(".")[1:]
        path = PACKAGE.joinpath(*relative)
        source = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
        if source.exists() and ">>>" in source.read_text(encoding="utf-8"):
            names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_the_walk_finds_the_packages_examples():
    # Not vacuous: the walk must reach subpackages (solvers, methods, search, ...), and
    # the modules that already ran their examples before this file existed are among them.
    assert len(MODULES) >= 25, MODULES
    for name in ("hypergrad.records._records", "hypergrad.space._space", "hypergrad.search._run"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, name) if t.examples]
    assert tests, f"{name} has '>>>' in its source but no example doctest can find"
    failures = []
    for test in tests:
        report = []
        result = runner.run(test, out=report.append)
        if result.failed:
            failures.append("".join(report))
    assert not failures, "\n".join(failures)
