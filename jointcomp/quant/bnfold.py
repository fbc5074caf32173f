"""Fold batch norms into the conv/linear layer before them (y = γ(Wx + b − μ)/σ + β becomes
W'x + b' with W' = W·γ/σ per output channel), so quantization sees the weights the network
really uses and the BN costs nothing at inference. The folded BN becomes ``nn.Identity``.

conv → BN pairs are found with torch.fx (factorized layers as leaves), or by module order
(consecutive children of an ``nn.Sequential``) when the model cannot be traced.
"""

from __future__ import annotations

import itertools

import torch
from torch import fx, nn

from ..nn.execution import FactorizedModule
from ..nn.lowrank_sparse import LowRankPlusSparse

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
PLAIN = (nn.Conv1d, nn.Conv2d, nn.Linear)
OUTPUT_LAYER = {
    "SVDLinear": "second",
    "SVDConv2d": "second",
    "TuckerConv2d": "last",
    "CPConv2d": "last",
}  # the sub-layer that produces a factorized layer's outputs


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, FactorizedModule) or super().is_leaf_module(m, qualname)


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
        if not isinstance(modules.get(src.target), (*PLAIN, FactorizedModule)):
            skipped.append(
                {
                    "name": node.target,
                    "reason": f"follows a "
                    f"{type(modules.get(src.target)).__name__}, not a conv/linear",
                }
            )
            continue
        if len(src.users) != 1:
            skipped.append(
                {"name": node.target, "reason": f"{src.target}'s output is also used elsewhere"}
            )
            continue
        pairs.append((src.target, node.target))
    return pairs, skipped


def _pairs_by_order(model: nn.Module) -> list[tuple[str, str]]:
    """Consecutive conv → BN children of ``nn.Sequential`` containers: the only place where
    module order is known to be the order of the computation."""
    pairs = []
    for path, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (a, ma), (b, mb) in itertools.pairwise(children):
            if isinstance(mb, BATCH_NORMS) and isinstance(ma, (*PLAIN, FactorizedModule)):
                prefix = f"{path}." if path else ""
                pairs.append((prefix + a, prefix + b))
    return pairs


def _output_layer(module: nn.Module) -> tuple[nn.Module, nn.Parameter | None]:
    """(layer whose output rows the BN scales, the sparse residual to scale alongside)."""
    if isinstance(module, PLAIN):
        return module, None
    if isinstance(module, LowRankPlusSparse):
        inner, _ = _output_layer(module.lowrank)
        return inner, module.sparse
    name = OUTPUT_LAYER.get(type(module).__name__)
    if name is None:
        raise ValueError(
            f"{type(module).__name__} has no per-output-channel factor to fold into "
            "(TT cores mix output channels across modes)"
        )
    return getattr(module, name), None


@torch.no_grad()
def fold_pair(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold ``bn`` (eval statistics) into ``layer`` in place; ValueError when it cannot."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("the batch norm keeps no running statistics")
    out, sparse = _output_layer(layer)
    if out.weight.shape[0] != bn.num_features:
        raise ValueError(
            f"{out.weight.shape[0]} output channels but the batch norm has {bn.num_features}"
        )
    var, mean = bn.running_var.double(), bn.running_mean.double()
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


def fold_batchnorms(model: nn.Module) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Fold every foldable conv → BN pair of ``model`` in place. Returns (folded, skipped),
    each a list of {name, ...} records."""
    try:
        pairs, skipped = _pairs_fx(model)
        found_by = "fx"
    except Exception as exc:  # untraceable control flow: fall back to module order
        pairs, skipped = _pairs_by_order(model), []
        found_by = f"module order (fx: {type(exc).__name__})"
    folded = []
    for layer_name, bn_name in pairs:
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        try:
            fold_pair(layer, bn)
        except ValueError as exc:
            skipped.append({"name": bn_name, "reason": str(exc)})
            continue
        parent, _, attr = bn_name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, nn.Identity())
        folded.append({"name": bn_name, "into": layer_name, "found_by": found_by})
    listed = {s["name"] for s in skipped}
    for name, module in model.named_modules():
        if isinstance(module, BATCH_NORMS) and name not in listed:
            skipped.append({"name": name, "reason": f"no conv/linear found before it ({found_by})"})
    return folded, skipped
