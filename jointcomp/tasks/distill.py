"""Label-free distillation: the compressed model's outputs against the original's."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from .base import Output, Task

Distance = Literal["cosine", "mse", "kl"]


def _rows(x: torch.Tensor) -> torch.Tensor:
    """One row per sample: [N, ...] → [N, features] (token outputs flattened per sample)."""
    return x.reshape(x.shape[0], -1).float()


class DistillTask(Task):
    """The distance between the compressed model's output and the reference's (the uncompressed
    model) on the same inputs: ``cosine`` (1 − cosine similarity per sample), ``mse`` (mean
    squared error relative to the reference's mean square) or ``kl`` (on logits, at
    ``temperature``). No labels are read. The metric is the mean cosine similarity; the
    summary also gives its 5th percentile, the mean relative error and, for ``kl``, top-1
    agreement."""

    name: ClassVar[str] = "distill"
    metric: ClassVar[str] = "mean cosine"
    needs_reference: ClassVar[bool] = True

    def __init__(
        self, distance: Distance = "cosine", output: Output = None, temperature: float = 1.0
    ) -> None:
        if distance not in ("cosine", "mse", "kl"):
            raise ValueError(f"distance must be cosine, mse or kl, got {distance!r}")
        self.distance = distance
        self.output = output
        self.temperature = temperature

    def _check(self, teacher: torch.Tensor | None) -> torch.Tensor:
        if teacher is None:
            raise ValueError("task distill compares with the original model: it has no outputs")
        return teacher

    def loss(self, student, labels, teacher):
        teacher = self._check(teacher).detach()
        if self.distance == "kl":
            t = self.temperature
            return F.kl_div(
                F.log_softmax(student / t, dim=-1),
                F.log_softmax(teacher / t, dim=-1),
                reduction="batchmean",
                log_target=True,
            ) * (t * t)
        s, r = _rows(student), _rows(teacher)
        if self.distance == "cosine":
            return (1 - F.cosine_similarity(s, r, dim=1, eps=1e-8)).mean()
        return ((s - r) ** 2).mean() / (r**2).mean().clamp_min(1e-12)

    def measure(self, student, labels, teacher):
        teacher = self._check(teacher)
        s, r = _rows(student), _rows(teacher)
        stats = {
            "cosine": F.cosine_similarity(s, r, dim=1, eps=1e-8),
            "relative_error": (s - r).norm(dim=1) / r.norm(dim=1).clamp_min(1e-12),
        }
        if self.distance == "kl":
            stats["agree"] = (
                (student.argmax(dim=-1) == teacher.argmax(dim=-1))
                .float()
                .reshape(student.shape[0], -1)
                .mean(dim=1)
            )
        return stats

    def summarize(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        cos = stats["cosine"].double()
        if not cos.numel():
            return {self.metric: 0.0}
        out = {
            self.metric: float(cos.mean()),
            "p5 cosine": float(torch.quantile(cos, 0.05)),
            "relative error": float(stats["relative_error"].double().mean()),
        }
        if "agree" in stats:
            out["top-1 agreement"] = float(stats["agree"].double().mean())
        return out
