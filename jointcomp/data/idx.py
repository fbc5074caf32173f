"""IDX files (the MNIST format) and the MNIST / Fashion-MNIST loaders built on them.

Files may be gzipped or not (detected from the bytes, not the name). The whole file is read
into memory and viewed with ``np.frombuffer``: 60k Fashion-MNIST images load in well under a
second, and nothing is cached on disk.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .bundle import DataBundle, array_bundle

# IDX type byte → big-endian numpy dtype (the format is big-endian throughout).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"

# Standard per-dataset statistics of x / 255 over the 60k training images.
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)

_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_DATASETS = {
    # name: (torchvision's folder name, mean, std, how to get the files)
    "mnist": (
        "MNIST",
        MNIST_MEAN,
        MNIST_STD,
        "download the four MNIST IDX files (train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) "
        "into one folder and pass it as data.root",
    ),
    "fashion-mnist": (
        "FashionMNIST",
        FASHION_MNIST_MEAN,
        FASHION_MNIST_STD,
        "install Debian's package (apt-get install dataset-fashion-mnist), which puts them in "
        f"{FASHION_MNIST_ROOT}, or pass data.root: a folder with the four Fashion-MNIST IDX files",
    ),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a read-only array of its declared shape.

    Raises DataError naming the file for a bad magic number, a truncated header, or a data
    size that does not match the header's dimensions.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e.strerror or e}") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"IDX file {path}: corrupt or truncated gzip data ({e})") from e
    if len(raw) < 4:
        raise DataError(f"IDX file {path}: truncated: {len(raw)} bytes, shorter than the header")
    dtype = _IDX_DTYPES.get(raw[2])
    if raw[:2] != b"\0\0" or dtype is None or raw[3] == 0:
        raise DataError(
            f"IDX file {path}: bad magic number 0x{raw[:4].hex()} (expected 0x0000TTNN: "
            "two zero bytes, a type byte 08/09/0B/0C/0D/0E and the number of dimensions)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path}: truncated header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = math.prod(dims)
    expected = count * dtype.itemsize
    if len(raw) - header != expected:
        problem = "truncated" if len(raw) - header < expected else "trailing bytes"
        raise DataError(
            f"IDX file {path}: {problem}: header declares shape {dims} ({expected} data bytes) "
            f"but the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)


def _find(name: str, dirs: list[Path], hint: str, dataset: str) -> Path:
    """The first existing file among ``name`` variants in ``dirs``, else a DataError listing
    every path tried."""
    # "train-images.idx3-ubyte" is how some mirrors name the extracted files.
    variants = [name + ".gz", name, name.replace("-idx", ".idx", 1)]
    tried = [d / v for d in dirs for v in variants]
    for p in tried:
        if p.is_file():
            return p
    raise DataError(
        f"{dataset}: {name} not found; looked for {', '.join(map(str, tried))}. To get it: {hint}"
    )


def read_idx_split(
    dataset: str, root: Path, split: str, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 1, H, W]`` uint8 and labels ``[N]`` of one split, checked for consistency."""
    tv_folder, _, _, hint = _DATASETS[dataset]
    dirs = [root, root / tv_folder / "raw"]  # also accept torchvision's download layout
    img_name, lbl_name = _SPLIT_FILES[split]
    img_path = _find(img_name, dirs, hint, dataset)
    lbl_path = _find(lbl_name, dirs, hint, dataset)
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"IDX file {img_path}: expected uint8 images [N, H, W], got "
            f"{images.dtype} with shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"IDX file {lbl_path}: expected uint8 labels [N], got "
            f"{labels.dtype} with shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{dataset}: {img_path} has {len(images)} images but {lbl_path} has "
            f"{len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(
            f"IDX file {lbl_path}: label {int(labels.max())} is out of range for "
            f"{num_classes} classes"
        )
    return images[:, None], labels


def load_idx_bundle(
    dataset: str,
    root: str | Path | None,
    val_split: float,
    seed: int,
    limit: int | None,
    test_split: float | None = None,
) -> DataBundle:
    """MNIST or Fashion-MNIST as ``(1, 28, 28)`` images, 10 classes, normalized with the
    dataset's standard mean/std. Fashion-MNIST defaults to Debian's package folder."""
    _, mean, std, hint = _DATASETS[dataset]
    if root is None:
        if dataset != "fashion-mnist":
            raise DataError(f"{dataset} needs data.root (no default location); {hint}")
        root = FASHION_MNIST_ROOT
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{dataset}: data root {root} is not a directory; {hint}")
    x, y = read_idx_split(dataset, root, "train")
    return array_bundle(
        dataset,
        x,
        y,
        scale=255.0,
        mean=mean,
        std=std,
        num_classes=10,
        val_split=val_split,
        seed=seed,
        limit=limit,
        load_test=lambda: read_idx_split(dataset, root, "test"),
        test_split=test_split,
    )
