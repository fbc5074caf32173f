"""Stage ``regularize``: compression-aware training. Fine-tunes with a penalty on each chosen
weight's singular values (effective rank, nuclear norm, Hoyer or Gini; Ou et al. 2023 §II-C) so
that a later ``decompose`` with ``rank: indicator:X`` can cut many singular values cheaply.

Record: ``measure``, ``weight``, ``finetune_loss``, ``penalty_after`` (the mean normalized
penalty) and per layer the ranks at each ``indicator`` threshold before and after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..config import Scope, StageConfig
from ..context import Context, Step
from ..errors import ModelError
from ..nn import FactorizedModule
from ..nn.modules import classifier_names
from ..tensor import (
    effective_rank_penalty,
    gini_penalty,
    hoyer_penalty,
    nuclear_penalty,
    rank_for_indicator,
    singular_values,
)
from ..training import FinetuneSpec

PENALTIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "effective_rank": effective_rank_penalty,
    "nuclear": nuclear_penalty,
    "hoyer": hoyer_penalty,
    "gini": gini_penalty,
}


class RegularizeConfig(StageConfig):
    """Which sparsity measure of the singular values to penalize, how much, and where."""

    stage = "regularize"

    measure: Literal["effective_rank", "nuclear", "hoyer", "gini"] = "effective_rank"
    weight: float = Field(0.01, ge=0, description="multiplier of the mean per-layer penalty")
    normalize: bool = Field(
        True,
        description="divide each layer's penalty by its value at the start, so layers of "
        "different sizes and the four measures weigh alike",
    )
    scope: Scope = Field(default_factory=Scope, description="the layers to regularize")
    indicator: list[float] = Field(
        default_factory=lambda: [0.05, 0.1, 0.2],
        description="spectral-norm thresholds whose ranks the record reports",
    )
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec)


def _weight(module: nn.Module) -> torch.Tensor:
    if isinstance(module, FactorizedModule):
        return module.reconstruct_weight()
    return module.weight


def _summary(weight: torch.Tensor, thresholds: list[float]) -> dict[str, object]:
    s = singular_values(weight.detach().cpu())
    return {f"rank@{t:g}": rank_for_indicator(s, t) for t in thresholds} | {"full": len(s)}


def _targets(model: nn.Module, config: RegularizeConfig, context: Context):
    classifier = set()
    if config.scope.exclude_classifier:
        classifier = set(classifier_names(model, context.example()))
    factorized = [o for o, om in model.named_modules() if isinstance(om, FactorizedModule)]
    return [
        (n, m)
        for n, m in model.named_modules()
        if (type(m) in (nn.Linear, nn.Conv2d) or isinstance(m, FactorizedModule))
        and config.scope.selects(n)
        and n not in classifier
        and not any(n.startswith(f"{o}.") for o in factorized if o != n)
    ]


def regularize(model: nn.Module, config: RegularizeConfig, context: Context) -> Step:
    """Fine-tune ``model`` with the singular-value penalty added to the loss."""
    if context.finetune is None:
        raise ModelError("regularize trains with a penalty: it needs finetune= (a Trainer)")
    targets = _targets(model, config, context)
    if not targets:
        raise ModelError("regularize: no Linear/Conv2d layer is in scope")
    penalty = PENALTIES[config.measure]
    with torch.no_grad():
        scale = {n: float(penalty(_weight(m))) if config.normalize else 1.0 for n, m in targets}
    scale = {n: (v if v > 0 else 1.0) for n, v in scale.items()}
    before = {n: _summary(_weight(m), config.indicator) for n, m in targets}

    def extra_loss(_: nn.Module) -> torch.Tensor:
        total = sum(penalty(_weight(m)) / scale[n] for n, m in targets)
        return config.weight * total / len(targets)

    fit = context.train(
        model,
        config.finetune,
        description=f"regularize {config.measure}",
        extra_loss=extra_loss,
    )
    with torch.no_grad():
        final = float(extra_loss(model)) / config.weight if config.weight else float("nan")
    record = {
        "measure": config.measure,
        "weight": config.weight,
        "finetune_loss": fit.loss if fit else None,
        "penalty_after": final,
        "layers": [
            {"name": n, "before": before[n], "after": _summary(_weight(m), config.indicator)}
            for n, m in targets
        ],
    }
    context.log(f"{config.measure} on {len(targets)} layers, mean normalized penalty {final:.3f}")
    return Step(model, record)
