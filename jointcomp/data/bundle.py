"""The DataBundle the pipeline trains on, and the split/limit/normalize steps all loaders share."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ..errors import DataError


@dataclass
class DataBundle:
    """A dataset ready for training: train/val splits plus what a model builder needs."""

    name: str
    train: Dataset
    val: Dataset
    input_shape: tuple[int, ...]  # per sample, e.g. (1, 28, 28)
    num_classes: int


def check_split_args(val_split: float | str, limit: int | None) -> float | str:
    """Check ``val_split`` (a fraction in (0, 1) or ``"test"``) and ``limit``; return the split."""
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit <= 0
    ):
        raise DataError(f"limit must be a positive int or None, got {limit!r}")
    if isinstance(val_split, str):
        if val_split.strip().lower() != "test":
            raise DataError(f"val_split must be a fraction in (0, 1) or 'test', got {val_split!r}")
        return "test"
    if isinstance(val_split, bool) or not isinstance(val_split, numbers.Real):
        raise DataError(f"val_split must be a fraction in (0, 1) or 'test', got {val_split!r}")
    if not 0.0 < float(val_split) < 1.0:
        raise DataError(f"val_split must be a fraction in (0, 1) or 'test', got {val_split!r}")
    return float(val_split)


def carve(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (train, val) index arrays with a permutation seeded by ``seed``.

    The train indices stay in permuted order, so "the first N" (``limit``) is a random subset.
    """
    if n < 2:
        raise DataError(f"cannot carve a validation split from {n} sample(s)")
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
    val_split: float | str,
    seed: int,
    limit: int | None,
    load_test: Callable[[], tuple[np.ndarray, np.ndarray]] | None,
) -> DataBundle:
    """Build a bundle from raw ``[N, C, H, W]`` arrays of the training set.

    A fraction carves val from train; ``"test"`` calls ``load_test`` (read only when asked) and
    keeps train in file order. ``limit`` then keeps the first ``limit`` training samples.
    """
    val_split = check_split_args(val_split, limit)
    if val_split == "test":
        if load_test is None:
            raise DataError(
                f"{name} has no official test split; use a fraction such as val_split: 0.2"
            )
        vx, vy = load_test()
        tx, ty = (x, y) if limit is None else (x[:limit], y[:limit])
    else:
        train_idx, val_idx = carve(len(x), float(val_split), seed)
        if limit is not None:
            train_idx = train_idx[:limit]
        tx, ty, vx, vy = x[train_idx], y[train_idx], x[val_idx], y[val_idx]

    def as_dataset(xs: np.ndarray, ys: np.ndarray) -> TensorDataset:
        return TensorDataset(normalize(xs, scale, mean, std), torch.from_numpy(ys.astype(np.int64)))

    return DataBundle(name, as_dataset(tx, ty), as_dataset(vx, vy), tuple(x.shape[1:]), num_classes)
