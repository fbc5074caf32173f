"""The task a recipe or a Python call names, and the Task object it stands for."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import Strict
from ..errors import RecipeError
from .base import Task
from .classify import ClassifyTask
from .distill import DistillTask


class TaskSpec(Strict):
    """The task of a recipe: ``classify`` (labels, top-1), ``distill`` (label-free: the
    compressed model's outputs against the original's) or a user's
    ``package.module:callable`` returning a Task."""

    kind: Literal["classify", "distill"] | str = Field(
        "classify", description="classify | distill | package.module:callable (needs trust)"
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


def make_task(spec: TaskSpec | str | dict | None = None, *, trust: bool = True) -> Task:
    """The Task a spec names (a TaskSpec, its dict, ``"classify"``, ``"distill"`` or
    ``"package.module:callable"``)."""
    if spec is None:
        spec = TaskSpec()
    elif isinstance(spec, str):
        spec = TaskSpec(kind=spec)
    elif isinstance(spec, dict):
        spec = TaskSpec.model_validate(spec)
    if spec.kind == "classify":
        return ClassifyTask(output=spec.output)
    if spec.kind == "distill":
        return DistillTask(distance=spec.distance, output=spec.output, temperature=spec.temperature)
    from ..models.resolve import import_callable

    if not trust:
        raise RecipeError(
            f"task {spec.kind!r} would import and run your code; trust it with --trust or "
            "trust=True"
        )
    task = import_callable(spec.kind, RecipeError, "task")()
    if not isinstance(task, Task):
        raise RecipeError(f"task {spec.kind!r} returned {type(task).__name__}, not a Task")
    return task
