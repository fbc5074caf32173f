"""Shared set-up of the stage tests: a stage Context over a DataBundle (calibration from its
training split, validation and the metric from its validation split, a Trainer with the given
settings), as a recipe run builds one."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from jointcomp.batches import Batches
from jointcomp.context import Context
from jointcomp.data import DataBundle, load_data
from jointcomp.training import Trainer, evaluate, frozen_copy

_DIGITS: list[DataBundle] = []


def digits_bundle() -> DataBundle:
    """Digits in its three roles as the stage tests use them (20% held out as the test split,
    20% of the rest as validation), loaded once per process."""
    if not _DIGITS:
        _DIGITS.append(load_data("digits", None, 0.2, 0, None, test_split=0.2))
    return _DIGITS[0]


def bundle_context(
    data: DataBundle,
    *,
    train: dict[str, Any] | None = None,
    teacher: nn.Module | None = None,
    batch_size: int = 64,
    seed: int = 0,
    name: str = "stage",
) -> Context:
    """A Context on ``data``: fine-tuning with ``train`` (a TrainSpec dict; None: no
    fine-tuning), distilling from ``teacher`` when the settings ask."""
    trainer = None
    if train is not None:
        trainer = Trainer(data.train, train, teacher=teacher, batch_size=batch_size)
    return Context(
        data=Batches(data.train, data.val, batch_size=batch_size),
        finetune=trainer,
        device=torch.device("cpu"),
        seed=seed,
        evaluate=lambda m: evaluate(m, data.val, batch_size=512),
        name=name,
    )


def frozen(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` (a distillation teacher)."""
    return frozen_copy(model)
