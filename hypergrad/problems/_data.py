"""Data for the ready problems: scikit-learn's bundled sets, split and standardized.

`Split` holds train / validation / test arrays. Splits are drawn with numpy from a seed,
features are standardized with the training split's mean and scale, so the same seed
always gives the same arrays.
"""

from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def _sklearn_datasets():
    try:
        from sklearn import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the bundled data sets come from scikit-learn: pip install 'hypergrad-jax[sklearn]'"
        ) from e
    return datasets


def split_data(
    X, y, *, val: float = 0.25, test: float = 0.25, seed: int = 0, standardize: bool = True
) -> Split:
    """Shuffle with `seed` and split into train / validation / test fractions."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    if X.ndim != 2 or y.shape[:1] != X.shape[:1]:
        raise ValueError(
            f"X must be 2-d and y must have one entry per row of X, got X.shape={X.shape}, "
            f"y.shape={y.shape}"
        )
    if not (0 < val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val and test must be fractions summing below 1, got {val=}, {test=}")
    n = X.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(round(val * n)), int(round(test * n))
    i_test, i_val, i_train = np.split(order, [n_test, n_test + n_val])
    X_train = X[i_train]
    if standardize:
        mean, scale = X_train.mean(0), X_train.std(0)
        scale = np.where(scale > 0, scale, 1.0)  # constant columns stay constant, not NaN
        X = (X - mean) / scale
    return Split(X[i_train], y[i_train], X[i_val], y[i_val], X[i_test], y[i_test])


def load(name: str, *, val: float = 0.25, test: float = 0.25, seed: int = 0) -> Split:
    """A scikit-learn bundled data set, split and standardized.

    Args:
      name: one of "breast_cancer", "diabetes", "digits", "wine", "iris".
      val, test: fractions of the rows for validation and test.
      seed: the shuffling seed.
    """
    loaders = {
        "breast_cancer": "load_breast_cancer",
        "diabetes": "load_diabetes",
        "digits": "load_digits",
        "wine": "load_wine",
        "iris": "load_iris",
    }
    if name not in loaders:
        raise ValueError(f"name must be one of {sorted(loaders)}, got name={name!r}")
    X, y = getattr(_sklearn_datasets(), loaders[name])(return_X_y=True)
    return split_data(X, y, val=val, test=test, seed=seed)


def synthetic_regression(
    n: int, p: int, *, noise: float = 1.0, correlation: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian design with Toeplitz correlation `correlation^|i-j|` and a dense truth."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    if correlation:
        # AR(1) columns: x_j = rho x_{j-1} + sqrt(1-rho^2) e_j has Toeplitz covariance.
        for j in range(1, p):
            X[:, j] = correlation * X[:, j - 1] + np.sqrt(1 - correlation**2) * X[:, j]
    w = rng.standard_normal(p) / np.sqrt(p)
    y = X @ w + noise * rng.standard_normal(n)
    return X, y


def synthetic_classification(
    n: int, p: int, *, informative: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Labels in {0, 1} from a logistic model on a Gaussian design."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    k = p if informative is None else informative
    w = np.zeros(p)
    w[:k] = rng.standard_normal(k) * 2.0 / np.sqrt(k)
    prob = 1.0 / (1.0 + np.exp(-(X @ w)))
    y = (rng.random(n) < prob).astype(np.float64)
    return X, y


# The fewest rows a bucketed side is padded to (`kfold(bucket_rows=True)` and the
# scikit-learn estimators): every data set and fold of at most 64 rows shares one shape,
# the compute on a few dozen zero-weight rows being negligible next to a compilation.
LEAST_ROWS = 64


def bucket(n: int, least: int = 8) -> int:
    """The padded size of a dimension of size `n`: the smallest number `>= max(n, least)`
    of the form `m * 2^e` with `m` in {4, 5, 6, 7}, so at most a quarter more than `n`.

    Data padded to these sizes (zero-weight rows, zero columns) share compiled programs
    across nearby sizes: four sizes per doubling instead of every size.

    Example:
      >>> [bucket(n) for n in (1, 9, 100, 442, 569, 1000, 5000)]
      [8, 10, 112, 448, 640, 1024, 5120]
    """
    n = max(int(n), int(least), 1)
    e = max(n.bit_length() - 3, 0)
    m = -(-n // (1 << e))  # ceil(n / 2^e), between 4 and 8 for n >= 4
    return m << e
