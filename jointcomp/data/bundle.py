"""The DataBundle the pipeline trains on, and the split/limit/normalize steps all loaders share."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ..errors import DataError


@dataclass
class DataBundle:
    """A dataset in its three roles: ``train`` (what models train on), ``val`` (carved from the
    training data: every choice a stage makes is judged on it) and ``test`` (held out: only the
    audit's reported figures are measured on it), plus what a model builder needs.

    ``num_classes`` is None for unlabeled data (tokenized text, a flat image folder): its
    samples are model inputs alone. ``info`` says how the samples were made where a loader
    computed it (an image folder's class names and mean/std, the tokenizer of text), for
    reports and for preparing new inputs the same way."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    input_shape: tuple[int, ...]  # per sample, e.g. (1, 28, 28); text: (max_length,)
    num_classes: int | None  # None: unlabeled
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def labeled(self) -> bool:
        return self.num_classes is not None


# the test carve's own seed, fixed: whatever data.seed a run or a sweep uses, its figures are
# measured on the same held-out samples
TEST_SEED = 1
TEST_SELECTION = (
    "val_split: test would make every choice (sensitivities, calibration, budgets) on the "
    "test set the audit reports; carve a validation split from the training data instead "
    "(e.g. val_split: 0.1): the audit always reports the test split"
)


def _fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"{name} must be a fraction in (0, 1), got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise DataError(f"{name} must be a fraction in (0, 1), got {value!r}")
    return float(value)


def check_split_args(val_split: float, limit: int | None, test_split: float | None = None) -> float:
    """Check ``val_split`` (a fraction in (0, 1) of the training data), ``test_split`` (None,
    or the fraction carved for datasets without a test split) and ``limit``; return the
    validation fraction. ``"test"`` is refused: choosing on the test set leaks it."""
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit <= 0
    ):
        raise DataError(f"limit must be a positive int or None, got {limit!r}")
    if isinstance(val_split, str) and val_split.strip().lower() == "test":
        raise DataError(TEST_SELECTION)
    if test_split is not None:
        _fraction("test_split", test_split)
    return _fraction("val_split", val_split)


def carve(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (kept, carved) index arrays with a permutation seeded by
    ``seed``; ``fraction`` of them are carved.

    The kept indices stay in permuted order, so "the first N" (``limit``) is a random subset.
    """
    if n < 2:
        raise DataError(f"cannot carve a split from {n} sample(s): too few")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, round(n * fraction)), n - 1)
    return perm[n_val:], perm[:n_val]


def normalize(
    x: np.ndarray, scale: float, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """``(x / scale - mean) / std`` as float32, per channel (axis 1 of ``[N, C, H, W]``)."""
    out = x.astype(np.float32)
    shape = (1, len(mean), 1, 1)
    out *= np.float32(1.0 / scale)
    out -= np.asarray(mean, dtype=np.float32).reshape(shape)
    out /= np.asarray(std, dtype=np.float32).reshape(shape)
    return torch.from_numpy(out)


def array_bundle(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    scale: float,
    mean: Sequence[float],
    std: Sequence[float],
    num_classes: int,
    val_split: float,
    seed: int,
    limit: int | None,
    load_test: Callable[[], tuple[np.ndarray, np.ndarray]] | None,
    test_split: float | None = None,
) -> DataBundle:
    """Build a bundle from raw ``[N, C, H, W]`` arrays of the training set.

    The test split is the dataset's own (``load_test``) or, with ``test_split``, a seeded
    fraction carved from the arrays first; then ``val_split`` of what is left is carved for
    validation, and ``limit`` keeps the first ``limit`` training samples of the rest.
    """
    val_split = check_split_args(val_split, limit, test_split)
    if test_split is not None:  # instead of the official split, which is then never read
        rest, test_idx = carve(len(x), test_split, TEST_SEED)
        sx, sy = x[test_idx], y[test_idx]
        x, y = x[rest], y[rest]
    elif load_test is None:
        raise DataError(
            f"{name} has no official test split: set data.test_split (e.g. 0.2) to hold out a "
            "fraction of it for the reported figures"
        )
    else:
        sx, sy = load_test()
    train_idx, val_idx = carve(len(x), val_split, seed)
    if limit is not None:
        train_idx = train_idx[:limit]

    def as_dataset(xs: np.ndarray, ys: np.ndarray) -> TensorDataset:
        return TensorDataset(normalize(xs, scale, mean, std), torch.from_numpy(ys.astype(np.int64)))

    return DataBundle(
        name,
        as_dataset(x[train_idx], y[train_idx]),
        as_dataset(x[val_idx], y[val_idx]),
        as_dataset(sx, sy),
        tuple(x.shape[1:]),
        num_classes,
    )
