"""Lazy re-exports for a package's `__init__`: names listed by submodule, imported on
first use (PEP 562 module `__getattr__`).

Interface: `__getattr__, __dir__, __all__ = attach(__name__, {"_sub": ["name", ...]})`
in a package's `__init__.py`. Invariant: `package.name` and `from package import name`
give the object `package._sub.name`, the same as an eager `from ._sub import name as
name`; the submodule (and what it imports: Optuna, SciPy, scikit-learn) is imported the
first time one of its names is used, not when the package is. An unknown name raises
`AttributeError` as for any module.

What it saves: `hypergrad.analysis` pulls in Optuna's fANOVA, which imports
scikit-learn's ensembles (about 0.8 s); a package that needs only `GAP_THRESHOLD` from
it need not pay for that.

Why not `lazy_loader`. The scientific-python `lazy_loader` package (SPEC 1) offers the
same `attach` with more (stub files, `EAGER_IMPORT`); this module is the part of it
hypergrad uses, kept here so that the core dependencies stay jax, optax, numpy and
optuna. Moving to `lazy_loader.attach(__name__, submod_attrs=...)` is a one-line change
per package if it ever becomes a dependency.
"""

import importlib


def attach(package: str, exports: dict[str, list[str]]):
    """Module-level `__getattr__`, `__dir__` and `__all__` for `package` re-exporting
    `exports` (submodule name relative to the package -> the names it provides)."""
    where = {name: sub for sub, names in exports.items() for name in names}
    if len(where) != sum(len(names) for names in exports.values()):
        raise ValueError(f"{package}: a name is listed under two submodules")

    def __getattr__(name):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{where[name]}")
        value = getattr(module, name)
        # Later lookups find it in the module's namespace without calling this again.
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__():
        return sorted(set(where) | set(vars(importlib.import_module(package))))

    return __getattr__, __dir__, sorted(where)
