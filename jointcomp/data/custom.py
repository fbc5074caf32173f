"""A user's own data: ``package.module:callable`` returning the splits (needs trust).

The callable is called with ``root`` and/or ``seed`` if its signature names them (or takes
``**kwargs``), and may return:

- a dict with ``train`` and optionally ``val``, ``test``, ``num_classes`` and
  ``input_shape``;
- ``(train, test)`` or ``(train, test, num_classes)``: ``torch.utils.data.Dataset`` objects,
  ``test`` the held-out split the reported figures are measured on (or None).

A split the loader does not give is carved with a seeded permutation: ``test`` (with
``test_split``) from ``train`` first, then ``val`` (``val_split``) from what is left; a loader's
own ``val`` makes ``val_split`` unused. Samples must be ``(x, label)`` pairs with tensor (or
array) ``x`` and integer labels. The input shape comes from the first training sample; the
number of classes, unless given, is ``max(label) + 1`` over every split. ``limit`` keeps the
first N training samples. Inferring the classes reads every label (every sample, for datasets
that are neither TensorDataset nor have ``.targets``): return ``num_classes`` to skip that.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from ..errors import DataError
from ..models.resolve import import_callable
from .bundle import TEST_SEED, DataBundle, carve, check_split_args


def _call_loader(fn: Any, root: str | None, seed: int) -> Any:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    offered = {"root": root, "seed": seed}
    return fn(**{k: v for k, v in offered.items() if takes_any or k in params})


KEYS = ("train", "val", "test", "num_classes", "input_shape")


def _unpack(spec: str, result: Any) -> dict[str, Any]:
    """The loader's return value as a dict of ``KEYS`` (missing ones None)."""
    if isinstance(result, dict):
        unknown = set(result) - set(KEYS)
        if "train" not in result or unknown:
            raise DataError(
                f"dataset loader {spec!r} returned a dict with keys {sorted(result)}; expected "
                "'train' and optionally 'val', 'test', 'num_classes', 'input_shape'"
            )
        return {k: result.get(k) for k in KEYS}
    if isinstance(result, (tuple, list)) and len(result) in (2, 3):
        classes = result[2] if len(result) == 3 else None
        return {"train": result[0], "val": None, "test": result[1], "num_classes": classes,
                "input_shape": None}  # fmt: skip
    raise DataError(
        f"dataset loader {spec!r} returned {type(result).__name__}; expected (train, test), "
        "(train, test, num_classes) or a dict with 'train', 'val', 'test', 'num_classes'"
    )


def _labels(ds: Dataset) -> Iterable[Any]:
    """All labels of ``ds``, without loading inputs where the dataset allows it."""
    if isinstance(ds, TensorDataset):
        return ds.tensors[-1].reshape(-1).tolist()
    if isinstance(ds, Subset):
        inner = _labels(ds.dataset)
        inner = inner if isinstance(inner, list) else list(inner)
        return [inner[i] for i in ds.indices]
    targets = getattr(ds, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets).reshape(-1).tolist()
    return (ds[i][1] for i in range(len(ds)))  # type: ignore[arg-type]


def _num_classes(spec: str, datasets: list[Dataset]) -> int:
    top = -1
    for ds in datasets:
        for label in _labels(ds):
            value = label.item() if isinstance(label, (torch.Tensor, np.ndarray)) else label
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise DataError(
                    f"dataset loader {spec!r}: label {label!r} is not a non-negative integer; "
                    "return num_classes explicitly, or integer class labels"
                )
            top = max(top, int(value))
    return top + 1


def load_custom_bundle(
    spec: str,
    root: str | None,
    val_split: float,
    seed: int,
    limit: int | None,
    trust: bool,
    test_split: float | None = None,
) -> DataBundle:
    """Run a user's loader (only when ``trust``) and shape its result into a DataBundle."""
    if not trust:
        raise DataError(
            f"dataset {spec!r} is not a built-in dataset and would import and run your code; "
            "trust it with --trust on the command line or trust=True in Python"
        )
    val_split = check_split_args(val_split, limit, test_split)
    fn = import_callable(spec, DataError, "dataset loader")
    parts = _unpack(spec, _call_loader(fn, root, seed))
    train, val, test = parts["train"], parts["val"], parts["test"]
    for part, ds in (("train", train), ("val", val), ("test", test)):
        if ds is not None and not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
            raise DataError(
                f"dataset loader {spec!r}: {part} is {type(ds).__name__}, not a Dataset"
            )
    for part, ds in (("training", train), ("val", val), ("test", test)):
        if ds is not None and len(ds) == 0:  # nothing to train, choose or report on
            raise DataError(f"dataset loader {spec!r} returned an empty {part} set")
    if test is not None and test_split is not None:
        raise DataError(
            f"dataset loader {spec!r} returned its own test split; test_split is for loaders "
            "without one: remove it"
        )
    if test is None:
        if test_split is None:
            raise DataError(
                f"dataset loader {spec!r} returned no test split: return one ('test') or set "
                "data.test_split to hold out a fraction of the training data"
            )
        rest, test_idx = carve(len(train), test_split, TEST_SEED)
        train, test = Subset(train, rest.tolist()), Subset(train, test_idx.tolist())
    if val is None:
        train_idx, val_idx = carve(len(train), val_split, seed)
        train, val = Subset(train, train_idx.tolist()), Subset(train, val_idx.tolist())
    input_shape = parts["input_shape"]
    if input_shape is None:
        sample = train[0]
        if not isinstance(sample, (tuple, list)) or len(sample) < 2:
            raise DataError(f"dataset loader {spec!r}: samples must be (x, label) pairs")
        input_shape = tuple(torch.as_tensor(sample[0]).shape)
    num_classes = parts["num_classes"]
    if num_classes is None:  # before the limit, so that a short run still sees every class
        num_classes = _num_classes(spec, [train, val, test])
    if limit is not None and limit < len(train):
        train = Subset(train, range(limit))
    if not isinstance(num_classes, int) or num_classes < 1:
        raise DataError(
            f"dataset loader {spec!r}: num_classes must be a positive int, got {num_classes!r}"
        )
    shape = tuple(int(s) for s in input_shape)
    return DataBundle(spec, train, val, test, shape, num_classes)
