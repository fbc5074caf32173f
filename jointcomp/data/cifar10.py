"""CIFAR-10 from the *binary* version's batches (``data_batch_1.bin`` … ``test_batch.bin``).

Each record is 3,073 bytes: one label byte, then 3,072 pixel bytes (R, G, B planes of 32×32).
The python version's batches are pickles and are deliberately not read: unpickling runs code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .bundle import DataBundle, array_bundle

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
SUBDIR = "cifar-10-batches-bin"  # what cifar-10-binary.tar.gz extracts to

# Per-channel mean and std of x / 255 over the 50k training images.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

HINT = (
    "download the CIFAR-10 binary version (cifar-10-binary.tar.gz), extract it and pass the "
    f"folder (or the {SUBDIR} folder inside it) as data.root"
)


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch → images ``[N, 3, 32, 32]`` uint8 and labels ``[N]`` uint8."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {e.strerror or e}") from e
    if not raw or len(raw) % RECORD:
        raise DataError(
            f"CIFAR-10 batch {path}: {len(raw)} bytes is not a whole number of {RECORD}-byte "
            "records (truncated, or not the binary version)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0]
    if int(labels.max()) > 9:
        bad = int(np.argmax(labels > 9))
        raise DataError(
            f"CIFAR-10 batch {path}: record {bad} has label {int(labels[bad])}, not 0–9 "
            "(a CIFAR-100 file, or corrupt)"
        )
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _batch_dir(root: Path) -> Path:
    for d in (root, root / SUBDIR):
        if all((d / f).is_file() for f in TRAIN_FILES):
            return d
    missing = [
        str(d / f) for d in (root, root / SUBDIR) for f in TRAIN_FILES if not (d / f).is_file()
    ]
    raise DataError(
        f"cifar10: the five training batches are not all in {root} nor in {root / SUBDIR}; "
        f"missing: {', '.join(missing)}. To get them: {HINT}"
    )


def _read_test(d: Path) -> tuple[np.ndarray, np.ndarray]:
    path = d / TEST_FILE
    if not path.is_file():
        raise DataError(f"cifar10: {path} not found (the test split). {HINT}")
    return read_batch(path)


def load_cifar10_bundle(
    root: str | Path | None,
    val_split: float,
    seed: int,
    limit: int | None,
    test_split: float | None = None,
) -> DataBundle:
    """CIFAR-10 as ``(3, 32, 32)`` images, 10 classes, per-channel normalized."""
    if root is None:
        raise DataError(f"cifar10 needs data.root (no default location); {HINT}")
    d = _batch_dir(Path(root).expanduser())
    batches = [read_batch(d / f) for f in TRAIN_FILES]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    return array_bundle(
        "cifar10",
        x,
        y,
        scale=255.0,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        num_classes=10,
        val_split=val_split,
        seed=seed,
        limit=limit,
        load_test=None if test_split is not None else lambda: _read_test(d),
        test_split=test_split,
    )
