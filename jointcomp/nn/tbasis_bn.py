"""The batch norms that follow T-Basis layers, and their folding into the layers' per-channel
output scale and bias (``share``'s and ``quantize``'s ``fold_bn``): the file then holds no
running statistics for them, and the quantizer sees the weights the network really uses."""

from __future__ import annotations

from itertools import pairwise

from torch import fx, nn
from torch.nn.utils import parametrize

from .execution import FactorizedModule
from .tbasis import TBASIS_LAYERS

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class _Tracer(fx.Tracer):
    """Factorized layers are leaves, and so are the modules QAT puts in (brevitas layers and
    parametrized tensors, which fx cannot trace): mid-QAT the graph is the float one's."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (
            isinstance(m, FactorizedModule)
            or parametrize.is_parametrized(m)
            or type(m).__module__.startswith("brevitas.")
            or super().is_leaf_module(m, qualname)
        )


def batchnorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, batch norm) pairs where the batch norm's only input is a T-Basis layer's output
    and nothing else reads that output: from the traced graph, or, for a model fx cannot
    trace, consecutive children of an ``nn.Sequential``."""
    modules = dict(model.named_modules())
    try:
        graph = _Tracer().trace(model)
    except Exception:  # untraceable control flow: only Sequential order is certain
        pairs = []
        for path, module in model.named_modules():
            if isinstance(module, nn.Sequential):
                children = list(module.named_children())
                for (a, ma), (b, mb) in pairwise(children):
                    if isinstance(ma, TBASIS_LAYERS) and isinstance(mb, BATCH_NORMS):
                        prefix = f"{path}." if path else ""
                        pairs.append((prefix + a, prefix + b))
        return pairs
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), BATCH_NORMS):
            continue
        src = node.args[0] if node.args else None
        if (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and isinstance(modules.get(src.target), TBASIS_LAYERS)
            and len(src.users) == 1
        ):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def fold_batchnorms(model: nn.Module) -> tuple[list[str], list[dict[str, str]]]:
    """Fold every batch norm that directly follows a T-Basis layer into it (in place; the batch
    norm becomes ``nn.Identity``). Returns the folded names and the skipped with reasons."""
    folded, skipped = [], []
    for layer_name, bn_name in batchnorm_pairs(model):
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        try:
            layer.fold_batchnorm(bn)
        except ValueError as exc:
            skipped.append({"name": bn_name, "reason": str(exc)})
            continue
        parent, _, attr = bn_name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, nn.Identity())
        folded.append(bn_name)
    return folded, skipped
