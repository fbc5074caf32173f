"""The Stage contract and the context a stage runs in.

A stage takes a model and returns a model (``apply``); it writes a short record of what it did
into ``ctx.record``. A stage that trains calls ``ctx.finetune``; it never opens data itself.
"""

from __future__ import annotations

import fnmatch
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from ..recipe import FinetuneSpec, Recipe, Strict
from ..train import ExtraLoss, FitResult, evaluate, first_batches, fit


class StageParams(Strict):
    """Base of every stage's parameter schema."""


@dataclass
class StageContext:
    """Everything a stage may use. ``meta`` is the model's annotations that travel with it through
    checkpoints and into the file (e.g. ``meta["sparse"]``: names of tensors whose zeros are kept
    fixed); ``record`` is what the stage reports."""

    recipe: Recipe
    data: Any  # jointcomp.data.DataBundle
    teacher: nn.Module | None
    device: torch.device
    seed: int
    stage_index: int
    stage_name: str
    out_dir: Path
    builder: str
    builder_kwargs: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    progress: Any = None
    console: Any = None
    #: a frozen copy of the model as this stage received it, kept only when some ``distill``
    #: of the recipe's train settings or this stage's parameters asks for ``teacher: input``
    input_teacher: nn.Module | None = None

    def log(self, message: str) -> None:
        if self.console is not None:
            self.console.print(f"  [dim]{self.stage_name}:[/] {message}")

    def sparse_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Masks (True = free to train) for every tensor whose zero pattern is fixed."""
        named = dict(model.named_parameters())
        names = set(self.meta.get("sparse", []))
        for mod_name, module in model.named_modules():
            for t in getattr(module, "jc_sparse_tensors", ()):
                names.add(f"{mod_name}.{t}" if mod_name else t)
        return {n: named[n].detach() != 0 for n in sorted(names) if n in named}

    def mark_sparse(self, names: list[str]) -> None:
        self.meta["sparse"] = sorted(set(self.meta.get("sparse", [])) | set(names))

    def finetune(
        self,
        model: nn.Module,
        override: FinetuneSpec | None = None,
        *,
        description: str | None = None,
        extra_loss: ExtraLoss | None = None,
        seed_offset: int = 0,
    ) -> FitResult:
        """Fine-tune ``model`` with the recipe's train settings merged with ``override``,
        distilling from the uncompressed model (or the stage's input) when the merged settings
        ask for it."""
        spec = (override or FinetuneSpec()).merged(self.recipe.train)
        teacher = None
        if spec.distill is not None:
            teacher = self.input_teacher if spec.distill.teacher == "input" else self.teacher
            if teacher is None and spec.distill.teacher == "input":
                raise RuntimeError(f"{self.stage_name}: no copy of its input to distil from")
        return fit(
            model,
            self.data.train,
            spec,
            batch_size=self.recipe.data.batch_size,
            seed=self.seed + seed_offset,
            device=self.device,
            teacher=teacher,
            masks=self.sparse_masks(model),
            extra_loss=extra_loss,
            progress=self.progress,
            description=description or self.stage_name,
        )

    def evaluate(self, model: nn.Module) -> float:
        return evaluate(
            model, self.data.val, batch_size=self.recipe.data.eval_batch_size, device=self.device
        )

    def example_inputs(self, batch: int = 1) -> torch.Tensor:
        x, _ = self.data.val[0] if len(self.data.val) else self.data.train[0]
        return x.unsqueeze(0).repeat(batch, *([1] * x.dim())).to(self.device)

    def calibration_batches(self, n_batches: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A small fixed set of training batches (for sensitivities, Taylor scores, calibration)."""
        return first_batches(self.data.train, self.recipe.data.batch_size, n_batches)


class Stage(ABC):
    """One compression step. Subclasses set ``name`` and ``Params`` and implement ``apply``."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    #: a stage that trains or changes weights can be followed by others; ``encode`` must be last
    terminal: ClassVar[bool] = False

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    @abstractmethod
    def apply(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        """Return the transformed model (may be the same object, modified in place)."""


def match_any(name: str, patterns: list[str] | tuple[str, ...]) -> bool:
    """True when ``name`` matches one of the shell-style ``patterns`` (``features.*``)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def first_match(name: str, table: dict[str, Any]) -> Any:
    """The value of the first pattern in ``table`` that matches ``name`` (None if none)."""
    for pattern, value in table.items():
        if fnmatch.fnmatchcase(name, pattern):
            return value
    return None


def classifier_names(model: nn.Module, num_classes: int) -> list[str]:
    """The output layer(s): the last Linear/Conv whose output size is the number of classes."""
    found = [
        name
        for name, m in model.named_modules()
        if (isinstance(m, nn.Linear) and m.out_features == num_classes)
        or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)
    ]
    return found[-1:]
