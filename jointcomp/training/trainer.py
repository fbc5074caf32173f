"""The fine-tune callable that stages use: training data and settings bound once, called by a
stage with its own overrides.

>>> import torch
>>> from torch import nn
>>> batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(2)]
>>> trainer = Trainer(batches, {"epochs": 1, "lr": 0.01})
>>> trainer(nn.Linear(4, 3), {"epochs": 2}).steps
4
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from ..batches import Batch
from ..errors import DataError
from ..nn.sparsity import fixed_zero_masks
from ..tasks import ClassifyTask, Task
from .fit import ExtraLoss, FitResult, fit
from .specs import DistillSpec, FinetuneSpec, TrainSpec


class Finetune(Protocol):
    """What a stage calls to fine-tune: trains ``model`` in place with the bound settings
    merged with the stage's ``override``."""

    def __call__(
        self,
        model: nn.Module,
        override: Any = None,
        *,
        seed: int = 0,
        description: str = "finetune",
        extra_loss: ExtraLoss | None = None,
    ) -> FitResult: ...


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode whose parameters take no gradients (a distillation teacher)."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class Trainer:
    """Fine-tunes models on ``data`` (a Dataset, a DataLoader or a list of batches) with
    ``spec`` (a TrainSpec or its dict) merged with each stage's ``finetune`` override, with
    ``task``'s loss: classification trains on labels, distilling from ``teacher`` (the
    uncompressed model) when the merged settings have ``distill``; a distillation task trains
    on ``teacher``'s outputs alone, without labels. Fixed zero patterns
    (``jointcomp.nn.sparsity``) stay zero."""

    def __init__(
        self,
        data: Dataset | Iterable[Batch],
        spec: TrainSpec | Mapping[str, Any] | None = None,
        *,
        teacher: nn.Module | None = None,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
        progress: Any = None,
        task: Task | None = None,
    ) -> None:
        if not isinstance(data, (Dataset, Iterable)):
            raise DataError(
                "Trainer data: expected a Dataset, a DataLoader or a list of (inputs, labels) "
                f"batches, got {type(data).__name__}"
            )
        self.data = data
        self.spec = spec if isinstance(spec, TrainSpec) else TrainSpec.model_validate(spec or {})
        self.teacher = teacher
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.progress = progress
        self.task = task or ClassifyTask()
        self.input_teacher: nn.Module | None = None

    def settings(self, override: FinetuneSpec | Mapping[str, Any] | None = None) -> TrainSpec:
        """The TrainSpec a stage with ``override`` trains with."""
        if override is None:
            return self.spec
        if not isinstance(override, FinetuneSpec):
            override = FinetuneSpec.model_validate(override)
        return override.merged(self.spec)

    def for_input(self, model: nn.Module) -> Trainer:
        """This trainer with ``model`` (a stage's input, copied and frozen) as the teacher of
        settings that say ``distill: {teacher: input}``."""
        bound = copy.copy(self)
        bound.input_teacher = frozen_copy(model)
        return bound

    def __call__(
        self,
        model: nn.Module,
        override: FinetuneSpec | Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        description: str = "finetune",
        extra_loss: ExtraLoss | None = None,
    ) -> FitResult:
        spec = self.settings(override)
        teacher = None
        if spec.distill is not None or self.task.needs_reference:
            if spec.distill is None:
                spec = spec.model_copy(update={"distill": DistillSpec()})  # the task's reference
            if spec.distill.teacher == "input":
                teacher = self.input_teacher
                if teacher is None:
                    raise DataError(
                        f"{description}: distill teacher 'input' needs the stage's input model; "
                        "run the stage through jointcomp (which copies it) or pass teacher="
                    )
            else:
                teacher = self.teacher
                if teacher is None:
                    raise DataError(
                        f"{description}: the settings distil, but this Trainer has no teacher: "
                        "pass teacher= (the uncompressed model)"
                    )
        return fit(
            model,
            self.data,
            spec,
            batch_size=self.batch_size,
            seed=seed,
            device=self.device,
            teacher=teacher,
            masks=fixed_zero_masks(model),
            extra_loss=extra_loss,
            progress=self.progress,
            description=description,
            task=self.task,
        )


def _distills(data: Any, teacher: str | None) -> bool:
    if hasattr(data, "model_dump"):
        data = data.model_dump()
    if isinstance(data, dict):
        distill = data.get("distill")
        if isinstance(distill, dict) and (
            teacher is None or (distill.get("teacher") or "baseline") == teacher
        ):
            return True
        return any(_distills(v, teacher) for v in data.values())
    if isinstance(data, list):
        return any(_distills(v, teacher) for v in data)
    return False


def asks_input_teacher(*settings: Any) -> bool:
    """Whether any of ``settings`` (configs, specs or plain data) has ``distill: {teacher:
    input}`` somewhere inside."""
    return any(_distills(s, "input") for s in settings)


def asks_distillation(*settings: Any) -> bool:
    """Whether any of ``settings`` distils from the uncompressed model somewhere inside."""
    return any(_distills(s, "baseline") for s in settings)
