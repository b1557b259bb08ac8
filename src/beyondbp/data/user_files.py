"""A user's own data file: ``.npz`` arrays or a ``.csv`` table (``beyondbp train --data PATH``).

- ``.npz``: arrays ``x`` (``[N, ...]``: features, or images ``[N, H, W]`` / ``[N, C, H, W]``) and
  ``y`` (``[N]`` or ``[N, k]``); optional ``x_test`` and ``y_test``, else a seeded 80/20 split.
- ``.csv``: a header row, numeric feature columns and the ``target`` column (any position).

The task is classification when the targets are integers or strings (classes are the sorted
distinct values), regression otherwise; ``task`` forces it. The split is stratified for
classification; inputs (per feature, or per channel for images) and regression targets are
standardised with training statistics only, as for the built-in tables.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ..errors import DataFormatError, DataNotFoundError
from .dataset import DataSplit, classification_split, regression_parts, split_indices

TEST_FRACTION = 0.2
TASKS = ("classification", "regression")


def load_user_file(path: Path | str, target: str | None = None, task: str | None = None,
                   split_seed: int = 0, drop_missing: bool = False) -> DataSplit:
    """The :class:`DataSplit` of a ``.npz`` or ``.csv`` file (see the module docstring); ``drop_missing``: a
    table's rows with a missing cell are dropped, and the source says how many."""
    path = Path(path)
    if task is not None and task not in TASKS:
        raise DataFormatError(f"unknown task '{task}'; known tasks: {', '.join(TASKS)}")
    if not path.is_file():
        raise DataNotFoundError(f"data file {path} does not exist")
    if path.suffix == ".npz":
        if target is not None:
            raise DataFormatError(f"a target column applies to .csv files; {path} holds arrays x and y")
        arrays = read_npz(path)
    elif path.suffix == ".csv":
        if target is None:
            raise DataFormatError(f"{path}: name the target column: target=COLUMN")
        arrays = read_csv(path, target, drop_missing)
    else:
        raise DataFormatError(f"{path}: unknown data file type '{path.suffix}'; use .npz (arrays x, y) or .csv")
    dropped = int(arrays.pop("dropped", 0))
    source = f"{path} ({dropped} row{'s' * (dropped != 1)} with a missing cell dropped)" if dropped else str(path)
    return make_split(path.stem, arrays, task, split_seed).from_source(source)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as error:
        raise DataFormatError(f"{path} is not a readable .npz file ({error})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataFormatError(f"{path} has no array {' or '.join(missing)}; it holds {', '.join(arrays) or 'nothing'} "
                              f"(expected x, y and optionally x_test, y_test)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataFormatError(f"{path}: give both x_test and y_test, or neither")
    for x, y in (("x", "y"), ("x_test", "y_test")):
        if x in arrays and len(arrays[x]) != len(arrays[y]):
            raise DataFormatError(f"{path}: {x} has {len(arrays[x])} rows but {y} has {len(arrays[y])}")
    for key in arrays:
        if key.startswith("x") and not np.issubdtype(arrays[key].dtype, np.number):
            raise DataFormatError(f"{path}: {key} is not numeric (dtype {arrays[key].dtype})")
    return arrays


def read_csv(path: Path, target: str, drop_missing: bool = False) -> dict[str, np.ndarray]:
    """Features and target of a table; ``drop_missing`` drops the rows with a missing cell (``dropped`` in the
    result counts them) instead of refusing the first."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataFormatError(f"{path} is empty")
    header = [h.strip() for h in rows[0]]
    body = [(number, row) for number, row in enumerate(rows[1:], start=2) if row]  # line numbers of the file
    if target not in header:
        raise DataFormatError(f"{path} has no column '{target}'; its columns: {', '.join(header)}")
    column = header.index(target)
    for number, row in body:
        if len(row) != len(header):
            raise DataFormatError(f"{path}, line {number}: {len(row)} fields, the header has {len(header)}")
    kept = [(n, row) for n, row in body if not any(cell.strip().lower() in MISSING for cell in row)]
    dropped = len(body) - len(kept) if drop_missing else 0
    body = kept if drop_missing else body
    if not body:
        raise DataFormatError(f"{path}: every row has a missing cell")
    features = [i for i in range(len(header)) if i != column]
    x = np.empty((len(body), len(features)))
    for k, (number, row) in enumerate(body):
        for j, i in enumerate(features):
            try:
                x[k, j] = float(row[i])
            except ValueError:
                hint = "; or drop rows with a missing cell: --drop-missing" if row[i].strip().lower() in MISSING \
                    else ""
                raise DataFormatError(f"{path}, line {number}, column '{header[i]}': '{row[i]}' is not a number; "
                                      f"features must be numeric{hint}") from None
    y = parse_targets(path, target, [(number, row[column].strip()) for number, row in body])
    return {"x": x, "y": y, "dropped": np.array(dropped)}


#: Cells that mean "no value": a target must never be one.
MISSING = {"", "nan", "na", "n/a", "null", "none", "?"}


def parse_targets(path: Path, column: str, cells: list[tuple[int, str]]) -> np.ndarray:
    """The target column (its cells with their line numbers): integers or numbers where every cell is one,
    strings (class names) where most cells are not numbers. A missing cell, or a non-number among numbers, is an
    error naming its line, never a class or a NaN of its own."""
    for number, cell in cells:
        if cell.lower() in MISSING:
            raise DataFormatError(f"{path}, line {number}, column '{column}': the target is missing ('{cell}'); "
                                  f"fill it in, remove the row, or drop such rows: --drop-missing")
    values = [cell for _, cell in cells]
    numeric = [is_number(cell) for cell in values]
    if not any(numeric) or sum(numeric) < len(values) / 2:
        return np.array(values)  # class names
    if not all(numeric):
        number, cell = cells[numeric.index(False)]
        raise DataFormatError(f"{path}, line {number}, column '{column}': '{cell}' is not a number, "
                              f"while {sum(numeric)} of the {len(values)} targets are")
    y = np.array(values).astype(np.float64)
    if not np.all(np.isfinite(y)):
        number, cell = cells[int(np.flatnonzero(~np.isfinite(y))[0])]
        raise DataFormatError(f"{path}, line {number}, column '{column}': the target '{cell}' is not finite")
    if np.all(y == np.round(y)) and not any("." in v or "e" in v.lower() for v in values):
        return y.astype(np.int64)
    return y


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def make_split(name: str, arrays: dict[str, np.ndarray], task: str | None, split_seed: int) -> DataSplit:
    x, y = arrays["x"], arrays["y"]
    for key, values in arrays.items():
        numeric = np.issubdtype(values.dtype, np.number)
        if (key.startswith("x") or (key.startswith("y") and numeric)) and not np.all(np.isfinite(values)):
            raise DataFormatError(f"data '{name}': {key} holds NaN or infinite values")
    if len(x) < 2:
        raise DataFormatError(f"data '{name}' holds {len(x)} samples; at least 2 are needed")
    is_classes = y.dtype.kind in "iubUSO"
    task = task or ("classification" if is_classes else "regression")
    if x.ndim == 3:  # [N, H, W] images: one channel
        x = x[:, None]
        arrays = {k: (v[:, None] if k == "x_test" else v) for k, v in arrays.items()}
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    if task == "classification":
        return _classification(name, x, y, arrays, axes, split_seed)
    if not np.issubdtype(y.dtype, np.number):
        words = [str(v) for v in y.ravel() if not is_number(str(v))]
        found = f"{len(words)} of the {y.size} are not numbers, e.g. '{words[0]}'" if words else f"got {y.dtype}"
        raise DataFormatError(f"data '{name}': regression needs numeric targets; {found}")
    return _regression(name, x, y, arrays, axes, split_seed)


def _parts(x, y, arrays, split_seed, labels=None):
    if "x_test" in arrays:
        return x, y, arrays["x_test"], arrays["y_test"]
    train, test = split_indices(len(x), TEST_FRACTION, split_seed, labels)
    return x[train], y[train], x[test], y[test]


def _classification(name, x, y, arrays, axes, split_seed) -> DataSplit:
    if y.ndim != 1:
        raise DataFormatError(f"data '{name}': class targets must be one label per sample, got shape {y.shape}")
    everything = np.concatenate([y, arrays["y_test"]]) if "y_test" in arrays else y
    if everything.dtype.kind == "f" and not np.all(everything == np.round(everything)):
        raise DataFormatError(f"data '{name}': classification needs integer or string labels")
    classes = np.unique(everything)
    if len(classes) < 2:
        raise DataFormatError(f"data '{name}': classification needs at least 2 classes; every target is "
                              f"'{classes[0]}'")
    encode = lambda labels: np.searchsorted(classes, labels)
    counts = np.unique(y, return_counts=True)[1]
    test_size = math.ceil(TEST_FRACTION * len(y))  # sklearn's rounding: a stratified split needs a row per class
    stratify = encode(y) if "x_test" not in arrays and counts.min() >= 2 and test_size >= len(counts) else None
    x_train, y_train, x_test, y_test = _parts(x, encode(y), {**arrays, **({"y_test": encode(arrays["y_test"])}
                                                                    if "y_test" in arrays else {})},
                                              split_seed, stratify)
    return classification_split(name, x_train, y_train, x_test, y_test, len(classes), axes)


def _regression(name, x, y, arrays, axes, split_seed) -> DataSplit:
    y = y.reshape(len(y), -1).astype(np.float64)
    if "y_test" in arrays:
        arrays = {**arrays, "y_test": arrays["y_test"].reshape(len(arrays["y_test"]), -1)}
    return regression_parts(name, *_parts(x, y, arrays, split_seed), axes)
