"""Tasks: what a model's output means, so that training, sensitivities, budgets and the audit
all use the same loss and the same metric.

- ``classify``: logits against labels — cross-entropy (plus distillation on the logits when the
  training settings ask for it); the metric is top-1 accuracy.
- ``distill``: label-free — the distance between the compressed model's output and the
  original's on the same inputs (cosine or MSE on embeddings and hidden states, KL on logits);
  the metric is output fidelity (mean and 5th-percentile cosine, relative error, top-1 agreement
  for logits).
- ``package.module:callable``: a user's own :class:`Task` (needs trust).

>>> import torch
>>> from jointcomp.tasks import DistillTask
>>> task = DistillTask(distance="cosine")
>>> teacher = torch.randn(4, 8)
>>> round(abs(float(task.loss(teacher, None, teacher))), 4)
0.0
>>> round(task.summarize(task.measure(teacher, None, teacher))["mean cosine"], 4)
1.0
"""

from .base import Task, format_metric, select_output
from .classify import ClassifyTask
from .distill import DistillTask
from .spec import TaskSpec, make_task

__all__ = [
    "ClassifyTask",
    "DistillTask",
    "Task",
    "TaskSpec",
    "format_metric",
    "make_task",
    "select_output",
]
