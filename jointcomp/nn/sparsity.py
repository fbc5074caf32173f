"""Fixed zero patterns: tensors whose zeros must stay exactly zero through fine-tuning and
quantization (unstructured pruning's weights, low-rank + sparse residuals), and whose zero
positions the file codes.

A layer declares them by name in ``jc_sparse_tensors`` (a class attribute for types that always
have one, such as ``LowRankPlusSparse``; an instance attribute set by ``mark_fixed_zeros`` for
plain layers that were pruned), so the annotation travels with the module through copies,
replacements and files (``jointcomp.save`` lists them in the header's ``meta.sparse``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def fixed_zero_names(model: nn.Module) -> list[str]:
    """Dotted names (``fc1.weight``) of every tensor with a fixed zero pattern, sorted."""
    names = set()
    for path, module in model.named_modules():
        for t in getattr(module, "jc_sparse_tensors", ()):
            names.add(f"{path}.{t}" if path else t)
    return sorted(names)


def mark_fixed_zeros(model: nn.Module, names: Iterable[str]) -> list[str]:
    """Declare the zeros of the named tensors fixed (names whose layer or tensor ``model`` does
    not have are skipped). Returns the names marked."""
    marked = []
    for name in names:
        path, _, tensor = name.rpartition(".")
        try:
            module = model.get_submodule(path) if path else model
        except AttributeError:
            continue
        if not hasattr(module, tensor):
            continue
        own = tuple(getattr(module, "jc_sparse_tensors", ()))
        if tensor not in own:
            module.jc_sparse_tensors = (*own, tensor)
        marked.append(name)
    return marked


def fixed_zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """For every fixed-zero parameter, a mask that is True where the entry is free to train."""
    named = dict(model.named_parameters())
    return {n: named[n].detach() != 0 for n in fixed_zero_names(model) if n in named}
