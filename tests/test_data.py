"""Dataset loaders in three roles — train, val (carved from the training data) and test (the
official split or a held-out fraction), never sharing a sample: digits, IDX (MNIST /
Fashion-MNIST), CIFAR-10 binary batches, user loaders."""

from __future__ import annotations

import gzip
import re
import struct
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from jointcomp.data import NORMALIZATION, DataBundle, list_datasets, load_data
from jointcomp.data.bundle import carve, normalize
from jointcomp.data.idx import FASHION_MNIST_ROOT, read_idx
from jointcomp.errors import DataError

from .conftest import needs_fashion

FASHION = Path(FASHION_MNIST_ROOT)


# ----------------------------------------------------------------------------- helpers


def samples(ds: Dataset) -> Counter:
    """Every sample of ``ds`` (input and label bytes), counted: a multiset to compare splits
    with (digits holds a few identical images)."""
    out: Counter = Counter()
    for i in range(len(ds)):  # type: ignore[arg-type]
        x, y = ds[i][:2]
        out[(torch.as_tensor(x).numpy().tobytes(), int(y))] += 1
    return out


def assert_partition(bundle: DataBundle, *parts: Dataset) -> None:
    """train, val and test of ``bundle`` share no sample, and together they are ``parts``'
    samples, each once."""
    train, val, test = (samples(d) for d in (bundle.train, bundle.val, bundle.test))
    assert not (set(train) & set(val)) and not (set(train) & set(test))
    assert not (set(val) & set(test))
    assert train + val + test == sum((samples(p) for p in parts), Counter())


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


def all_digits() -> TensorDataset:
    """Every digits sample, normalized as the loader does."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    scale, mean, std = NORMALIZATION["digits"]
    images = normalize(x.reshape(-1, 1, 8, 8), scale, mean, std)
    return TensorDataset(images, torch.from_numpy(y.astype(np.int64)))


def test_digits_shapes_classes_and_three_disjoint_splits():
    b = load_data("digits", test_split=0.2)
    assert (b.name, b.input_shape, b.num_classes) == ("digits", (1, 8, 8), 10)
    # 1797 samples: 359 held out for the test split, 10% of the other 1438 for validation
    assert (len(b.train), len(b.val), len(b.test)) == (1294, 144, 359)
    x, y = b.train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (1294, 1, 8, 8)
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    for split in (b.train, b.val, b.test):
        assert set(split.tensors[1].tolist()) == set(range(10))
    assert_partition(b, all_digits())


def test_digits_needs_a_test_split():
    with pytest.raises(DataError, match=r"digits has no official test split: set data.test_split"):
        load_data("digits")


@pytest.mark.parametrize("value", ["test", "TEST ", " test"])
def test_val_split_test_is_refused_saying_why(value):
    """Choosing on the test split would leak the figure the audit reports."""
    why = r"val_split: test would make every choice .* on the test set the audit reports"
    with pytest.raises(DataError, match=why):
        load_data("digits", val_split=value, test_split=0.2)
    with pytest.raises(DataError, match=why):  # before any file is read
        load_data("fashion-mnist", root="/nonexistent", val_split=value)


def test_digits_carves_are_reproducible_per_seed():
    a, b = load_data("digits", seed=3, test_split=0.2), load_data("digits", seed=3, test_split=0.2)
    for role in ("train", "val", "test"):
        for x, y in zip(getattr(a, role).tensors, getattr(b, role).tensors, strict=True):
            assert torch.equal(x, y), role
    c = load_data("digits", seed=4, test_split=0.2)
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    # the reported figures stay on the same held-out samples whatever the seed
    assert torch.equal(a.test.tensors[0], c.test.tensors[0])
    assert_partition(c, all_digits())


def test_limit_applies_to_train_only():
    full = load_data("digits", val_split=0.25, test_split=0.2)
    b = load_data("digits", val_split=0.25, limit=100, test_split=0.2)
    assert (len(b.train), len(b.val), len(b.test)) == (100, 360, 359)
    # limit keeps the first N of the same carved training set; val and test are untouched
    assert torch.equal(b.train.tensors[0], full.train.tensors[0][:100])
    for role in ("val", "test"):
        assert torch.equal(getattr(b, role).tensors[0], getattr(full, role).tensors[0]), role
        assert torch.equal(getattr(b, role).tensors[1], getattr(full, role).tensors[1]), role


@pytest.mark.parametrize("test_split", [0, 1, 1.5, -0.1, "test", True])
def test_bad_test_split(test_split):
    with pytest.raises(DataError, match=r"test_split"):
        load_data("digits", test_split=test_split)


def test_carve_partitions_indices():
    train, val = carve(101, 0.2, seed=0)
    assert len(val) == 20 and len(train) == 81
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(101))


@pytest.mark.parametrize("val_split", [0, 1, 1.5, -0.1, "val", True, None])
def test_bad_val_split(val_split):
    with pytest.raises(DataError, match=r"val_split"):
        load_data("digits", val_split=val_split, test_split=0.2)


@pytest.mark.parametrize("limit", [0, -5, 2.5, True])
def test_bad_limit(limit):
    with pytest.raises(DataError, match=r"limit"):
        load_data("digits", limit=limit, test_split=0.2)


def test_unknown_dataset_lists_builtins():
    builtins = ["cifar10", "digits", "fashion-mnist", "image-folder", "mnist", "text", "wordnet"]
    assert list_datasets() == builtins
    # fixed statistics: the image sets (an image folder's are given or computed per folder)
    assert set(NORMALIZATION) == {"cifar10", "digits", "fashion-mnist", "mnist"}
    with pytest.raises(DataError, match=r"unknown dataset 'imagenet'.*" + ", ".join(builtins)):
        load_data("imagenet")


# ----------------------------------------------------------------------------- Fashion-MNIST


@needs_fashion
def test_fashion_mnist_reads_the_debian_files():
    b = load_data("fashion_mnist", limit=500)
    assert (b.name, b.input_shape, b.num_classes) == ("fashion-mnist", (1, 28, 28), 10)
    # val: 10% carved from the 60,000 training images; test: the official 10,000
    assert (len(b.train), len(b.val), len(b.test)) == (500, 6000, 10000)
    x = b.val.tensors[0]
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02
    assert torch.bincount(b.test.tensors[1]).tolist() == [1000] * 10
    t10k = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    assert b.test.tensors[1].tolist() == t10k.tolist()


# ----------------------------------------------------------------------------- IDX files


def as_normalized(arrays: dict, split: str, dataset: str = "mnist") -> TensorDataset:
    """The raw ``split`` ("train" or "t10k") of :func:`write_mnist`, normalized."""
    scale, mean, std = NORMALIZATION[dataset]
    images = arrays[f"{split}-images-idx3-ubyte"][:, None]
    labels = arrays[f"{split}-labels-idx1-ubyte"].astype(np.int64)
    return TensorDataset(normalize(images, scale, mean, std), torch.from_numpy(labels))


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_idx_files(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    b = load_data("mnist", root=tmp_path, val_split=0.25)
    assert (len(b.train), len(b.val), len(b.test), b.input_shape) == (30, 10, 12, (1, 28, 28))
    _, mean, std = NORMALIZATION["mnist"]
    expected = (arrays["t10k-images-idx3-ubyte"][:, None] / 255.0 - mean[0]) / std[0]
    assert torch.allclose(b.test.tensors[0], torch.from_numpy(expected).float(), atol=1e-5)
    assert b.test.tensors[1].tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    # train and val partition the training files; the test split is the t10k files, as written
    train, val, test = samples(b.train), samples(b.val), samples(b.test)
    assert train + val == samples(as_normalized(arrays, "train")) and not set(train) & set(val)
    assert test == samples(as_normalized(arrays, "t10k"))
    assert len(load_data("mnist", root=tmp_path, limit=7).train) == 7


def test_test_split_holds_out_a_fraction_instead_of_the_official_one(tmp_path):
    arrays = write_mnist(tmp_path)
    b = load_data("mnist", root=tmp_path, val_split=0.25, test_split=0.25)
    assert (len(b.train), len(b.val), len(b.test)) == (22, 8, 10)
    assert_partition(b, as_normalized(arrays, "train"))


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


def test_missing_test_files_are_needed_unless_a_test_split_is_held_out(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte not found"):
        load_data("mnist", root=tmp_path)
    b = load_data("mnist", root=tmp_path, test_split=0.25)
    assert (len(b.train), len(b.val), len(b.test)) == (27, 3, 10)


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
    assert (b.input_shape, b.num_classes) == ((3, 32, 32), 10)
    assert (len(b.train), len(b.val), len(b.test)) == (15, 5, 3)
    _, mean, std = NORMALIZATION["cifar10"]
    x = b.train.tensors[0][0]
    for c, raw in enumerate((255, 0, 128)):
        assert torch.allclose(x[c], torch.tensor((raw / 255 - mean[c]) / std[c]), atol=1e-5)
    # train and val partition the five training batches; the test split is test_batch.bin
    labels = sorted(b.train.tensors[1].tolist() + b.val.tensors[1].tolist())
    assert labels == sorted((i * 4 + j) % 10 for i in range(1, 6) for j in range(4))
    assert b.test.tensors[1].tolist() == [9, 9, 9]
    # test_split holds out a fraction of the training batches instead (test_batch.bin unread)
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").unlink()
    t = load_data("cifar-10", root=tmp_path / "cifar-10-batches-bin", test_split=0.25)
    assert (len(t.train), len(t.val), len(t.test)) == (13, 2, 5)
    held = torch.cat([t.train.tensors[1], t.val.tensors[1], t.test.tensors[1]])
    assert sorted(held.tolist()) == labels


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

        g = torch.Generator().manual_seed(0)
        X = torch.randn(60, 2, 5, 5, generator=g)
        TRAIN = TensorDataset(X[:20], torch.arange(20) % 4)
        VAL = TensorDataset(X[20:30], torch.arange(10) % 4)
        TEST = TensorDataset(X[30:40], torch.arange(10) % 6)

        def pair(root=None):
            pair.root = root
            return TRAIN, TEST

        def three(seed):
            three.seed = seed
            return {"train": TRAIN, "val": VAL, "test": TEST}

        def train_only():
            return {"train": TensorDataset(X[:40].reshape(40, -1), torch.arange(40) % 3)}

        def no_test():
            return TRAIN, None

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
            ds = TensorDataset(torch.zeros(4, 2), torch.rand(4))
            return ds, ds

        def empty_test():
            return TRAIN, TensorDataset(X[:0], torch.arange(0))

        def empty_val():
            return {"train": TRAIN, "val": TensorDataset(X[:0], torch.arange(0)), "test": TEST}
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "jc_user_data"


def test_user_loader_needs_trust(user_module):
    with pytest.raises(DataError, match=r"--trust.*trust=True"):
        load_data(f"{user_module}:pair", trust=False)


def test_user_loader_infers_shape_and_classes(user_module, tmp_path):
    import jc_user_data

    b = load_data(f"{user_module}:pair", root=tmp_path, val_split=0.25, limit=5)
    # classes over every split: the test labels reach 5
    assert (b.input_shape, b.num_classes, len(b.train), len(b.val)) == ((2, 5, 5), 6, 5, 5)
    assert jc_user_data.pair.root == str(tmp_path)
    assert load_data(f"{user_module}:with_classes").num_classes == 5
    assert load_data(f"{user_module}:listy").num_classes == 2


def test_user_loaders_test_split_is_used_as_given_and_val_carved_from_train(user_module):
    import jc_user_data

    b = load_data(f"{user_module}:pair", val_split=0.25, seed=1)
    assert b.test is jc_user_data.TEST  # the loader's own: never carved, never limited
    assert (len(b.train), len(b.val)) == (15, 5)
    assert_partition(b, jc_user_data.TRAIN, jc_user_data.TEST)
    again = load_data(f"{user_module}:pair", val_split=0.25, seed=1)
    assert (again.train.indices, again.val.indices) == (b.train.indices, b.val.indices)
    other = load_data(f"{user_module}:pair", val_split=0.25, seed=2)
    assert other.val.indices != b.val.indices


def test_user_loaders_own_val_and_test_are_used_as_given(user_module):
    import jc_user_data

    b = load_data(f"{user_module}:three", val_split=0.5, seed=7, limit=12)
    assert jc_user_data.three.seed == 7
    assert b.val is jc_user_data.VAL and b.test is jc_user_data.TEST  # val_split unused
    assert len(b.train) == 12 and [int(b.train[i][1]) for i in range(12)] == [
        i % 4 for i in range(12)
    ]  # limit: the first 12 training samples, in order
    whole = load_data(f"{user_module}:three")
    assert_partition(whole, jc_user_data.TRAIN, jc_user_data.VAL, jc_user_data.TEST)


def test_user_loader_without_test_holds_one_out_only_when_asked(user_module):
    import jc_user_data

    for fn in ("train_only", "no_test"):
        with pytest.raises(DataError, match=r"returned no test split.*data.test_split"):
            load_data(f"{user_module}:{fn}")
    b = load_data(f"{user_module}:train_only", val_split=0.25, test_split=0.25, limit=20)
    assert (b.input_shape, b.num_classes, len(b.train), len(b.val), len(b.test)) == (
        (50,),
        3,
        20,
        8,
        10,
    )
    full = load_data(f"{user_module}:train_only", val_split=0.25, test_split=0.25)
    assert len(full.train) == 22
    assert all(torch.equal(b.train[i][0], full.train[i][0]) for i in range(20))
    assert_partition(full, jc_user_data.train_only()["train"])
    same = load_data(f"{user_module}:train_only", val_split=0.25, test_split=0.25)
    assert samples(same.test) == samples(full.test)  # the carves are seeded


@pytest.mark.parametrize(
    ("fn", "pattern"),
    [
        ("bad", "returned list"),
        ("float_labels", "not a non-negative integer"),
        ("missing_fn", "has no attribute 'missing_fn'"),
        # nothing to report on (the audit would fail after the whole run) or to choose on
        ("empty_test", "returned an empty test set"),
        ("empty_val", "returned an empty val set"),
    ],
)
def test_user_loader_errors(user_module, fn, pattern):
    with pytest.raises(DataError, match=pattern):
        load_data(f"{user_module}:{fn}")


def test_user_loader_val_split_test_is_refused(user_module):
    with pytest.raises(DataError, match=r"val_split: test would make every choice"):
        load_data(f"{user_module}:three", val_split="test")


def test_datasets_are_tensor_datasets():
    b = load_data("digits", limit=10, test_split=0.2)
    assert all(isinstance(d, TensorDataset) for d in (b.train, b.val, b.test))
