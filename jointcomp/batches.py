"""Plain data in, batches out: what a stage measures on when it calibrates, scores or traces.

A user hands jointcomp whatever they have — a ``torch.utils.data.Dataset`` of samples, a
``DataLoader``, a list of ``(inputs, labels)`` batches, or a list of example input tensors — and
:func:`as_batches` turns it into :class:`Batches`: a fixed set of calibration batches (what a stage
fits or calibrates on) and of validation batches (what it judges its choices on; the calibration
ones unless given), and one example input for tracing.

>>> import torch
>>> data = as_batches([torch.randn(4, 3), torch.randn(4, 3)])
>>> len(data.calibration(8)), tuple(data.example().shape)
(2, (1, 3))
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .errors import DataError

Batch = Any  # inputs, or (inputs, labels); inputs: a tensor, a tuple of them, or a dict
LABEL_KEYS = ("labels", "label")  # keys of a dict batch that hold labels, not model inputs


def inputs_of(batch: Batch) -> Any:
    """The model inputs of a batch: the first item of an ``(inputs, labels)`` tuple/list, a
    dict batch without its ``labels`` (tokenized text: ``input_ids``, ``attention_mask``,
    ...), or the batch itself."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise DataError("an empty batch: expected inputs or (inputs, labels)")
        return batch[0]
    if isinstance(batch, dict):
        return {k: v for k, v in batch.items() if k not in LABEL_KEYS}
    return batch


def labels_of(batch: Batch) -> torch.Tensor | None:
    """The labels of an ``(inputs, labels)`` batch or of a dict batch's ``labels``; None for
    unlabeled batches."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    if isinstance(batch, dict):
        for key in LABEL_KEYS:
            if key in batch:
                return batch[key]
    return None


def to_device(data: Any, device: torch.device | str) -> Any:
    """``data`` with every tensor inside (tuples, lists, dicts, nested) moved to ``device``."""
    if isinstance(data, torch.Tensor):
        return data.to(device)
    if isinstance(data, dict):
        return {k: to_device(v, device) for k, v in data.items()}
    if isinstance(data, (tuple, list)):
        return type(data)(to_device(v, device) for v in data)
    return data


def run_model(model: torch.nn.Module, inputs: Any) -> Any:
    """``model`` on batch inputs: a dict as keyword arguments, a tuple/list as positional
    arguments, anything else as the one argument."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def batch_size_of(inputs: Any) -> int:
    """How many samples batch inputs hold (the first dimension of their first tensor)."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    items = inputs.values() if isinstance(inputs, dict) else inputs
    if isinstance(items, (tuple, list)) or isinstance(inputs, dict):
        for item in items:
            if isinstance(item, torch.Tensor):
                return batch_size_of(item)
    raise DataError(f"cannot tell the batch size of {type(inputs).__name__} inputs")


def first_samples(inputs: Any, n: int = 1) -> Any:
    """The first ``n`` samples of batch inputs (every tensor inside sliced alike)."""
    if isinstance(inputs, torch.Tensor):
        return inputs[:n]
    if isinstance(inputs, dict):
        return {k: first_samples(v, n) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(first_samples(v, n) for v in inputs)
    return inputs


def _add_batch_dim(sample: Any) -> Any:
    if isinstance(sample, torch.Tensor):
        return sample.unsqueeze(0)
    if isinstance(sample, dict):
        return {k: _add_batch_dim(v) for k, v in sample.items()}
    if isinstance(sample, (tuple, list)):
        return type(sample)(_add_batch_dim(v) for v in sample)
    return sample


def dataset_batches(
    dataset: Dataset, batch_size: int, n_batches: int | None = None
) -> Iterator[Batch]:
    """The dataset's samples in order, ``batch_size`` at a time (the first ``n_batches``)."""
    n = len(dataset)  # type: ignore[arg-type]
    count = 0
    if isinstance(dataset, TensorDataset):
        tensors = dataset.tensors
        for start in range(0, n, batch_size):
            if n_batches is not None and count >= n_batches:
                return
            part = tuple(t[start : start + batch_size] for t in tensors)
            yield part if len(part) > 1 else part[0]
            count += 1
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in loader:
        if n_batches is not None and count >= n_batches:
            return
        yield batch
        count += 1


def first_batches(dataset: Dataset, batch_size: int, n_batches: int) -> list[Batch]:
    """The first ``n_batches`` batches of ``dataset`` in order (a small fixed calibration set)."""
    return list(dataset_batches(dataset, batch_size, n_batches))


@dataclass
class _Source:
    """One place batches come from: a dataset (batched on demand) or an iterable of batches."""

    data: Any
    batch_size: int

    def take(self, n_batches: int, batch_size: int | None = None) -> list[Batch]:
        if isinstance(self.data, Dataset):
            return first_batches(self.data, batch_size or self.batch_size, n_batches)
        out = []
        for batch in self.data:
            if len(out) >= n_batches:
                break
            out.append(batch)
        return out

    def example(self) -> Any:
        if isinstance(self.data, Dataset):
            if len(self.data) == 0:  # type: ignore[arg-type]
                return None
            return _add_batch_dim(inputs_of(self.data[0]))
        for batch in self.data:
            return first_samples(inputs_of(batch), 1)
        return None


class Batches:
    """Calibration and validation batches, and an example input, from plain data.

    ``calibration``: a Dataset, DataLoader or iterable of batches (a batch is inputs or
    ``(inputs, labels)``); ``validation``: the same kinds, used where a stage judges a choice
    (default: the calibration data). A Dataset is batched ``batch_size`` at a time, in order;
    an iterable gives its batches as they come, the first few each time."""

    def __init__(self, calibration: Any, validation: Any = None, *, batch_size: int = 64) -> None:
        for what, data in (("calibration", calibration), ("validation", validation)):
            if data is not None and not isinstance(data, (Dataset, Iterable)):
                raise DataError(
                    f"{what} data: expected a Dataset, a DataLoader or an iterable of batches, "
                    f"got {type(data).__name__}"
                )
            if isinstance(data, Iterator):
                raise DataError(
                    f"{what} data: a one-shot iterator (generator) cannot be read twice; "
                    "pass a list of batches or a DataLoader"
                )
        self._calibration = _Source(calibration, batch_size)
        self._validation = _Source(validation, batch_size) if validation is not None else None

    def calibration(self, n_batches: int, batch_size: int | None = None) -> list[Batch]:
        """The first ``n_batches`` calibration batches (always the same ones)."""
        return self._need(self._calibration.take(n_batches, batch_size), "calibration")

    def validation(self, n_batches: int, batch_size: int | None = None) -> list[Batch]:
        """The first ``n_batches`` validation batches (the calibration ones when none given)."""
        source = self._validation or self._calibration
        return self._need(source.take(n_batches, batch_size), "validation")

    def example(self) -> Any:
        """Model inputs of batch size 1 (for tracing layers and timing them): a tensor, or a
        tuple/dict of them as the batches hold."""
        for source in (self._validation, self._calibration):
            x = source.example() if source is not None else None
            if x is not None:
                return x
        raise DataError("no example input: the data holds no batches")

    @staticmethod
    def _need(batches: list[Batch], what: str) -> list[Batch]:
        if not batches:
            raise DataError(f"no {what} batches: the data holds none")
        return batches


def as_batches(data: Any, *, batch_size: int = 64) -> Batches:
    """``data`` as :class:`Batches` (already Batches: returned as is)."""
    if isinstance(data, Batches):
        return data
    return Batches(data, batch_size=batch_size)
