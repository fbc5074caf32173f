"""The Task contract, the output selector, and the task config a recipe names."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from ..errors import RecipeError

Output = str | int | None  # which output a task reads: a key/attribute name, an index, or all

# metrics that are fractions shown as percentages (the rest: plain numbers, 4 decimals)
PERCENT_METRICS = frozenset({"top-1", "top-1 agreement"})


def format_metric(name: str, value: float | None) -> str:
    """``value`` of the metric ``name`` as reports print it: ``87.12%`` for top-1 (and top-1
    agreement), ``0.9876`` for fidelity figures such as mean cosine; ``–`` when unmeasured."""
    if value is None:
        return "–"
    if name in PERCENT_METRICS:
        return f"{100 * value:.2f}%"
    return f"{value:.4f}"


def select_output(output: Any, which: Output = None) -> torch.Tensor:
    """The tensor a task reads from a model's output: the output itself when it is a tensor;
    else item ``which`` of a tuple/list (an int), key or attribute ``which`` of a dict, a
    dataclass or a transformers ModelOutput (a str); ``which`` None takes the first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if which is not None:
        try:
            if isinstance(which, int) or isinstance(output, dict) or hasattr(output, "keys"):
                found = output[which]
            else:
                found = getattr(output, which)
        except (KeyError, IndexError, AttributeError, TypeError):
            raise RecipeError(
                f"task output {which!r}: the model's output ({type(output).__name__}) has none"
            ) from None
        return select_output(found)
    if dataclasses.is_dataclass(output) and not hasattr(output, "keys"):
        output = [getattr(output, f.name) for f in dataclasses.fields(output)]
    elif isinstance(output, dict) or hasattr(output, "keys"):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise RecipeError(f"the model's output ({type(output).__name__}) holds no tensor")


class Task(ABC):
    """What a model's output means. ``loss`` and ``measure`` take the selected outputs of the
    model under compression (``student``), the batch's labels (None when unlabeled) and the
    reference model's outputs on the same inputs (``teacher``: the uncompressed model; None
    when the task does not need it)."""

    name: ClassVar[str]
    #: the metric the record, the audit and the budgets' reports name (higher is better)
    metric: ClassVar[str]
    needs_labels: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    output: Output = None

    def select(self, output: Any) -> torch.Tensor:
        return select_output(output, self.output)

    @abstractmethod
    def loss(
        self, student: torch.Tensor, labels: torch.Tensor | None, teacher: torch.Tensor | None
    ) -> torch.Tensor:
        """The training / sensitivity loss, a mean over the batch."""

    @abstractmethod
    def measure(
        self, student: torch.Tensor, labels: torch.Tensor | None, teacher: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Per-sample statistics of one batch (concatenated over batches by the caller)."""

    @abstractmethod
    def summarize(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        """The metrics of concatenated statistics, ``metric`` first."""

    def check_labels(self, labels: torch.Tensor | None) -> None:
        if self.needs_labels and labels is None:
            raise RecipeError(
                f"task {self.name} needs labeled batches (inputs, labels); these have none: "
                "use task distill for unlabeled data"
            )
