"""A user's own data: ``package.module:callable`` returning the splits (needs trust).

The callable is called with ``root`` and/or ``seed`` if its signature names them (or takes
``**kwargs``) — and with ``tokenizer``, ``max_length``, ``image_size``, ``mean`` and ``std``
when they are set (a set one it does not take is an error) — and may return:

- a dict with ``train`` and optionally ``val``, ``test``, ``num_classes`` and
  ``input_shape``;
- ``(train, test)`` or ``(train, test, num_classes)``: ``torch.utils.data.Dataset`` objects,
  ``test`` the held-out split the reported figures are measured on (or None).

A split the loader does not give is carved with a seeded permutation: ``test`` (with
``test_split``) from ``train`` first, then ``val`` (``val_split``) from what is left; a loader's
own ``val`` makes ``val_split`` unused. Labeled samples are ``(x, label)`` pairs (``x`` a
tensor or array, or a tuple or dict of them) or dicts with a ``labels`` key, with integer
labels; unlabeled samples are the inputs alone: a tensor or a dict of tensors without
``labels`` (tokenized text: ``input_ids``, ``attention_mask``, ...), or any samples with
``num_classes: 0``. The input shape comes from the first training sample (a dict's
``input_ids``, else its first tensor); the number of classes, unless given, is
``max(label) + 1`` over every split, or None for unlabeled data. ``limit`` keeps the first N
training samples. Inferring the classes reads every label (every sample, for datasets that are
neither TensorDataset nor have ``.targets``): return ``num_classes`` to skip that.
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


def _call_loader(
    spec: str, fn: Any, root: str | None, seed: int, extras: dict[str, Any] | None = None
) -> Any:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    extras = extras or {}
    refused = sorted(k for k in extras if not (takes_any or k in params))
    if refused:
        raise DataError(
            f"dataset loader {spec!r} takes no {', '.join(refused)} argument, but the data sets "
            f"{'it' if len(refused) == 1 else 'them'}: add the parameter or remove the key"
        )
    offered = {"root": root, "seed": seed}
    kwargs = {k: v for k, v in offered.items() if takes_any or k in params}
    return fn(**kwargs, **extras)


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


LABEL_KEYS = ("labels", "label")


def _is_labeled(sample: Any) -> bool:
    if isinstance(sample, (tuple, list)):
        return len(sample) >= 2
    if isinstance(sample, dict):
        return any(k in sample for k in LABEL_KEYS)
    return False


def _label_of(sample: Any) -> Any:
    if isinstance(sample, dict):
        return next(sample[k] for k in LABEL_KEYS if k in sample)
    return sample[1]


def _inputs_shape(spec: str, sample: Any) -> tuple[int, ...]:
    """The shape of one sample's inputs: ``x`` of ``(x, label)``, a dict's ``input_ids`` (else
    its first tensor), or the sample itself."""
    x = sample[0] if isinstance(sample, (tuple, list)) and sample else sample
    if isinstance(x, dict):
        values = [x["input_ids"]] if "input_ids" in x else list(x.values())
        x = next((v for v in values if isinstance(v, (torch.Tensor, np.ndarray))), None)
    elif isinstance(x, (tuple, list)) and x:
        x = x[0]
    if not isinstance(x, (torch.Tensor, np.ndarray, int, float)):
        raise DataError(
            f"dataset loader {spec!r}: samples must be (x, label) pairs, or inputs alone (a "
            f"tensor, or a dict of tensors); the first is {type(sample).__name__}"
        )
    return tuple(torch.as_tensor(x).shape)


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
    return (_label_of(ds[i]) for i in range(len(ds)))  # type: ignore[arg-type]


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
    extras: dict[str, Any] | None = None,
) -> DataBundle:
    """Run a user's loader (only when ``trust``) and shape its result into a DataBundle;
    ``extras`` (``tokenizer``, ``max_length``, ...) are passed to it as keyword arguments."""
    if not trust:
        raise DataError(
            f"dataset {spec!r} is not a built-in dataset and would import and run your code; "
            "trust it with --trust on the command line or trust=True in Python"
        )
    val_split = check_split_args(val_split, limit, test_split)
    fn = import_callable(spec, DataError, "dataset loader")
    parts = _unpack(spec, _call_loader(spec, fn, root, seed, extras))
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
    first = train[0]
    input_shape = parts["input_shape"]
    if input_shape is None:
        input_shape = _inputs_shape(spec, first)
    num_classes = parts["num_classes"]
    if num_classes == 0 and not isinstance(num_classes, bool):
        num_classes = None  # unlabeled, said explicitly
    elif num_classes is None and _is_labeled(first):
        # before the limit, so that a short run still sees every class
        num_classes = _num_classes(spec, [train, val, test])
        if num_classes < 1:
            raise DataError(f"dataset loader {spec!r}: no labels to count classes from")
    elif num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise DataError(
            f"dataset loader {spec!r}: num_classes must be a positive int (0 or None: "
            f"unlabeled), got {num_classes!r}"
        )
    if limit is not None and limit < len(train):
        train = Subset(train, range(limit))
    shape = tuple(int(s) for s in input_shape)
    return DataBundle(spec, train, val, test, shape, num_classes)
