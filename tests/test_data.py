"""Every loader on small files written here in the real formats; standardisation from training data only."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from beyondbp.data import images, load_dataset
from beyondbp.data.files import SYSTEM_DATA_DIR
from beyondbp.data.idx import read_idx
from beyondbp.errors import DataFormatError, DataNotFoundError


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def write_mnist_like(directory: Path, compress: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 4, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 1, 2, 3, 9, 1], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 4, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([5, 6, 7], dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(directory / name, array, compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_roundtrip(tmp_path, compress):
    array = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3", array, compress)
    path = tmp_path / ("a-idx3.gz" if compress else "a-idx3")
    np.testing.assert_array_equal(read_idx(path), array)


def test_read_idx_rejects_other_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataFormatError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_from_data_dir_standardised_on_train(tmp_path, compress):
    arrays = write_mnist_like(tmp_path / "mnist", compress)
    data = load_dataset("mnist", data_dir=tmp_path)
    assert data.train.x.shape == (6, 1, 4, 4) and data.test.x.shape == (3, 1, 4, 4)
    assert data.train.t.argmax(1).tolist() == [0, 1, 2, 3, 9, 1]
    assert data.test.t.shape == (3, 10)
    train = arrays["train-images-idx3-ubyte"].astype(np.float64)
    expected_test = (arrays["t10k-images-idx3-ubyte"] - train.mean()) / train.std()
    np.testing.assert_allclose(data.test.x[:, 0].numpy(), expected_test, rtol=1e-5)
    assert abs(data.train.x.mean().item()) < 1e-6


def test_fashion_mnist_found_through_environment(tmp_path, monkeypatch):
    write_mnist_like(tmp_path / "fashion-mnist", compress=True)
    monkeypatch.setenv("BEYONDBP_DATA", str(tmp_path))
    assert len(load_dataset("fashion-mnist").train) == 6


def test_missing_files_say_where_we_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DataNotFoundError) as error:
        load_dataset("mnist", data_dir=tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "mnist") in message and str(SYSTEM_DATA_DIR) in message
    assert "--download" in message


def test_download_fetches_missing_files(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_mnist_like(mirror, compress=True)
    monkeypatch.setattr(images, "MNIST_URL", mirror.as_uri())
    data = load_dataset("mnist", data_dir=tmp_path / "data", download=True)
    assert len(data.train) == 6
    assert (tmp_path / "data" / "mnist" / "train-images-idx3-ubyte.gz").is_file()


def test_cifar10_pickle_batches(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", 2) for i in range(1, 6)), ("test_batch", 3)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f)
    data = load_dataset("cifar10", data_dir=tmp_path)
    assert data.train.x.shape == (10, 3, 32, 32) and data.test.x.shape == (3, 3, 32, 32)
    # per-channel standardisation with training statistics
    torch.testing.assert_close(data.train.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    assert data.test.t.argmax(1).tolist() == [0, 1, 2]


def test_cifar100_pickle_files_with_fine_labels(tmp_path):
    directory = tmp_path / "cifar-100-python"
    directory.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 6), ("test", 2)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": [99 - i for i in range(n)],
                 b"coarse_labels": [0] * n}
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f)
    data = load_dataset("cifar100", data_dir=tmp_path)
    assert data.train.x.shape == (6, 3, 32, 32) and data.train.t.shape == (6, 100)
    assert data.test.t.argmax(1).tolist() == [99, 98]


def original_targets_up_to_shift(data) -> np.ndarray:
    """All targets in original units, sorted and shifted to start at 0 (the training mean is unknown here)."""
    values = (torch.cat([data.train.t, data.test.t]) * data.target_scale).flatten().sort().values.numpy()
    return values - values[0]


def test_wine_quality_csv(tmp_path):
    header = '"fixed acidity";"volatile acidity";"quality"\n'
    (tmp_path / "winequality-red.csv").write_text(header + "7.4;0.7;5\n7.8;0.88;6\n7.2;0.6;5\n6.1;0.4;7\n")
    (tmp_path / "winequality-white.csv").write_text(header + "7.0;0.27;6\n6.3;0.3;6\n8.1;0.28;5\n7.2;0.23;8\n"
                                                    "6.2;0.32;6\n7.0;0.27;4\n")
    data = load_dataset("wine-quality", data_dir=tmp_path)
    assert data.task == "regression"
    assert data.train.x.shape[1] == 3  # two features and the colour
    quality = np.sort([5, 6, 5, 7, 6, 6, 5, 8, 6, 4])
    np.testing.assert_allclose(original_targets_up_to_shift(data), quality - quality[0], atol=1e-5)


def test_sgemm_target_is_the_mean_run_time(tmp_path):
    rng = np.random.default_rng(1)
    params = rng.integers(1, 64, (20, 14))
    runs = rng.uniform(10, 100, (20, 4))
    lines = ["MWG,NWG,KWG,MDIMC,NDIMC,MDIMA,NDIMB,KWI,VWM,VWN,STRM,STRN,SA,SB,"
             "Run1 (ms),Run2 (ms),Run3 (ms),Run4 (ms)"]
    lines += [",".join(map(str, [*p, *r])) for p, r in zip(params, runs)]
    (tmp_path / "sgemm_product.csv").write_text("\n".join(lines) + "\n")
    data = load_dataset("sgemm", data_dir=tmp_path)
    assert data.train.x.shape == (16, 14) and data.test.x.shape == (4, 14)
    mean_runs = np.sort(runs.mean(axis=1))
    np.testing.assert_allclose(original_targets_up_to_shift(data), mean_runs - mean_runs[0], rtol=1e-4)


@pytest.mark.parametrize("name,task,shape", [("digits", "classification", (1, 8, 8)),
                                             ("diabetes", "regression", (10,)),
                                             ("friedman", "regression", (10,))])
def test_bundled_sets(name, task, shape):
    data = load_dataset(name)
    assert data.task == task and data.train.input_shape == shape
    assert len(data.test) == pytest.approx((len(data.train) + len(data.test)) * 0.2, abs=1)
    torch.testing.assert_close(data.train.x.mean(0), torch.zeros(shape), atol=1e-5, rtol=0)
    assert data.test.x.mean(0).abs().max() > 1e-3  # test data is scaled with training statistics


def test_split_is_seeded():
    a, b, c = (load_dataset("digits", split_seed=s) for s in (0, 0, 1))
    assert torch.equal(a.test.x, b.test.x) and not torch.equal(a.test.x, c.test.x)


@pytest.mark.skipif(not (SYSTEM_DATA_DIR / "fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed")
def test_debian_fashion_mnist():
    data = load_dataset("fashion-mnist")
    assert data.train.x.shape == (60000, 1, 28, 28) and data.test.x.shape == (10000, 1, 28, 28)
    assert data.train.t.sum(0).tolist() == [6000.0] * 10


def test_train_samples_takes_a_seeded_draw_and_says_so(capsys):
    from beyondbp.cli import main
    from beyondbp.data.options import DataOptions

    options = DataOptions(dataset="digits", train_samples=100)
    first, again = options.load(), options.load()
    assert len(first.train) == 100 and len(first.test) == 360 and torch.equal(first.train.x, again.train.x)
    assert first.source.endswith("(100 of its 1437 training samples)")
    assert main(["train", "--train-samples", "1", "--epochs", "1", "--no-progress"]) == 2
    assert "--train-samples N must be at least 2, got 1" in capsys.readouterr().err
