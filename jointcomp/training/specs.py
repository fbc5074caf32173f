"""Training settings: what the baseline trains with, and what each stage's fine-tuning
overrides (``FinetuneSpec``: the same keys, each optional, derived from ``TrainSpec``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, create_model

from ..config import Strict


class DistillSpec(Strict):
    """Knowledge distillation from the uncompressed (baseline) model, or from the model as the
    stage received it."""

    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation term")
    teacher: Literal["baseline", "input"] | None = Field(
        None,
        description="baseline (unset): the uncompressed model; input: a frozen copy of the model "
        "as the stage received it (e.g. the float network that QAT quantizes)",
    )


class AugmentSpec(Strict):
    """Random changes to each training image, drawn anew every epoch (image datasets only). The
    teacher of distillation sees the same changed image, so it teaches on new inputs each epoch."""

    shift: int = Field(
        0,
        ge=0,
        le=16,
        description="translate by up to this many pixels each way (edges replicated)",
    )
    flip: bool = Field(False, description="mirror left-right with probability 1/2")


Optimizer = Literal["adam", "adamw", "sgd"]
Schedule = Literal["cosine", "constant", "step"]


class TrainSpec(Strict):
    """Training settings: the baseline uses them as they are; stages fine-tune with them unless a
    stage's own ``finetune`` overrides some."""

    epochs: int = Field(5, ge=0)
    optimizer: Optimizer = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Schedule = "cosine"
    step_size: int = Field(10, ge=1, description="epochs per lr step (schedule: step)")
    gamma: float = Field(0.1, gt=0, le=1, description="lr factor per step (schedule: step)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    distill: DistillSpec | None = None
    augment: AugmentSpec | None = Field(None, description="training-image augmentation")
    max_batches: int | None = Field(None, ge=1, description="stop each epoch after N batches")


# keys a stage may switch off with ``false`` (``distill: false``: no distillation there)
SWITCHES = ("distill", "augment")


class _Overrides(Strict):
    def merged(self, base: TrainSpec) -> TrainSpec:
        """``base`` with this spec's set keys applied (``distill: false`` and ``augment: false``
        turn those off)."""
        data = base.model_dump()
        for key, value in self.model_dump(exclude_none=True).items():
            data[key] = None if (key in SWITCHES and value is False) else value
        return TrainSpec.model_validate(data)


def _optional(name: str, field: Any) -> tuple[Any, Any]:
    """TrainSpec's field ``name`` as an optional override (None: inherit), its constraints kept."""
    inner = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    if name in SWITCHES:
        inner = inner | Literal[False]
    return inner | None, Field(None, description=field.description)


FinetuneSpec = create_model(
    "FinetuneSpec",
    __base__=_Overrides,
    __doc__="A stage's overrides of the recipe's ``train`` settings; unset keys inherit, "
    "``distill: false`` / ``augment: false`` switch those off.",
    **{name: _optional(name, f) for name, f in TrainSpec.model_fields.items()},
)
