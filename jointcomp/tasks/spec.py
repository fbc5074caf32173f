"""The task a recipe or a Python call names, and the Task object it stands for."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from ..config import Strict
from ..errors import RecipeError
from .base import Task
from .classify import ClassifyTask
from .distill import DistillTask

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_CALLABLE = re.compile(rf"{_DOTTED}:{_DOTTED}")


class TaskSpec(Strict):
    """What the model's output means, so that fine-tuning, budgets, sensitivities and the audit
    use one loss and one metric: ``classify`` (labels; cross-entropy, top-1 accuracy),
    ``distill`` (label-free: the compressed model's outputs against the original's on the same
    inputs; the metric is their mean cosine, with its 5th percentile, the relative error and,
    for ``kl``, top-1 agreement) or ``package.module:callable`` returning a
    ``jointcomp.tasks.Task`` (your own loss and metric; a recipe runs it as it runs its own
    builder and dataset callables, the Python API only with ``trust=True``). A recipe may write
    ``task: distill`` for ``task: {kind: distill}``."""

    kind: Literal["classify", "distill"] | str = Field(
        "classify", description="classify | distill | package.module:callable"
    )
    output: str | int | None = Field(
        None,
        description="which model output the task reads: a key of a dict or ModelOutput "
        "(e.g. sentence_embedding, last_hidden_state, logits), an index of a tuple, or none "
        "for the output itself / its first tensor",
    )
    distance: Literal["cosine", "mse", "kl"] = Field(
        "cosine", description="distill: cosine or MSE on embeddings, KL on logits"
    )
    temperature: float = Field(1.0, gt=0, description="distill with kl: softmax temperature")

    @field_validator("kind")
    @classmethod
    def _kind_form(cls, v: str) -> str:
        if v not in ("classify", "distill") and not _CALLABLE.fullmatch(v):
            raise ValueError("expected classify, distill or package.module:callable")
        return v

    @property
    def custom(self) -> bool:
        """Whether the task is a user's callable (imported and run)."""
        return self.kind not in ("classify", "distill")


def make_task(spec: Task | TaskSpec | str | dict | None = None, *, trust: bool = True) -> Task:
    """The Task a spec names: a Task (returned as is), a TaskSpec, its dict, ``"classify"``,
    ``"distill"`` or ``"package.module:callable"`` (imported and called only with ``trust``).
    Raises RecipeError for a bad spec."""
    if isinstance(spec, Task):
        return spec
    if spec is None:
        spec = TaskSpec()
    try:
        if isinstance(spec, str):
            spec = TaskSpec(kind=spec)
        elif isinstance(spec, dict):
            spec = TaskSpec.model_validate(spec)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise RecipeError(f"task {spec!r}: {exc}") from None
    if not isinstance(spec, TaskSpec):
        raise RecipeError(
            f"task: expected 'classify', 'distill', 'package.module:callable', a TaskSpec or a "
            f"Task, got {type(spec).__name__}"
        )
    if spec.kind == "classify":
        return ClassifyTask(output=spec.output)
    if spec.kind == "distill":
        return DistillTask(distance=spec.distance, output=spec.output, temperature=spec.temperature)
    from ..models.resolve import import_callable

    if not trust:
        raise RecipeError(
            f"task {spec.kind!r} would import and run your code; pass trust=True (or the Task "
            "object itself)"
        )
    task = import_callable(spec.kind, RecipeError, "task")()
    if not isinstance(task, Task):
        raise RecipeError(f"task {spec.kind!r} returned {type(task).__name__}, not a Task")
    if spec.output is not None:
        task.output = spec.output
    return task
