"""The fine-tune loop: seeded, deterministic on CPU, with knowledge distillation, fixed sparsity
masks, an optional extra loss (regularizers, rate terms), and DistributedDataParallel when the
process runs under ``torchrun``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..batches import Batch, batch_size_of, inputs_of, labels_of, run_model, to_device
from ..errors import DataError
from ..tasks import ClassifyTask, Task
from .augment import Augmenter
from .specs import TrainSpec

ExtraLoss = Callable[[nn.Module], torch.Tensor]


@dataclass
class FitResult:
    """What a fine-tune did."""

    epochs: int
    steps: int
    loss: float
    seconds: float


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside ``torchrun``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return world()[0] == 0


def shuffled_batches(
    dataset: Dataset, batch_size: int, *, seed: int, shard: bool = True
) -> Iterator[Batch]:
    """Mini-batches of ``dataset`` in a seeded order; under DDP each rank takes its own slice."""
    n = len(dataset)  # type: ignore[arg-type]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    rank, size = world()
    if shard and size > 1:
        usable = (n // size) * size  # equal work per rank keeps DDP's collectives in step
        order = order[:usable][rank::size]
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        x_all, y_all = dataset.tensors
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield x_all[idx], y_all[idx]
        return
    loader = DataLoader(
        torch.utils.data.Subset(dataset, order.tolist()), batch_size=batch_size, shuffle=False
    )
    yield from loader


def steps_per_epoch(
    data: Dataset | Iterable[Batch], batch_size: int, max_batches: int | None = None
) -> int | None:
    """Optimizer steps in one epoch (None when an iterable of batches has no length)."""
    if isinstance(data, Dataset):
        _, size = world()
        n = len(data) // size if size > 1 else len(data)  # type: ignore[arg-type]
        steps: int | None = math.ceil(n / batch_size)
    else:
        steps = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
    if steps is None:
        return max_batches
    return min(steps, max_batches) if max_batches else steps


def make_optimizer(params: list[nn.Parameter], spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=spec.lr,
            momentum=spec.momentum,
            weight_decay=spec.weight_decay,
            nesterov=True,
        )
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def make_schedule(
    optimizer: torch.optim.Optimizer, spec: TrainSpec, total_steps: int, steps_per_ep: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if spec.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if spec.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=max(1, spec.step_size * steps_per_ep), gamma=spec.gamma
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton's soft-target loss, scaled by T² so its gradients match the hard loss's scale."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def _augmenter(data: Dataset | Iterable[Batch], spec: TrainSpec, seed: int) -> Augmenter | None:
    if spec.augment is None or not (spec.augment.shift or spec.augment.flip):
        return None
    sample = inputs_of(data[0]) if isinstance(data, Dataset) else inputs_of(next(iter(data)))
    if isinstance(sample, torch.Tensor) and not isinstance(data, Dataset):
        sample = sample[0]
    if not isinstance(sample, torch.Tensor) or sample.dim() != 3:
        shape = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample).__name__
        raise DataError(
            f"augment shifts and flips images shaped (C, H, W); this data's samples are "
            f"{shape}: remove augment from the train or finetune settings"
        )
    return Augmenter(spec.augment, seed * 7919 + 1)


def fit(
    model: nn.Module,
    data: Dataset | Iterable[Batch],
    spec: TrainSpec,
    *,
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
    teacher: nn.Module | None = None,
    masks: dict[str, torch.Tensor] | None = None,
    extra_loss: ExtraLoss | None = None,
    progress: object | None = None,
    description: str = "train",
    task: Task | None = None,
) -> FitResult:
    """Train ``model`` in place for ``spec.epochs`` on ``data``: a Dataset (shuffled each epoch
    in a seeded order, ``batch_size`` at a time) or a re-iterable of batches such as a
    DataLoader (taken as it comes), with ``task``'s loss (default: classification).

    Classification trains on labels, distilling from ``teacher`` on the logits when
    ``spec.distill`` says so; a task that compares with the original model (``distill``) trains
    on ``teacher``'s outputs alone and needs no labels. ``masks`` maps parameter names to
    boolean tensors: entries that are False stay exactly zero (pruned weights keep their zeros
    through fine-tuning). The teacher sees the same augmented batch. ``progress`` is a
    ``rich.progress.Progress`` (or None for silence).
    """
    task = task or ClassifyTask()
    start = time.perf_counter()
    device = torch.device(device)
    if spec.epochs == 0:
        return FitResult(0, 0, float("nan"), 0.0)
    torch.manual_seed(seed)
    model.to(device).train()
    named = dict(model.named_parameters())
    trainable = [p for p in named.values() if p.requires_grad]
    mask_pairs = [(named[n], m.to(device)) for n, m in (masks or {}).items() if n in named]
    _apply_masks(mask_pairs)
    if task.needs_reference and teacher is None:
        raise DataError(f"{description}: task {task.name} compares with the original model: "
                        "pass its teacher")  # fmt: skip
    if teacher is not None and (spec.distill is not None or task.needs_reference):
        teacher.to(device).eval()
    else:
        teacher = None

    rank, size = world()
    runner: nn.Module = model
    if size > 1:
        ids = [device.index] if device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    augment = _augmenter(data, spec, seed)
    per_epoch = steps_per_epoch(data, batch_size, spec.max_batches)
    total = (per_epoch or 0) * spec.epochs
    optimizer = make_optimizer(trainable, spec)
    schedule = make_schedule(optimizer, spec, total, per_epoch or 1)
    bar = None
    if progress is not None and rank == 0:
        bar = progress.add_task(description, total=total or None)  # type: ignore[attr-defined]

    steps = 0
    epoch_loss = float("nan")
    for epoch in range(spec.epochs):
        running, count = 0.0, 0
        if isinstance(data, Dataset):
            batches: Iterable[Batch] = shuffled_batches(data, batch_size, seed=seed * 1009 + epoch)
        else:
            batches = data
        for b, batch in enumerate(batches):
            if spec.max_batches and b >= spec.max_batches:
                break
            x, y = to_device(inputs_of(batch), device), labels_of(batch)
            if y is None and task.needs_labels:
                raise DataError(
                    "fine-tuning trains on labeled batches (inputs, labels); these have none: "
                    "use task distill for unlabeled data"
                )
            y = None if y is None else y.to(device)
            if augment is not None:
                x = augment(x)
            # a parametrized tensor used by many layers (a T-Basis basis under QAT) is
            # quantized once per step, not once per use
            with parametrize.cached():
                out = task.select(run_model(runner, x))
                reference = None
                if teacher is not None:
                    with torch.no_grad():
                        reference = task.select(run_model(teacher, x))
                if not isinstance(task, ClassifyTask):
                    loss = task.loss(out, y, reference)
                else:
                    loss = F.cross_entropy(out, y, label_smoothing=spec.label_smoothing)
                    if reference is not None:
                        alpha = spec.distill.alpha  # type: ignore[union-attr]
                        kd = distillation_loss(out, reference, spec.distill.temperature)  # type: ignore[union-attr]
                        loss = (1 - alpha) * loss + alpha * kd
                if extra_loss is not None:
                    loss = loss + extra_loss(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            _apply_masks(mask_pairs)
            n = batch_size_of(x)
            running += float(loss.detach()) * n
            count += n
            steps += 1
            if bar is not None:
                progress.update(bar, advance=1, description=f"{description} e{epoch + 1}")  # type: ignore[attr-defined]
        epoch_loss = running / max(1, count)
    if bar is not None:
        progress.remove_task(bar)  # type: ignore[attr-defined]
    if size > 1:
        # DDP keeps parameters in step but each rank's BatchNorm statistics saw its own batches:
        # make every rank hold rank 0's model so all of them write and check the same file
        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)
    model.eval()
    return FitResult(spec.epochs, steps, epoch_loss, time.perf_counter() - start)


def _apply_masks(pairs: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    with torch.no_grad():
        for param, mask in pairs:
            # masked_fill, not mul: w·0 is −0.0 for negative w, whose nonzero bit pattern the
            # sparse coder would store as an entry
            param.masked_fill_(~mask, 0.0)
