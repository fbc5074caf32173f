"""Shared set-up of the comparison tools: one recipe's data and cached baseline, and stages run
one by one on copies of a model (so a tool can size a later stage from an earlier one's result).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jointcomp.baseline import get_baseline, recipe_data
from jointcomp.recipe import Recipe, validate_recipe
from jointcomp.stages import STAGES, StageContext
from jointcomp.train import evaluate


@dataclass
class Bench:
    """A recipe's data, baseline and teacher, ready for stages."""

    recipe: Recipe
    data: Any
    kwargs: dict[str, Any]
    baseline: nn.Module
    teacher: nn.Module
    out_dir: Path

    def run(
        self,
        model: nn.Module,
        stage: str,
        params: dict[str, Any],
        meta: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> tuple[nn.Module, StageContext]:
        """Apply one stage to a copy of ``model``; returns the result and the stage's context."""
        spec = STAGES[stage].Params.model_validate(params)
        ctx = StageContext(
            recipe=self.recipe,
            data=self.data,
            teacher=self.teacher,
            device=torch.device("cpu"),
            seed=seed,
            stage_index=0,
            stage_name=stage,
            out_dir=self.out_dir,
            builder=self.recipe.model.builder,
            builder_kwargs=self.kwargs,
            meta=copy.deepcopy(meta or {}),
        )
        torch.manual_seed(seed)
        out = STAGES[stage](spec).apply(copy.deepcopy(model), ctx)
        return out.eval(), ctx

    def accuracy(self, model: nn.Module) -> float:
        return evaluate(model, self.data.val, batch_size=self.recipe.data.eval_batch_size)


def nonzero_params(model: nn.Module) -> int:
    """Stored numbers: nonzero parameter entries (zeros of pruned/sparse tensors are positions)."""
    return sum(int((p != 0).sum()) for p in model.parameters())


def setup(raw: dict[str, Any], out_dir: str | Path) -> Bench:
    """Validate ``raw`` (a recipe without stages), load its data, train or load its baseline."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    recipe = validate_recipe({**raw, "stages": []})
    torch.set_num_threads(recipe.threads or 1)
    data, kwargs = recipe_data(recipe)
    baseline, _ = get_baseline(recipe, data, kwargs, device=torch.device("cpu"), log=print)
    teacher = copy.deepcopy(baseline).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return Bench(recipe, data, kwargs, baseline, teacher, out)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
