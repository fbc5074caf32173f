"""Shared set-up of the comparison tools: one recipe's data and cached baseline, and stages run
one by one on copies of a model (so a tool can size a later stage from an earlier one's result),
each with the Context a recipe run gives it (jointcomp/pipeline.py's ``_stage_context``).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from jointcomp.baseline import get_baseline, recipe_data
from jointcomp.batches import Batches
from jointcomp.context import Context, Step
from jointcomp.recipe import Recipe, validate_recipe
from jointcomp.stages import apply_stage, stage_config
from jointcomp.training import Trainer, evaluate, frozen_copy


@dataclass
class Bench:
    """A recipe's data, baseline and teacher, ready for stages."""

    recipe: Recipe
    data: Any
    kwargs: dict[str, Any]
    baseline: nn.Module
    teacher: nn.Module

    def context(self, name: str, seed: int = 0) -> Context:
        """What a recipe run gives a stage: calibration batches from the training data,
        validation batches from the validation split, fine-tuning with the recipe's train
        settings distilling from the baseline (no metric: the tools measure themselves)."""
        batch = self.recipe.data.batch_size
        val = self.data.val if len(self.data.val) else None
        return Context(
            data=Batches(self.data.train, val, batch_size=batch),
            finetune=Trainer(
                self.data.train, self.recipe.train, teacher=self.teacher, batch_size=batch
            ),
            seed=seed,
            name=name,
        )

    def run(self, model: nn.Module, stage: str, params: dict[str, Any], seed: int = 0) -> Step:
        """Apply one stage (recipe form: its name and params) to a copy of ``model``."""
        torch.manual_seed(seed)
        config = stage_config({stage: params})
        out, record = apply_stage(copy.deepcopy(model), config, self.context(stage, seed))
        return Step(out.eval(), record)

    def accuracy(self, model: nn.Module) -> float:
        return evaluate(model, self.data.val, batch_size=self.recipe.data.eval_batch_size)


def nonzero_params(model: nn.Module) -> int:
    """Stored numbers: nonzero parameter entries (zeros of pruned/sparse tensors are positions)."""
    return sum(int((p != 0).sum()) for p in model.parameters())


def setup(raw: dict[str, Any]) -> Bench:
    """Validate ``raw`` (a recipe without stages), load its data, train or load its baseline."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    recipe = validate_recipe({**raw, "stages": []})
    torch.set_num_threads(recipe.threads or 1)
    data, kwargs = recipe_data(recipe)
    baseline, _ = get_baseline(recipe, data, kwargs, device=torch.device("cpu"), log=print)
    return Bench(recipe, data, kwargs, baseline, frozen_copy(baseline))
