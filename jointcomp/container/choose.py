"""How each tensor is stored in a file: the codec choice policy of ``jointcomp.save`` and of the
size estimates that must agree with it (``jointcomp.quant.size``).

Integer tensors (quantizer codes, codebook indices) go through a jointcomp.codec coder (``auto``:
the smallest of them). Float tensors are stored as their bit patterns: exactly (``f32``) or
narrowed (``f16``), with their zero positions entropy-coded where most of them are zero, and as
integer codes where every value lies on a log grid (scales a ``scale_grid`` moved there).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..tensor.log_grid import exact_codes
from .artifact import TensorChoice

SPARSE_FLOAT_THRESHOLD = 0.5  # zero fraction above which a float tensor's positions are coded
MIN_PARTS, MAX_PARTS, MIN_PART_SIZE = 2, 1024, 64  # range_parts: slices worth a table each
# log-grid codes pay where the values outweigh a coder's header entry (a scalar does not)
MIN_LOG_VALUES = 8


def parts_option(tensor: torch.Tensor) -> dict[str, Any]:
    """auto's range_parts candidate for ``tensor``: a table per leading slice (a quantized
    T-Basis basis has a scale per basis core, so each core's values have their own spread).
    auto keeps it only where the smaller stream pays for the extra tables."""
    if tensor.dim() < 2:
        return {}
    parts = tensor.shape[0]
    if not MIN_PARTS <= parts <= MAX_PARTS or tensor.numel() // parts < MIN_PART_SIZE:
        return {}
    return {"range_parts": {"parts": parts}}


@dataclass(frozen=True)
class StoragePolicy:
    """The choice for every tensor of a file: ``codec`` for integer tensors and sparse
    positions (``overrides`` by tensor-name pattern, first match wins), coder ``options``, and
    ``float_storage`` for tensors that stay float. ``plain`` stores every tensor's own bytes."""

    codec: str = "auto"
    overrides: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    float_storage: str = "f32"

    def codec_for(self, name: str) -> str:
        for pattern, codec in self.overrides.items():
            if fnmatch.fnmatchcase(name, pattern):
                return codec
        return self.codec

    def choose(self, name: str, tensor: torch.Tensor, sparse: Collection[str] = ()) -> TensorChoice:
        """How tensor ``name`` is stored; ``sparse`` names tensors whose zeros are fixed (their
        positions are coded even where fewer than half are zero)."""
        codec = self.codec_for(name)
        narrow = self.float_storage if tensor.dtype == torch.float32 else None
        if codec == "plain":  # no coding at all: every tensor's own bytes
            return TensorChoice("plain", {}, narrow)
        if tensor.is_floating_point():
            found = exact_codes(tensor) if tensor.numel() >= MIN_LOG_VALUES else None
            if found is not None:  # scales a scale_grid put on a log grid: codes, exactly
                return TensorChoice(codec, {}, f"l{found[1]}")
            zeros = float((tensor == 0).float().mean()) if tensor.numel() else 0.0
            if name in sparse or zeros > SPARSE_FLOAT_THRESHOLD:
                # positions entropy-coded, values kept as exact bit patterns
                return TensorChoice("sparse", {"value_codecs": ("raw",)}, narrow)
            return TensorChoice("plain", {}, narrow)
        if codec != "auto":
            return TensorChoice(codec, dict(self.options), None)
        return TensorChoice(codec, parts_option(tensor), None)
