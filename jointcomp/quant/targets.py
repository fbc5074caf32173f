"""Which tensors of a model the quantize stage touches, and what kind each is.

Kinds: ``factors`` (tensors inside factorized layers: the convs/linears SVD, Tucker and CP are
made of, TT cores), ``sparse_values`` (the residual of a low-rank + sparse layer), ``weights``
(plain conv/linear weights), ``embeddings`` (the tables of ``nn.Embedding`` / ``nn.EmbeddingBag``:
one row per token, so a per-channel scale is a scale per token), ``biases`` and ``norms``
(affine parameters of normalization layers). A target is quantized either through its owning
module (``module_level``: a Conv/Linear whose weight brevitas can quantize as a
QuantConv/QuantLinear) or as a bare parameter (TT cores, sparse residuals, embeddings, biases,
norms).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..nn.execution import FactorizedModule

KINDS = ("factors", "sparse_values", "weights", "embeddings", "biases", "norms")
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
EMBEDDING_LAYERS = (nn.Embedding, nn.EmbeddingBag)
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


@dataclass
class Target:
    """One tensor to quantize: ``module_path``'s tensor ``tensor`` (a ParameterList index for
    TT cores). ``layer`` is the layer it belongs to for reports (the outermost factorized layer
    or the plain layer); ``fixed_zeros``: its zero pattern must survive (pruned weights, sparse
    residuals)."""

    module_path: str
    tensor: str
    kind: str
    layer: str
    module_level: bool
    fixed_zeros: bool
    channel_axis: int
    shape: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.module_path}.{self.tensor}" if self.module_path else self.tensor

    def module(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.module_path) if self.module_path else model

    def value(self, model: nn.Module) -> torch.Tensor:
        return getattr(self.module(model), self.tensor)


def _channel_axis(shape: torch.Size) -> int:
    """Output channels (axis 0) for weights; for a TT core whose first rank is 1, its last rank
    axis, so per-channel scales have more than one slice."""
    if len(shape) == 4 and shape[0] == 1 and shape[-1] > 1:
        return len(shape) - 1
    return 0


def find_targets(
    model: nn.Module, fixed_zero_names: set[str]
) -> tuple[list[Target], list[dict[str, str]]]:
    """Every quantizable tensor of ``model`` (in module order) and the parameters left float
    with the reason (already quantized, or a layer type the stage does not cover)."""
    factorized_roots: dict[str, str] = {}  # module path -> outermost factorized layer
    for path, module in model.named_modules():
        if isinstance(module, FactorizedModule) and not any(
            path.startswith(root + ".") for root in factorized_roots
        ):
            factorized_roots[path] = path
    targets: list[Target] = []
    skipped: list[dict[str, str]] = []

    def root_of(path: str) -> str | None:
        for root in factorized_roots:
            if path == root or path.startswith(root + "."):
                return root
        return None

    for path, module in model.named_modules():
        if ".parametrizations." in f".{path}." or path.endswith("parametrizations"):
            continue
        root = root_of(path)
        prefix = f"{path}." if path else ""
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:
                skipped.append({"name": prefix + name, "reason": "already quantized"})
        sparse_names = set(getattr(module, "jc_sparse_tensors", ()))
        for name, param in module._parameters.items():
            if param is None or not param.is_floating_point():
                continue
            full = prefix + name
            fixed = full in fixed_zero_names or name in sparse_names
            if isinstance(module, WEIGHT_LAYERS):
                if name == "weight":
                    kind = "factors" if root is not None else "weights"
                    targets.append(Target(path, name, kind, root or path, True, fixed, 0))
                else:
                    targets.append(Target(path, name, "biases", root or path, False, False, 0))
            elif isinstance(module, EMBEDDING_LAYERS) and name == "weight":
                # a bare parameter (no brevitas twin); axis 0: one scale per token's row
                targets.append(Target(path, name, "embeddings", path, False, fixed, 0))
            elif isinstance(module, NORM_LAYERS):
                targets.append(Target(path, name, "norms", path, False, False, 0))
            elif root is not None:
                if name in sparse_names:
                    kind = "sparse_values"
                elif name == "bias":
                    kind = "biases"
                else:
                    kind = "factors"
                axis = _channel_axis(param.shape)
                targets.append(Target(path, name, kind, root, False, fixed, axis))
            else:
                skipped.append(
                    {
                        "name": full,
                        "reason": f"{type(module).__name__} is not a layer type the "
                        "quantize stage covers",
                    }
                )
    for t in targets:
        t.shape = tuple(t.value(model).shape)
    return targets, skipped
