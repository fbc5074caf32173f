"""Fine-tune and evaluate loops: seeded, deterministic on CPU, with knowledge distillation,
fixed sparsity masks, an optional extra loss (regularizers), and DistributedDataParallel when the
process runs under ``torchrun``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .augment import Augmenter
from .errors import DataError
from .recipe import TrainSpec

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


def _batches(
    dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, shard: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches in a seeded order; under DDP each rank takes its own slice of the order."""
    n = len(dataset)  # type: ignore[arg-type]
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    else:
        order = torch.arange(n)
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


def steps_per_epoch(dataset: Dataset, batch_size: int, max_batches: int | None = None) -> int:
    _, size = world()
    n = len(dataset) // size if size > 1 else len(dataset)  # type: ignore[arg-type]
    steps = math.ceil(n / batch_size)
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


def fit(
    model: nn.Module,
    train_set: Dataset,
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
) -> FitResult:
    """Train ``model`` in place for ``spec.epochs``.

    ``masks`` maps parameter names to boolean tensors: entries that are False stay exactly zero
    (pruned weights keep their zeros through fine-tuning). ``teacher`` enables distillation with
    ``spec.distill`` (the teacher sees the same augmented batch). ``progress`` is a
    ``rich.progress.Progress`` (or None for silence).
    """
    start = time.perf_counter()
    device = torch.device(device)
    if spec.epochs == 0:
        return FitResult(0, 0, float("nan"), 0.0)
    torch.manual_seed(seed)
    model.to(device).train()
    named = dict(model.named_parameters())
    trainable = [p for p in named.values() if p.requires_grad]
    mask_pairs = []
    for name, mask in (masks or {}).items():
        if name in named:
            mask_pairs.append((named[name], mask.to(device)))
    _apply_masks(mask_pairs)
    if teacher is not None and spec.distill is not None:
        teacher.to(device).eval()
    else:
        teacher = None

    rank, size = world()
    runner: nn.Module = model
    if size > 1:
        ids = [device.index] if device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    augment = None
    if spec.augment is not None and (spec.augment.shift or spec.augment.flip):
        sample = train_set[0][0]
        if sample.dim() != 3:
            raise DataError(
                f"augment shifts and flips images shaped (C, H, W); this dataset's samples are "
                f"{tuple(sample.shape)}: remove augment from the train or finetune settings"
            )
        augment = Augmenter(spec.augment, seed * 7919 + 1)

    per_epoch = steps_per_epoch(train_set, batch_size, spec.max_batches)
    total = per_epoch * spec.epochs
    optimizer = make_optimizer(trainable, spec)
    schedule = make_schedule(optimizer, spec, total, per_epoch)
    task = None
    if progress is not None and rank == 0:
        task = progress.add_task(description, total=total)  # type: ignore[attr-defined]

    steps = 0
    epoch_loss = float("nan")
    for epoch in range(spec.epochs):
        running, count = 0.0, 0
        batches = _batches(
            train_set, batch_size, shuffle=True, seed=seed * 1009 + epoch, shard=True
        )
        for b, (x, y) in enumerate(batches):
            if spec.max_batches and b >= spec.max_batches:
                break
            x, y = x.to(device), y.to(device)
            if augment is not None:
                x = augment(x)
            # a parametrized tensor used by many layers (a T-Basis basis under QAT) is
            # quantized once per step, not once per use
            with parametrize.cached():
                logits = runner(x)
                loss = F.cross_entropy(logits, y, label_smoothing=spec.label_smoothing)
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(x)
                    alpha = spec.distill.alpha  # type: ignore[union-attr]
                    kd = distillation_loss(logits, t_logits, spec.distill.temperature)  # type: ignore[union-attr]
                    loss = (1 - alpha) * loss + alpha * kd
                if extra_loss is not None:
                    loss = loss + extra_loss(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            _apply_masks(mask_pairs)
            running += float(loss.detach()) * len(y)
            count += len(y)
            steps += 1
            if task is not None:
                progress.update(task, advance=1, description=f"{description} e{epoch + 1}")  # type: ignore[attr-defined]
        epoch_loss = running / max(1, count)
    if task is not None:
        progress.remove_task(task)  # type: ignore[attr-defined]
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


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    max_batches: int | None = None,
) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` as a fraction in [0, 1] (eval mode)."""
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    correct, total = 0, 0
    with torch.inference_mode() if device.type == "cpu" else nullcontext():
        for b, (x, y) in enumerate(
            _batches(dataset, batch_size, shuffle=False, seed=0, shard=False)
        ):
            if max_batches and b >= max_batches:
                break
            with parametrize.cached():
                pred = model(x.to(device)).argmax(dim=1)
            correct += int((pred == y.to(device)).sum())
            total += len(y)
    model.train(was_training)
    return correct / max(1, total)


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str
) -> float:
    """Mean cross-entropy over a fixed list of batches (used for sensitivity measurements)."""
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        logits = model(x.to(device))
        total += float(F.cross_entropy(logits, y.to(device), reduction="sum"))
        count += len(y)
    return total / max(1, count)


def first_batches(
    dataset: Dataset, batch_size: int, n_batches: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n_batches`` batches of ``dataset`` in order (a small fixed calibration set)."""
    out = []
    for b, batch in enumerate(_batches(dataset, batch_size, shuffle=False, seed=0, shard=False)):
        if b >= n_batches:
            break
        out.append(batch)
    return out


@torch.no_grad()
def run_with_hooks(
    model: nn.Module,
    hooks: list[tuple[nn.Module, Callable[..., None]]],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str,
) -> None:
    """Run ``model`` in eval mode over ``batches`` with forward ``hooks`` on some of its
    modules (to measure what they see or produce); the hooks are removed and the training flag
    restored afterwards, whatever happens."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    was_training = model.training
    try:
        model.eval()
        for x, _ in batches:
            model(x.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str
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
        for x, _ in batches:
            model(x.to(device))
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was_training)
    return len(norms)
