"""Measurements on a model without training it: top-1 accuracy, the loss on fixed batches
(sensitivities), what forward hooks see, and batch-norm statistics re-estimated."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import Dataset

from ..batches import (
    Batch,
    batch_size_of,
    dataset_batches,
    inputs_of,
    labels_of,
    run_model,
    to_device,
)
from ..errors import DataError
from ..tasks import ClassifyTask, Task, select_output


def _labeled(batch: Batch, what: str) -> tuple[Any, torch.Tensor]:
    labels = labels_of(batch)
    if labels is None:
        raise DataError(f"{what} needs labeled batches (inputs, labels); these have none")
    return inputs_of(batch), labels


def _batches(data: Dataset | Iterable[Batch], batch_size: int) -> Iterable[Batch]:
    return dataset_batches(data, batch_size) if isinstance(data, Dataset) else data


@torch.no_grad()
def measure_task(
    model: nn.Module,
    data: Dataset | Iterable[Batch],
    task: Task | None = None,
    *,
    reference: nn.Module | None = None,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    max_batches: int | None = None,
) -> dict[str, float]:
    """``task``'s metrics of ``model`` on ``data`` (a Dataset or batches), in eval mode: top-1
    for classification, output fidelity against ``reference`` (the original model) for
    distillation; the task's own metric first."""
    task = task or ClassifyTask()
    if task.needs_reference and reference is None:
        raise DataError(f"task {task.name}: measuring fidelity needs the original model")
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    if reference is not None:
        reference.to(device).eval()
    stats: dict[str, list[torch.Tensor]] = {}
    with torch.inference_mode() if device.type == "cpu" else nullcontext():
        for b, batch in enumerate(_batches(data, batch_size)):
            if max_batches and b >= max_batches:
                break
            x, y = to_device(inputs_of(batch), device), labels_of(batch)
            y = None if y is None else y.to(device)
            with parametrize.cached():
                out = task.select(run_model(model, x))
            ref = None if reference is None else task.select(run_model(reference, x))
            for key, value in task.measure(out, y, ref).items():
                stats.setdefault(key, []).append(value.detach().float().cpu())
    model.train(was_training)
    return task.summarize({k: torch.cat(v) for k, v in stats.items()} if stats else {})


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | Iterable[Batch],
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    max_batches: int | None = None,
    task: Task | None = None,
    reference: nn.Module | None = None,
) -> float:
    """The task's metric of ``model`` on ``data`` (default: top-1 accuracy on labeled data, a
    fraction in [0, 1]), in eval mode."""
    if task is not None and not isinstance(task, ClassifyTask):
        metrics = measure_task(
            model,
            data,
            task,
            reference=reference,
            batch_size=batch_size,
            device=device,
            max_batches=max_batches,
        )
        return metrics[task.metric]
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    correct, total = 0, 0
    with torch.inference_mode() if device.type == "cpu" else nullcontext():
        for b, batch in enumerate(_batches(data, batch_size)):
            if max_batches and b >= max_batches:
                break
            x, y = _labeled(batch, "top-1 accuracy")
            with parametrize.cached():
                out = run_model(model, to_device(x, device))
                pred = select_output(out, task.output if task else None).argmax(dim=1)
            correct += int((pred == y.to(device)).sum())
            total += len(y)
    model.train(was_training)
    return correct / max(1, total)


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    batches: list[Batch],
    device: torch.device | str,
    task: Task | None = None,
    reference: nn.Module | None = None,
    references: list[Any] | None = None,
) -> float:
    """Mean loss of ``task`` over a fixed list of batches (sensitivity measurements; default:
    cross-entropy on labels; a distillation task compares with ``reference``, or with
    ``references``: its selected outputs per batch, computed once by ``reference_outputs``)."""
    model.eval()
    total, count = 0.0, 0
    for i, batch in enumerate(batches):
        if task is None or isinstance(task, ClassifyTask):
            x, y = _labeled(batch, "a loss-based sensitivity")
            out = select_output(
                run_model(model, to_device(x, device)), task.output if task else None
            )
            total += float(F.cross_entropy(out, y.to(device), reduction="sum"))
            count += len(y)
            continue
        x, y = to_device(inputs_of(batch), device), labels_of(batch)
        ref = None
        if task.needs_reference and references is not None:
            ref = references[i]
        elif task.needs_reference:
            if reference is None:
                raise DataError(f"task {task.name}: its sensitivities need the original model")
            reference.eval()
            ref = task.select(run_model(reference, x))
        n = batch_size_of(x)
        total += float(task.loss(task.select(run_model(model, x)), y, ref)) * n
        count += n
    return total / max(1, count)


@torch.no_grad()
def reference_outputs(
    reference: nn.Module, batches: list[Batch], device: torch.device | str, task: Task
) -> list[Any]:
    """The reference model's selected outputs on each batch, for ``evaluate_loss(...,
    references=)``: a sensitivity sweep compares hundreds of variants with one unchanging
    teacher, which would otherwise run again for every one."""
    reference.eval()
    return [task.select(run_model(reference, to_device(inputs_of(b), device))) for b in batches]


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
            run_model(model, to_device(inputs_of(batch), device))
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
            run_model(model, to_device(inputs_of(batch), device))
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was_training)
    return len(norms)
