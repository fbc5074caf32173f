"""Stage ``regularize``: compression-aware training. Fine-tunes with a penalty on each chosen
weight's singular values (effective rank, nuclear norm, Hoyer or Gini; Ou et al. 2023 §II-C) so
that a later ``decompose`` with ``rank: indicator:X`` can cut many singular values cheaply."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import ModelError
from ..nn import FactorizedModule
from ..recipe import FinetuneSpec
from ..tensor import (
    effective_rank_penalty,
    gini_penalty,
    hoyer_penalty,
    nuclear_penalty,
    rank_for_indicator,
    singular_values,
)
from .base import Stage, StageContext, StageParams, classifier_names, match_any

PENALTIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "effective_rank": effective_rank_penalty,
    "nuclear": nuclear_penalty,
    "hoyer": hoyer_penalty,
    "gini": gini_penalty,
}


class RegularizeParams(StageParams):
    measure: Literal["effective_rank", "nuclear", "hoyer", "gini"] = "effective_rank"
    weight: float = Field(0.01, ge=0, description="multiplier of the mean per-layer penalty")
    normalize: bool = Field(
        True,
        description="divide each layer's penalty by its value at the start, so layers of "
        "different sizes and the four measures weigh alike",
    )
    layers: list[str] = Field(default_factory=lambda: ["*"], description="layer name patterns")
    skip: list[str] = Field(default_factory=list)
    skip_classifier: bool = False
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


class RegularizeStage(Stage):
    name = "regularize"
    Params = RegularizeParams

    def apply(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        p: RegularizeParams = self.params  # type: ignore[assignment]
        skip = set(classifier_names(model, ctx.data.num_classes)) if p.skip_classifier else set()
        targets = [
            (n, m)
            for n, m in model.named_modules()
            if (type(m) in (nn.Linear, nn.Conv2d) or isinstance(m, FactorizedModule))
            and match_any(n, p.layers)
            and not match_any(n, p.skip)
            and n not in skip
            and not any(
                n.startswith(f"{o}.")
                for o, om in model.named_modules()
                if isinstance(om, FactorizedModule) and o != n
            )
        ]
        if not targets:
            raise ModelError("regularize: no Linear/Conv2d layer matches layers/skip")
        penalty = PENALTIES[p.measure]
        with torch.no_grad():
            scale = {n: float(penalty(_weight(m))) if p.normalize else 1.0 for n, m in targets}
        scale = {n: (v if v > 0 else 1.0) for n, v in scale.items()}
        before = {n: _summary(_weight(m), p.indicator) for n, m in targets}

        def extra_loss(_: nn.Module) -> torch.Tensor:
            total = sum(penalty(_weight(m)) / scale[n] for n, m in targets)
            return p.weight * total / len(targets)

        fit = ctx.finetune(
            model, p.finetune, description=f"regularize {p.measure}", extra_loss=extra_loss
        )
        with torch.no_grad():
            final = float(extra_loss(model)) / p.weight if p.weight else float("nan")
        ctx.record.update(
            measure=p.measure,
            weight=p.weight,
            finetune_loss=fit.loss,
            penalty_after=final,
            layers=[
                {"name": n, "before": before[n], "after": _summary(_weight(m), p.indicator)}
                for n, m in targets
            ],
        )
        ctx.log(f"{p.measure} on {len(targets)} layers, mean normalized penalty {final:.3f}")
        return model
