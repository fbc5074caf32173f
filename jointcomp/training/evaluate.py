"""Measurements on a model without training it: top-1 accuracy, the loss on fixed batches
(sensitivities), what forward hooks see, and batch-norm statistics re-estimated."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import Dataset

from ..batches import Batch, dataset_batches, inputs_of, labels_of
from ..errors import DataError


def _labeled(batch: Batch, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    labels = labels_of(batch)
    if labels is None:
        raise DataError(f"{what} needs labeled batches (inputs, labels); these have no labels")
    return inputs_of(batch), labels


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | Iterable[Batch],
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    max_batches: int | None = None,
) -> float:
    """Top-1 accuracy of ``model`` on labeled ``data`` (a Dataset or batches) as a fraction in
    [0, 1], in eval mode."""
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    batches = dataset_batches(data, batch_size) if isinstance(data, Dataset) else data
    correct, total = 0, 0
    with torch.inference_mode() if device.type == "cpu" else nullcontext():
        for b, batch in enumerate(batches):
            if max_batches and b >= max_batches:
                break
            x, y = _labeled(batch, "top-1 accuracy")
            with parametrize.cached():
                pred = model(x.to(device)).argmax(dim=1)
            correct += int((pred == y.to(device)).sum())
            total += len(y)
    model.train(was_training)
    return correct / max(1, total)


@torch.no_grad()
def evaluate_loss(model: nn.Module, batches: list[Batch], device: torch.device | str) -> float:
    """Mean cross-entropy over a fixed list of labeled batches (sensitivity measurements)."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        x, y = _labeled(batch, "a loss-based sensitivity")
        logits = model(x.to(device))
        total += float(F.cross_entropy(logits, y.to(device), reduction="sum"))
        count += len(y)
    return total / max(1, count)


@torch.no_grad()
def run_with_hooks(
    model: nn.Module,
    hooks: list[tuple[nn.Module, Callable[..., None]]],
    batches: list[Batch],
    device: torch.device | str,
) -> None:
    """Run ``model`` in eval mode over ``batches`` with forward ``hooks`` on some of its
    modules (to measure what they see or produce); the hooks are removed and the training flag
    restored afterwards, whatever happens."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    was_training = model.training
    try:
        model.eval()
        for batch in batches:
            model(inputs_of(batch).to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: list[Batch], device: torch.device | str
) -> int:
    """Re-estimate every batch norm's running statistics on ``batches`` (their plain average;
    no parameter changes): after weights are replaced, the old statistics describe another
    network. Returns how many batch norms were reset."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    norms = [m for m in norms if m.track_running_stats and m.running_mean is not None]
    if not norms or not batches:
        return 0
    saved = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches
    model.train()
    try:
        for batch in batches:
            model(inputs_of(batch).to(device))
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was_training)
    return len(norms)
