"""Training and measuring: the settings (``TrainSpec``, a stage's ``FinetuneSpec``), the fine-tune
loop (``fit``), the fine-tune callable stages use (``Trainer``) and measurements without training
(``evaluate``, ``measure_task``, ``evaluate_loss``, ``reference_outputs``, ``run_with_hooks``,
``recalibrate_batchnorm``)."""

from .evaluate import (
    evaluate,
    evaluate_loss,
    measure_task,
    recalibrate_batchnorm,
    reference_outputs,
    run_with_hooks,
)
from .fit import ExtraLoss, FitResult, fit, is_main_process, world
from .specs import AugmentSpec, DistillSpec, FinetuneSpec, TrainSpec
from .trainer import Finetune, Trainer, asks_distillation, asks_input_teacher, frozen_copy

__all__ = [
    "AugmentSpec",
    "DistillSpec",
    "ExtraLoss",
    "Finetune",
    "FinetuneSpec",
    "FitResult",
    "TrainSpec",
    "Trainer",
    "asks_distillation",
    "asks_input_teacher",
    "evaluate",
    "evaluate_loss",
    "fit",
    "frozen_copy",
    "is_main_process",
    "measure_task",
    "recalibrate_batchnorm",
    "reference_outputs",
    "run_with_hooks",
    "world",
]
