"""The stage registry: every name a recipe's ``stages`` list may use, with its config and its
function ``(model, config, context) -> Step``. Each stage module holds one config and one
function and imports no other stage; ``encode``, which needs a path and a builder, is run by
whoever writes the file (``jointcomp.pipeline``, ``jointcomp.compress``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from ..config import StageConfig
from ..context import Context, Step
from ..training import Trainer, asks_input_teacher

# the stage modules stay attributes of the package (jointcomp.stages.quantize is the module)
from . import decompose, fold, prune, quantize, regularize, share
from .decompose import DecomposeConfig
from .encode import EncodeConfig
from .fold import FoldConfig
from .prune import PruneConfig
from .quantize import QuantizeConfig
from .regularize import RegularizeConfig
from .share import ShareConfig

StageFn = Callable[[nn.Module, Any, Context], Step]


@dataclass(frozen=True)
class Stage:
    """One registered stage: its recipe name, its config class, and its function (None for
    ``encode``, which must be last)."""

    name: str
    config: type[StageConfig]
    fn: StageFn | None

    @property
    def terminal(self) -> bool:
        return self.fn is None


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("prune", PruneConfig, prune.prune),
        Stage("regularize", RegularizeConfig, regularize.regularize),
        Stage("decompose", DecomposeConfig, decompose.decompose),
        Stage("share", ShareConfig, share.share),
        Stage("fold", FoldConfig, fold.fold),
        Stage("quantize", QuantizeConfig, quantize.quantize),
        Stage("encode", EncodeConfig, None),
    )
}


def stage_config(entry: StageConfig | Mapping[str, Any]) -> StageConfig:
    """A stage config from a config object or the recipe form ``{name: {params}}`` (pydantic's
    ValidationError for bad params, KeyError naming the allowed stages for an unknown name)."""
    if isinstance(entry, StageConfig):
        return entry
    if not isinstance(entry, Mapping) or len(entry) != 1:
        raise ValueError(
            f"a stage is one mapping {{name: {{params}}}} with a name of: {', '.join(STAGES)}"
        )
    ((name, params),) = entry.items()
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; allowed: {', '.join(STAGES)}")
    return STAGES[name].config.model_validate(params or {})


def stage_seed(seed: int, index: int) -> int:
    """The seed of the stage at position ``index`` of a run seeded ``seed`` (a recipe run and
    ``compress`` alike), so a resumed run draws the same numbers as an uninterrupted one."""
    return seed * 7919 + 101 * (index + 1)


def apply_stage(model: nn.Module, config: StageConfig, context: Context) -> Step:
    """Run one (non-terminal) stage. Fine-tuning that distils from the stage's input (``distill:
    {teacher: input}`` in the trainer's settings or the stage's) gets a frozen copy of it."""
    stage = STAGES[config.stage]
    if stage.fn is None:
        raise ValueError(f"{stage.name} writes a file: use jointcomp.save (or compress's path=)")
    finetune = context.finetune
    if isinstance(finetune, Trainer) and asks_input_teacher(finetune.spec, config):
        context = replace(context, finetune=finetune.for_input(model))
    return stage.fn(model, config, context)


__all__ = [
    "STAGES",
    "DecomposeConfig",
    "EncodeConfig",
    "FoldConfig",
    "PruneConfig",
    "QuantizeConfig",
    "RegularizeConfig",
    "ShareConfig",
    "Stage",
    "apply_stage",
    "stage_config",
    "stage_seed",
]
