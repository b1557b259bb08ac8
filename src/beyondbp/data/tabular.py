"""Tabular and small data sets: scikit-learn's bundled sets, generated data, UCI CSV files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataFormatError
from .dataset import DataSplit, classification_split, regression_split, split_indices
from .files import download as fetch
from .files import folders, locate_or_fetch
from .registry import DATASETS

TEST_FRACTION = 0.2


@DATASETS.register("digits", "scikit-learn's 8x8 handwritten digits, 1797 samples, seeded 80/20 split (bundled)")
def digits(data_dir=None, download: bool = False, split_seed: int = 0) -> DataSplit:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = bunch.images[:, None].astype(np.float64), bunch.target
    train, test = split_indices(len(x), TEST_FRACTION, split_seed, labels=y)
    # per-pixel standardisation (constant border pixels are only centred)
    return classification_split("digits", x[train], y[train], x[test], y[test], 10,
                                axes=(0,)).from_source("bundled with scikit-learn")


@DATASETS.register("diabetes", "scikit-learn's diabetes regression, 442 samples, 10 features (bundled)")
def diabetes(data_dir=None, download: bool = False, split_seed: int = 0) -> DataSplit:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    return regression_split("diabetes", x, y, split_seed, TEST_FRACTION).from_source("bundled with scikit-learn")


FRIEDMAN_SAMPLES = 10_000


@DATASETS.register("friedman", f"Friedman #1 regression, generated: {FRIEDMAN_SAMPLES} samples, 10 features, noise 1")
def friedman(data_dir=None, download: bool = False, split_seed: int = 0) -> DataSplit:
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=FRIEDMAN_SAMPLES, n_features=10, noise=1.0, random_state=split_seed)
    return regression_split("friedman", x, y, split_seed, TEST_FRACTION).from_source(
        f"generated (scikit-learn's make_friedman1, seed {split_seed})")


UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases"
WINE_FILES = ("winequality-red.csv", "winequality-white.csv")


@DATASETS.register("wine-quality", "UCI Wine Quality (red + white, with a colour feature), regression of quality")
def wine_quality(data_dir=None, download: bool = False, split_seed: int = 0) -> DataSplit:
    """Both UCI CSV files (``;``-separated, one header row); the target is the ``quality`` column."""
    hint = "pass --download to fetch them, or --data-dir DIR holding the UCI CSV files"
    files = locate_or_fetch("wine-quality", WINE_FILES, data_dir, hint, download,
                            lambda folder: fetch([f"{UCI}/wine-quality/{f}" for f in WINE_FILES], folder))
    parts = []
    for is_red, name in enumerate(reversed(WINE_FILES)):  # white: 0, red: 1
        table = np.loadtxt(files[name], delimiter=";", skiprows=1)
        parts.append(np.column_stack([table[:, :-1], np.full(len(table), is_red), table[:, -1]]))
    table = np.concatenate(parts)
    return regression_split("wine-quality", table[:, :-1], table[:, -1], split_seed,
                            TEST_FRACTION).from_source(folders(files))


SGEMM_CSV = "sgemm_product.csv"
SGEMM_ZIP = "sgemm_product_dataset.zip"


@DATASETS.register("sgemm", "UCI SGEMM GPU kernel performance: 14 parameters -> mean run time of 4 runs (ms)")
def sgemm(data_dir=None, download: bool = False, split_seed: int = 0) -> DataSplit:
    """``sgemm_product.csv`` (or the UCI zip holding it): 14 kernel parameters and four run times."""
    hint = "pass --download to fetch it, or --data-dir DIR holding sgemm_product.csv"
    def fetch_and_unpack(folder: Path) -> None:
        fetch([f"{UCI}/00440/{SGEMM_ZIP}"], folder)
        with zipfile.ZipFile(folder / SGEMM_ZIP) as archive:
            archive.extract(SGEMM_CSV, folder)

    files = locate_or_fetch("sgemm", (SGEMM_CSV,), data_dir, hint, download, fetch_and_unpack)
    table = np.loadtxt(files[SGEMM_CSV], delimiter=",", skiprows=1)
    if table.ndim != 2 or table.shape[1] != 18:
        raise DataFormatError(f"{SGEMM_CSV} should have 18 columns (14 parameters, 4 runs), got {table.shape}")
    return regression_split("sgemm", table[:, :14], table[:, 14:].mean(axis=1), split_seed,
                            TEST_FRACTION).from_source(folders(files))
