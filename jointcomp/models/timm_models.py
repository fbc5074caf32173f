"""``timm:NAME``: a timm model built by ``timm.create_model(NAME, pretrained=False, **kwargs)``,
never with pretrained weights (a user's trained weights come from their .safetensors file, the
recipe's ``model.weights``). NAME is a registered timm model, optionally with its pretrained
tag (``resnet18.a1_in1k``), which only sets defaults such as the class count."""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

from ..config import short
from ..errors import ModelError

EXTRA = "pip install 'jointcomp[timm]'"
NAME_RE = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?")
# create_model arguments that would read or fetch weights or configs: refused, whatever value
# (``pretrained`` itself is refused unless false)
REFUSED = ("pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


def require_timm(what: str) -> ModuleType:
    """The timm module, or a ModelError naming the extra that installs it."""
    try:
        import timm
    except ImportError as e:
        raise ModelError(f"{what} needs timm, an optional extra: {EXTRA}") from e
    return timm


def timm_call(name: str, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The function that builds ``timm:NAME`` and its keyword arguments, checked: a registered
    name, no pretrained weights, no checkpoint or config files."""
    label = f"timm:{name}"
    timm = require_timm(label)
    if not NAME_RE.fullmatch(name) or not timm.is_model(name):
        raise ModelError(
            f"unknown timm model {short(name)}; timm.list_models() has "
            f"{len(timm.list_models())} names, e.g. resnet18, vit_tiny_patch16_224"
        )
    for key in REFUSED:
        if key in kwargs:
            raise ModelError(
                f"{label}: {key} is not allowed (nothing is downloaded or read while building; "
                "your weights go in model.weights)"
            )
    pretrained = kwargs.get("pretrained", False)
    if pretrained is not False:
        raise ModelError(
            f"{label}: pretrained={short(pretrained)} asks for pretrained weights, which are "
            "never fetched here; give your .safetensors file as model.weights"
        )
    arguments = {k: v for k, v in kwargs.items() if k != "pretrained"}
    return timm.create_model, {"model_name": name, "pretrained": False, **arguments}
