"""Shared helpers of the quantize and fold tests: a stage context on digits, small_cnn variants
with every factorized layer type, and a T-Basis small_cnn whose layers' magnitudes lie far
apart."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from jointcomp.context import Context, Step
from jointcomp.models import build_model, data_kwargs
from jointcomp.nn import decompose
from jointcomp.stages import FoldConfig, QuantizeConfig, apply_stage

from .stage_util import bundle_context, digits_bundle

KWARGS = data_kwargs("zoo:small_cnn", (1, 8, 8), 10)


def digits() -> Any:
    return digits_bundle()


def stage_ctx(**train: Any) -> Context:
    """A context on digits fine-tuning for at most 3 batches (``train`` overrides that)."""
    return bundle_context(digits(), train={"epochs": 1, "lr": 0.002, "max_batches": 3, **train})


def run_quantize(model: nn.Module, params: dict[str, Any], **train: Any) -> Step:
    """The quantize stage with ``params`` (the recipe form) on ``stage_ctx(**train)``."""
    return apply_stage(model, QuantizeConfig.model_validate(params), stage_ctx(**train))


def run_fold(model: nn.Module, params: dict[str, Any] | None = None) -> Step:
    """The fold stage with ``params`` (the recipe form) on ``stage_ctx()``."""
    return apply_stage(model, FoldConfig.model_validate(params or {}), stage_ctx())


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


def randomize_batchnorms(model: nn.Module) -> nn.Module:
    """BN statistics and affine parameters that are not the identity, so folding matters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def small_cnn(seed: int = 0) -> nn.Module:
    """The plain small_cnn on 8×8 digits, its batch norms randomized."""
    torch.manual_seed(seed)
    return randomize_batchnorms(build_model("zoo:small_cnn", KWARGS))


def factorized_small_cnn(layout: str, seed: int = 0) -> nn.Module:
    model = small_cnn(seed)
    for name, (fmt, rank, sparse, options) in LAYOUTS[layout].items():
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        new, _ = decompose(getattr(owner, attr), fmt, rank, sparse, name=name, options=options)
        setattr(owner, attr, new)
    return model.eval()


def uneven_tbasis_model() -> nn.Module:
    """small_cnn with block2.0, block3.0 and fc sharing one T-Basis, its layers' magnitudes far
    apart (as a fit leaves them) and batch norms whose statistics describe those magnitudes."""
    from .test_tbasis_layers import shared_small_cnn

    model, _, table = shared_small_cnn(seed=1)
    with torch.no_grad():
        rows = model.get_submodule("block2.0").row_list
        table.coef[rows[0]].mul_(40.0)  # a large row in one layer
        table.rank_scale[rows[-1]].mul_(0.02)  # a small one in the same layer
        table.rank_scale[model.get_submodule("block3.0").row_list[0]].mul_(5.0)
    model.train()
    with torch.no_grad():
        for _ in range(20):  # running statistics that match these magnitudes
            model(torch.randn(32, 1, 8, 8))
    return model.eval()
