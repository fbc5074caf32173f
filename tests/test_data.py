"""Dataset loaders: digits, IDX (MNIST / Fashion-MNIST), CIFAR-10 binary batches, user loaders."""

from __future__ import annotations

import gzip
import re
import struct
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from jointcomp.data import NORMALIZATION, list_datasets, load_data
from jointcomp.data.bundle import carve
from jointcomp.data.idx import FASHION_MNIST_ROOT, read_idx
from jointcomp.errors import DataError

FASHION = Path(FASHION_MNIST_ROOT)
HAS_FASHION = (FASHION / "train-images-idx3-ubyte.gz").is_file()


# ----------------------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray, *, gz: bool = True) -> Path:
    """An IDX file of uint8 ``array`` (the MNIST layout)."""
    data = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    data += struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist(root: Path, n_train: int = 40, n_test: int = 12, *, gz: bool = True) -> dict:
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        write_idx(root / (name + (".gz" if gz else "")), arr, gz=gz)
    return arrays


def cifar_records(labels: list[int]) -> bytes:
    """Records whose R plane is 255, G plane 0 and B plane 128 everywhere."""
    pixels = np.concatenate([np.full(1024, 255), np.zeros(1024), np.full(1024, 128)])
    return b"".join(bytes([lab]) + pixels.astype(np.uint8).tobytes() for lab in labels)


def write_cifar(folder: Path, per_batch: int = 4, n_test: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        labels = [(i * per_batch + j) % 10 for j in range(per_batch)]
        (folder / f"data_batch_{i}.bin").write_bytes(cifar_records(labels))
    (folder / "test_batch.bin").write_bytes(cifar_records([9] * n_test))


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_classes_and_split():
    b = load_data("digits")
    assert (b.name, b.input_shape, b.num_classes) == ("digits", (1, 8, 8), 10)
    assert (len(b.train), len(b.val)) == (1617, 180)
    x, y = b.train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (1617, 1, 8, 8)
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    assert set(y.tolist()) == set(range(10))


def test_digits_split_is_deterministic_per_seed():
    a, b, c = load_data("digits", seed=3), load_data("digits", seed=3), load_data("digits", seed=4)
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])
    assert torch.equal(a.train.tensors[1], b.train.tensors[1])
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])


def test_digits_limit_and_fraction():
    b = load_data("digits", val_split=0.25, limit=100)
    assert (len(b.train), len(b.val)) == (100, 449)
    full = load_data("digits", val_split=0.25)
    # limit keeps the first N of the same carved training set; val is untouched.
    assert torch.equal(b.train.tensors[0], full.train.tensors[0][:100])
    assert torch.equal(b.val.tensors[0], full.val.tensors[0])


def test_digits_has_no_test_split():
    with pytest.raises(DataError, match=r"no official test split"):
        load_data("digits", val_split="test")


def test_carve_partitions_indices():
    train, val = carve(101, 0.2, seed=0)
    assert len(val) == 20 and len(train) == 81
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(101))


@pytest.mark.parametrize("val_split", [0, 1, 1.5, -0.1, "val", True, None])
def test_bad_val_split(val_split):
    with pytest.raises(DataError, match=r"val_split"):
        load_data("digits", val_split=val_split)


@pytest.mark.parametrize("limit", [0, -5, 2.5, True])
def test_bad_limit(limit):
    with pytest.raises(DataError, match=r"limit"):
        load_data("digits", limit=limit)


def test_unknown_dataset_lists_builtins():
    assert list_datasets() == ["cifar10", "digits", "fashion-mnist", "mnist"]
    assert set(NORMALIZATION) == set(list_datasets())
    with pytest.raises(
        DataError, match=r"unknown dataset 'imagenet'.*cifar10, digits, fashion-mnist, mnist"
    ):
        load_data("imagenet")


# ----------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.skipif(
    not HAS_FASHION, reason=f"Debian's dataset-fashion-mnist is not installed ({FASHION})"
)
def test_fashion_mnist_reads_the_debian_files():
    b = load_data("fashion-mnist", limit=500)
    assert (b.name, b.input_shape, b.num_classes) == ("fashion-mnist", (1, 28, 28), 10)
    assert (len(b.train), len(b.val)) == (500, 6000)
    t = load_data("fashion_mnist", val_split="test")
    assert (len(t.train), len(t.val)) == (60000, 10000)
    x = t.train.tensors[0]
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    assert torch.bincount(t.val.tensors[1]).tolist() == [1000] * 10


# ----------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_idx_files(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    b = load_data("mnist", root=tmp_path, val_split="test")
    assert (len(b.train), len(b.val), b.input_shape) == (40, 12, (1, 28, 28))
    _, mean, std = NORMALIZATION["mnist"]
    expected = (arrays["train-images-idx3-ubyte"][:, None] / 255.0 - mean[0]) / std[0]
    assert torch.allclose(b.train.tensors[0], torch.from_numpy(expected).float(), atol=1e-5)
    assert b.val.tensors[1].tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert len(load_data("mnist", root=tmp_path, val_split="test", limit=7).train) == 7


def test_mnist_in_torchvision_layout(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    assert len(load_data("mnist", root=tmp_path, val_split=0.25).val) == 10


def test_mnist_needs_a_root():
    with pytest.raises(DataError, match=r"mnist needs data.root"):
        load_data("mnist")


def test_missing_root_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(
        DataError, match=f"{re.escape(str(missing))}.*apt-get install dataset-fashion-mnist"
    ):
        load_data("fashion-mnist", root=missing)


def test_missing_file_names_every_path_tried(tmp_path):
    with pytest.raises(DataError) as err:
        load_data("fashion-mnist", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in msg
    assert str(tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte") in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_missing_test_split_only_when_asked(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    assert len(load_data("mnist", root=tmp_path).train) == 36
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte not found"):
        load_data("mnist", root=tmp_path, val_split="test")


def test_truncated_idx_file(tmp_path):
    path = write_idx(tmp_path / "x.idx", np.zeros((10, 28, 28), np.uint8), gz=False)
    path.write_bytes(path.read_bytes()[: 16 + 5 * 784])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: truncated.*\(10, 28, 28\)"):
        read_idx(path)


def test_truncated_gzip_idx_file(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=f"{re.escape(str(path))}: corrupt or truncated gzip"):
        load_data("mnist", root=tmp_path)


@pytest.mark.parametrize(
    "header", [b"\x01\x00\x08\x03", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00", b"\x00\x00"]
)
def test_bad_magic_or_header(tmp_path, header):
    path = tmp_path / "bad.idx"
    path.write_bytes(header)
    with pytest.raises(DataError, match=f"{re.escape(str(path))}: (bad magic|truncated)"):
        read_idx(path)


def test_idx_trailing_bytes_and_dtypes(tmp_path):
    path = write_idx(tmp_path / "x.idx", np.zeros((2, 3), np.uint8), gz=False)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match=r"trailing bytes"):
        read_idx(path)
    # A big-endian int32 IDX file reads with its declared type and shape.
    path.write_bytes(b"\0\0\x0c\x01" + struct.pack(">I", 2) + struct.pack(">2i", -1, 70000))
    assert read_idx(path).tolist() == [-1, 70000]


def test_idx_count_mismatch(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(39, np.uint8))
    with pytest.raises(DataError, match=r"40 images but .* 39 labels"):
        load_data("mnist", root=tmp_path)


# ----------------------------------------------------------------------------- CIFAR-10


def test_cifar10_binary_batches(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-bin")
    b = load_data("cifar10", root=tmp_path, val_split=0.25)
    assert (b.input_shape, b.num_classes, len(b.train), len(b.val)) == ((3, 32, 32), 10, 15, 5)
    _, mean, std = NORMALIZATION["cifar10"]
    x = b.train.tensors[0][0]
    for c, raw in enumerate((255, 0, 128)):
        assert torch.allclose(x[c], torch.tensor((raw / 255 - mean[c]) / std[c]), atol=1e-5)
    t = load_data("cifar-10", root=tmp_path / "cifar-10-batches-bin", val_split="test")
    assert (len(t.train), len(t.val)) == (20, 3)
    assert t.train.tensors[1].tolist() == [(i * 4 + j) % 10 for i in range(1, 6) for j in range(4)]
    assert t.val.tensors[1].tolist() == [9, 9, 9]


def test_cifar10_errors(tmp_path):
    with pytest.raises(DataError, match=r"cifar10 needs data.root.*cifar-10-binary.tar.gz"):
        load_data("cifar10")
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match=re.escape(f"missing: {tmp_path / 'data_batch_3.bin'}")):
        load_data("cifar10", root=tmp_path)
    (tmp_path / "data_batch_3.bin").write_bytes(cifar_records([1, 2])[:-7])
    with pytest.raises(DataError, match=r"data_batch_3.bin: 6139 bytes is not a whole number"):
        load_data("cifar10", root=tmp_path)
    (tmp_path / "data_batch_3.bin").write_bytes(cifar_records([1, 42]))
    with pytest.raises(DataError, match=r"record 1 has label 42"):
        load_data("cifar10", root=tmp_path)


# ----------------------------------------------------------------------------- user loaders


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "jc_user_data.py").write_text(
        textwrap.dedent("""
        import torch
        from torch.utils.data import Dataset, TensorDataset

        def pair(root=None):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(30, 2, 5, 5, generator=g)
            train = TensorDataset(x[:20], torch.arange(20) % 4)
            val = TensorDataset(x[20:], torch.arange(10) % 6)
            pair.root = root
            return train, val

        def train_only():
            return {"train": TensorDataset(torch.randn(40, 3), torch.arange(40) % 3)}

        class Listy(Dataset):
            def __len__(self):
                return 8
            def __getitem__(self, i):
                return torch.zeros(4), i % 2

        def with_classes(**kwargs):
            return Listy(), Listy(), 5

        def listy():
            return Listy(), Listy()

        def bad():
            return [1, 2, 3, 4]

        def float_labels():
            return TensorDataset(torch.zeros(4, 2), torch.rand(4)), None
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "jc_user_data"


def test_user_loader_needs_trust(user_module):
    with pytest.raises(DataError, match=r"--trust.*trust=True"):
        load_data(f"{user_module}:pair", trust=False)


def test_user_loader_infers_shape_and_classes(user_module, tmp_path):
    import jc_user_data

    b = load_data(f"{user_module}:pair", root=tmp_path, limit=5)
    assert (b.input_shape, b.num_classes, len(b.train), len(b.val)) == ((2, 5, 5), 6, 5, 10)
    assert jc_user_data.pair.root == str(tmp_path)
    c = load_data(f"{user_module}:train_only", val_split=0.25)
    assert (c.input_shape, c.num_classes, len(c.train), len(c.val)) == ((3,), 3, 30, 10)
    assert load_data(f"{user_module}:with_classes").num_classes == 5
    assert load_data(f"{user_module}:listy").num_classes == 2


@pytest.mark.parametrize(
    ("fn", "pattern"),
    [
        ("bad", "returned list"),
        ("float_labels", "not a non-negative integer"),
        ("missing_fn", "has no attribute 'missing_fn'"),
    ],
)
def test_user_loader_errors(user_module, fn, pattern):
    with pytest.raises(DataError, match=pattern):
        load_data(f"{user_module}:{fn}")


def test_user_loader_without_val_cannot_use_test(user_module):
    with pytest.raises(DataError, match=r"no val split"):
        load_data(f"{user_module}:train_only", val_split="test")


def test_datasets_are_tensor_datasets():
    b = load_data("digits", limit=10)
    assert isinstance(b.train, TensorDataset) and isinstance(b.val, TensorDataset)
