"""Classification: logits against labels; top-1 accuracy."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from .base import Output, Task


class ClassifyTask(Task):
    """Cross-entropy on labels (the trainer adds distillation on the logits when its settings
    say ``distill``); the metric is top-1 accuracy."""

    name: ClassVar[str] = "classify"
    metric: ClassVar[str] = "top-1"
    needs_labels: ClassVar[bool] = True

    def __init__(self, output: Output = None, label_smoothing: float = 0.0) -> None:
        self.output = output
        self.label_smoothing = label_smoothing

    def loss(self, student, labels, teacher):
        self.check_labels(labels)
        return F.cross_entropy(student, labels, label_smoothing=self.label_smoothing)

    def measure(self, student, labels, teacher):
        self.check_labels(labels)
        stats = {"correct": (student.argmax(dim=1) == labels).float()}
        stats["loss"] = F.cross_entropy(student, labels, reduction="none")
        return stats

    def summarize(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        if not stats["correct"].numel():
            return {self.metric: 0.0, "loss": float("nan")}
        return {
            self.metric: float(stats["correct"].mean()),
            "loss": float(stats["loss"].mean()),
        }
