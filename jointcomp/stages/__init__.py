"""The stage registry: every name a recipe's ``stages`` list may use."""

from __future__ import annotations

from .base import Stage, StageContext, StageParams
from .decompose import DecomposeStage
from .encode import EncodeStage
from .prune import PruneStage
from .quantize import QuantizeStage
from .regularize import RegularizeStage
from .share import ShareStage

STAGES: dict[str, type[Stage]] = {
    cls.name: cls
    for cls in (PruneStage, RegularizeStage, DecomposeStage, ShareStage, QuantizeStage, EncodeStage)
}

__all__ = ["STAGES", "Stage", "StageContext", "StageParams"]
