"""The stage registry: every name a recipe's ``stages`` list may use."""

from __future__ import annotations

from .base import Stage, StageContext, StageParams
from .encode import EncodeStage
from .prune import PruneStage

STAGES: dict[str, type[Stage]] = {
    cls.name: cls
    for cls in (PruneStage, EncodeStage)
}

__all__ = ["STAGES", "Stage", "StageContext", "StageParams"]
