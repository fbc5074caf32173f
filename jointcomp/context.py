"""What a stage may use besides the model and its config, and what it gives back.

A stage is a function ``stage(model, config, context) -> Step``. The context carries the data to
measure on, the fine-tune callable (None: no fine-tuning), the device, the seed, a log, and an
optional metric for the record; nothing else (no recipe, no output folder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from .batches import Batch, Batches, to_device
from .config import Scope
from .errors import DataError
from .nn.modules import classifier_names
from .tasks import ClassifyTask, Task
from .training import ExtraLoss, FitResult, evaluate_loss, reference_outputs
from .training.trainer import Finetune


class Step(NamedTuple):
    """A stage's result: the compressed model and a record of what the stage did."""

    model: nn.Module
    record: dict[str, Any]


def _silent(_: str) -> None:
    return None


@dataclass
class Context:
    """The resources of one stage run.

    ``data``: calibration/validation batches and an example input (``jointcomp.batches``);
    ``finetune``: trains a model in place with a stage's overrides (``jointcomp.Trainer``), or
    None; ``task``: what the model's output means (its loss drives sensitivities and budgets);
    ``reference``: the uncompressed model a distillation task compares with; ``evaluate``: the
    metric a record reports before/after (optional); ``name``: how logs and errors call the
    stage."""

    data: Batches | None = None
    finetune: Finetune | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    log: Callable[[str], None] = _silent
    evaluate: Callable[[nn.Module], float] | None = None
    name: str = "stage"
    task: Task = field(default_factory=ClassifyTask)
    reference: nn.Module | None = None
    # (batches, reference, its outputs): the last list ``loss`` measured (identity-compared)
    _references: tuple[Any, Any, list[Any]] | None = field(default=None, init=False, repr=False)

    def need_data(self, why: str) -> Batches:
        if self.data is None:
            raise DataError(f"{self.name}: {why} needs data: pass data= (batches of inputs)")
        return self.data

    def calibration(self, n_batches: int, batch_size: int | None = None) -> list[Batch]:
        """A fixed set of calibration batches (for Taylor scores, fits, statistics)."""
        return self.need_data("calibration").calibration(n_batches, batch_size)

    def validation(self, n_batches: int, batch_size: int | None = None) -> list[Batch]:
        """A fixed set of validation batches (for the sensitivities a budget compares)."""
        return self.need_data("a budget's sensitivities").validation(n_batches, batch_size)

    def example(self) -> Any:
        """Model inputs of batch size 1 on the stage's device (for tracing layers)."""
        return to_device(self.need_data("tracing the model").example(), self.device)

    def loss(self, model: nn.Module, batches: list[Batch]) -> float:
        """The task's mean loss of ``model`` on ``batches`` (what budgets compare). A
        distillation task's reference outputs are computed once per batch list and reused
        while the same list (and reference) is measured again."""
        references = None
        if self.task.needs_reference and self.reference is not None:
            cached = self._references
            if cached is None or cached[0] is not batches or cached[1] is not self.reference:
                outputs = reference_outputs(self.reference, batches, self.device, self.task)
                cached = self._references = (batches, self.reference, outputs)
            references = cached[2]
        return evaluate_loss(
            model, batches, self.device, self.task, self.reference, references=references
        )

    def selector(self, scope: Scope, model: nn.Module) -> Callable[[str], bool]:
        """Whether a layer name is in ``scope``, the output layer left out when the scope says
        ``exclude_classifier`` (found by running the model on the example input)."""
        if not scope.exclude_classifier:
            return scope.selects
        classifier = set(classifier_names(model, self.example()))
        return lambda name: scope.selects(name) and name not in classifier

    def score(self, model: nn.Module) -> float | None:
        """The metric of ``model`` (None without ``evaluate``)."""
        return None if self.evaluate is None else self.evaluate(model)

    def train(
        self,
        model: nn.Module,
        override: Any = None,
        *,
        description: str | None = None,
        extra_loss: ExtraLoss | None = None,
        seed_offset: int = 0,
    ) -> FitResult | None:
        """Fine-tune ``model`` in place with the stage's ``override`` (None without a
        ``finetune`` callable: the stage then goes on untrained, and says so in the log)."""
        if self.finetune is None:
            self.log("no fine-tuning (no finetune callable given)")
            return None
        return self.finetune(
            model,
            override,
            seed=self.seed + seed_offset,
            description=description or self.name,
            extra_loss=extra_loss,
        )
