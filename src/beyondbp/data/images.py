"""Image classification sets read from their original file formats: MNIST, Fashion-MNIST, CIFAR-10."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from .dataset import DataSplit, classification_split
from .files import download as fetch
from .files import folders, locate_or_fetch
from .idx import read_idx
from .registry import DATASETS

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist"
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


def _idx_split(name: str, base_url: str, hint: str, data_dir, download_files: bool) -> DataSplit:
    files = locate_or_fetch(name, IDX_FILES, data_dir, hint, download_files,
                            lambda folder: fetch([f"{base_url}/{f}.gz" for f in IDX_FILES], folder), gz_ok=True)
    x_train, y_train, x_test, y_test = (read_idx(files[f]) for f in IDX_FILES)
    # [N, 28, 28] -> [N, 1, 28, 28]; one mean and std over all training pixels
    return classification_split(name, x_train[:, None], y_train, x_test[:, None], y_test, 10,
                                axes=(0, 1, 2, 3)).from_source(folders(files))


@DATASETS.register("mnist", "MNIST handwritten digits, 60k/10k 28x28 (IDX files)")
def mnist(data_dir=None, download: bool = False, split_seed: int = 0) -> DataSplit:
    return _idx_split("mnist", MNIST_URL, "pass --download to fetch them, or --data-dir DIR", data_dir, download)


@DATASETS.register("fashion-mnist", "Fashion-MNIST clothing images, 60k/10k 28x28 (IDX files)")
def fashion_mnist(data_dir=None, download: bool = False, split_seed: int = 0) -> DataSplit:
    hint = ("on Debian: apt-get install dataset-fashion-mnist; elsewhere pass --download, "
            "or --data-dir DIR holding the IDX files")
    return _idx_split("fashion-mnist", FASHION_MNIST_URL, hint, data_dir, download)


CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def _read_cifar_batch(path: Path, labels: bytes = b"labels") -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(batch[labels], dtype=np.int64)


def _fetch_and_unpack(url: str):
    def fetch_and_unpack(folder: Path) -> None:
        fetch([url], folder)
        with tarfile.open(folder / url.rsplit("/", 1)[-1]) as archive:
            archive.extractall(folder, filter="data")
    return fetch_and_unpack


@DATASETS.register("cifar10", "CIFAR-10, 50k/10k 32x32x3 (the python pickle batches)")
def cifar10(data_dir=None, download: bool = False, split_seed: int = 0) -> DataSplit:
    name, hint = "cifar10", "pass --download to fetch them, or --data-dir DIR holding cifar-10-batches-py/"
    files = locate_or_fetch(name, CIFAR_FILES, data_dir, hint, download, _fetch_and_unpack(CIFAR10_URL),
                            subdirs=("cifar-10-batches-py",))
    parts = [_read_cifar_batch(files[f]) for f in CIFAR_FILES]
    x_train = np.concatenate([x for x, _ in parts[:-1]])
    y_train = np.concatenate([y for _, y in parts[:-1]])
    x_test, y_test = parts[-1]
    # per-channel mean and std over the training images
    return classification_split(name, x_train, y_train, x_test, y_test, 10, axes=(0, 2, 3)).from_source(folders(files))


@DATASETS.register("cifar100", "CIFAR-100 (its 100 fine classes), 50k/10k 32x32x3 (the python pickle files)")
def cifar100(data_dir=None, download: bool = False, split_seed: int = 0) -> DataSplit:
    name, hint = "cifar100", "pass --download to fetch them, or --data-dir DIR holding cifar-100-python/"
    files = locate_or_fetch(name, ("train", "test"), data_dir, hint, download, _fetch_and_unpack(CIFAR100_URL),
                            subdirs=("cifar-100-python",))
    (x_train, y_train), (x_test, y_test) = (_read_cifar_batch(files[f], b"fine_labels") for f in ("train", "test"))
    return classification_split(name, x_train, y_train, x_test, y_test, 100,
                                axes=(0, 2, 3)).from_source(folders(files))
