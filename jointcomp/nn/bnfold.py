"""Batch-norm folding, for every layer type: a batch norm that only reads a conv/linear layer's
output becomes part of the layer (y = γ(Wx + b − μ)/σ + β = W'x + b') and is replaced by
``nn.Identity``, so quantization sees the weights the network really uses and inference pays
nothing for it.

Plain layers and SVD/Tucker/CP layers take the factor into the weight rows of the sub-layer
that produces their outputs; T-Basis layers, whose cores are shared, into a per-channel output
scale (``out_scale``) and their bias. Layer → batch-norm pairs come from a torch.fx trace (layers
jointcomp or brevitas defines, and parametrized ones, as leaves), or, where the model cannot be
traced, from consecutive children of an ``nn.Sequential``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from .execution import FactorizedModule
from .lowrank_sparse import LowRankPlusSparse
from .modules import set_module

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
PLAIN = (nn.Conv1d, nn.Conv2d, nn.Linear)
LAYERS = (*PLAIN, FactorizedModule)
OUTPUT_LAYER = {
    "SVDLinear": "second",
    "SVDConv2d": "second",
    "TuckerConv2d": "last",
    "CPConv2d": "last",
}  # the sub-layer that produces a factorized layer's outputs


class _Tracer(fx.Tracer):
    """Factorized layers are leaves, and so are modules fx cannot look into (parametrized
    tensors, brevitas layers)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (
            isinstance(m, FactorizedModule)
            or parametrize.is_parametrized(m)
            or type(m).__module__.startswith("brevitas.")
            or super().is_leaf_module(m, qualname)
        )


def _pairs_fx(model: nn.Module) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    graph = _Tracer().trace(model)
    modules = dict(model.named_modules())
    pairs, skipped = [], []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), BATCH_NORMS):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or src.op != "call_module":
            skipped.append({"name": node.target, "reason": "its input is not a layer's output"})
            continue
        layer = modules.get(src.target)
        if not isinstance(layer, LAYERS):
            skipped.append(
                {"name": node.target, "reason": f"follows a {type(layer).__name__}, not a layer"}
            )
            continue
        if len(src.users) != 1:
            skipped.append(
                {"name": node.target, "reason": f"{src.target}'s output is also used elsewhere"}
            )
            continue
        pairs.append((str(src.target), str(node.target)))
    return pairs, skipped


def _pairs_by_order(model: nn.Module) -> list[tuple[str, str]]:
    """Consecutive layer → BN children of ``nn.Sequential`` containers: the only place where
    module order is known to be the order of the computation."""
    pairs = []
    for path, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (a, ma), (b, mb) in itertools.pairwise(children):
            if isinstance(mb, BATCH_NORMS) and isinstance(ma, LAYERS):
                prefix = f"{path}." if path else ""
                pairs.append((prefix + a, prefix + b))
    return pairs


def batchnorm_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], list[dict[str, str]], str]:
    """(layer, batch norm) pairs where the batch norm reads only that layer's output and nothing
    else reads it; the batch norms that are not, with reasons; and how the pairs were found."""
    try:
        pairs, skipped = _pairs_fx(model)
        return pairs, skipped, "fx"
    except Exception as exc:  # untraceable control flow: fall back to module order
        return _pairs_by_order(model), [], f"module order (fx: {type(exc).__name__})"


def output_layer(module: nn.Module) -> tuple[nn.Module, nn.Parameter | None]:
    """(layer whose output rows the BN scales, the sparse residual to scale alongside)."""
    if isinstance(module, PLAIN):
        return module, None
    if isinstance(module, LowRankPlusSparse):
        inner, _ = output_layer(module.lowrank)
        return inner, module.sparse
    name = OUTPUT_LAYER.get(type(module).__name__)
    if name is None:
        raise ValueError(
            f"{type(module).__name__} has no per-output-channel factor to fold into "
            "(TT cores mix output channels across modes)"
        )
    return getattr(module, name), None


def _refuse_quantized(module: nn.Module, names: tuple[str, ...]) -> None:
    """ValueError when a tensor the fold would rewrite is already quantized: its stored
    integers cannot take the batch norm's factor (writing to the value it computes would be
    lost)."""
    for name in names:
        if parametrize.is_parametrized(module, name):
            raise ValueError(f"its {name} is already quantized: fold before quantizing")


@torch.no_grad()
def fold_pair(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold ``bn`` (eval statistics) into ``layer`` in place; ValueError when it cannot (the
    layer is left as it was)."""
    if hasattr(layer, "fold_batchnorm"):  # T-Basis: into its output scale and bias
        _refuse_quantized(layer, ("out_scale", "bias"))
        layer.fold_batchnorm(bn)
        return
    out, sparse = output_layer(layer)
    _refuse_quantized(out, ("weight", "bias"))
    if sparse is not None:
        _refuse_quantized(layer, ("sparse",))
    if out.weight.shape[0] != bn.num_features:
        raise ValueError(
            f"{out.weight.shape[0]} output channels but the batch norm has {bn.num_features}"
        )
    var, mean = bn.running_var, bn.running_mean
    if var is None or mean is None:
        raise ValueError("the batch norm keeps no running statistics")
    var, mean = var.double(), mean.double()
    gamma = bn.weight.double() if bn.affine else torch.ones_like(var)
    beta = bn.bias.double() if bn.affine else torch.zeros_like(var)
    factor = gamma / torch.sqrt(var + bn.eps)
    shape = [-1] + [1] * (out.weight.dim() - 1)
    dtype = out.weight.dtype
    out.weight.copy_((out.weight.double() * factor.reshape(shape)).to(dtype))
    if sparse is not None:
        sparse.copy_((sparse.double() * factor.reshape([-1] + [1] * (sparse.dim() - 1))).to(dtype))
    bias = out.bias.double() if out.bias is not None else torch.zeros_like(mean)
    new_bias = ((bias - mean) * factor + beta).to(dtype)
    if out.bias is None:
        out.bias = nn.Parameter(new_bias.to(out.weight.device))
    else:
        out.bias.copy_(new_bias)


def fold_batchnorms(
    model: nn.Module, select: Callable[[str], bool] | None = None
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Fold every foldable layer → batch-norm pair of ``model`` in place (only pairs whose layer
    name ``select`` accepts, when given). Returns (folded, not folded), each a list of records
    ``{name: the batch norm, into | reason}``."""
    pairs, skipped, found_by = batchnorm_pairs(model)
    folded = []
    for layer_name, bn_name in pairs:
        if select is not None and not select(layer_name):
            skipped.append({"name": bn_name, "reason": f"{layer_name} is out of scope"})
            continue
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        try:
            fold_pair(layer, bn)
        except ValueError as exc:
            skipped.append({"name": bn_name, "reason": str(exc)})
            continue
        set_module(model, bn_name, nn.Identity())
        folded.append({"name": bn_name, "into": layer_name, "found_by": found_by})
    listed = {s["name"] for s in skipped}
    for name, module in model.named_modules():
        if isinstance(module, BATCH_NORMS) and name not in listed:
            skipped.append({"name": name, "reason": f"no layer found before it ({found_by})"})
    return folded, skipped
