"""Shared helpers of the quantize tests: a stage context on digits, and small_cnn variants with
every factorized layer type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from jointcomp.data import load_data
from jointcomp.models import build_model, data_kwargs
from jointcomp.nn import decompose
from jointcomp.recipe import validate_recipe
from jointcomp.stages import StageContext

from .conftest import tiny_recipe

KWARGS = data_kwargs("zoo:small_cnn", (1, 8, 8), 10)
_DATA: list[Any] = []


def digits() -> Any:
    if not _DATA:
        _DATA.append(load_data("digits", None, 0.2, 0, None))
    return _DATA[0]


def stage_ctx(tmp_path: Path, meta: dict[str, Any] | None = None, **train: Any) -> StageContext:
    train = {"epochs": 1, "lr": 0.002, "max_batches": 3, **train}
    recipe = validate_recipe(tiny_recipe(tmp_path, stages=[], train=train))
    return StageContext(
        recipe=recipe,
        data=digits(),
        teacher=None,
        device=torch.device("cpu"),
        seed=0,
        stage_index=0,
        stage_name="quantize",
        out_dir=tmp_path,
        builder="zoo:small_cnn",
        builder_kwargs=KWARGS,
        meta=dict(meta or {}),
    )


# every factorized layer type: SVD (channel, spatial, linear), Tucker-2, CP, TT (conv, linear),
# low-rank + sparse around Tucker, CP and SVD
LAYOUTS: dict[str, dict[str, tuple[str, Any, float, dict]]] = {
    "svd-tucker-cp": {
        "block1.0": ("svd", 2, 0.0, {}),
        "block2.0": ("tucker2", [8, 4], 0.0, {}),
        "block3.0": ("cp", 6, 0.0, {}),
        "fc": ("svd", 4, 0.0, {}),
    },
    "spatial-tt": {
        "block2.0": ("svd_spatial", 4, 0.0, {}),
        "block3.0": ("tt", 2, 0.0, {"tt_cores": 3}),
        "fc": ("tt", 2, 0.0, {"tt_cores": 2}),
    },
    "lowrank-sparse": {
        "block2.0": ("tucker2", [8, 4], 0.05, {}),
        "block3.0": ("cp", 4, 0.05, {}),
        "fc": ("svd", 3, 0.1, {}),
    },
}


def factorized_small_cnn(layout: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("zoo:small_cnn", KWARGS).eval()
    with torch.no_grad():  # BN statistics that are not the identity, so folding matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    for name, (fmt, rank, sparse, options) in LAYOUTS[layout].items():
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        new, _ = decompose(getattr(owner, attr), fmt, rank, sparse, name=name, options=options)
        setattr(owner, attr, new)
    return model.eval()
