"""What a quantized tensor will cost in the file: each of its tensors encoded as the ``encode``
stage would (integers through jointcomp.codec, float side tensors as stored)."""

from __future__ import annotations

from torch import nn

from ..container.choose import StoragePolicy
from ..container.manifest import omittable
from ..container.tensors import encode_tensor
from ..nn.quantized import Codebook, IntQuantized


def coded_bytes(p: nn.Module) -> int:
    """Payload bytes an IntQuantized or Codebook parametrization takes in the file under the
    ``encode`` stage's default choices (integers through the ``auto`` coder; scales, zero
    points and centroids as floats; all-zero ones are left out of the file)."""
    if not isinstance(p, (IntQuantized, Codebook)):
        raise TypeError(f"not a quantized tensor: {type(p).__name__}")
    policy = StoragePolicy()
    total = 0
    for name, tensor in p.state_dict().items():
        if omittable(tensor, tensor):  # a fresh build of the same config is already all zeros
            continue
        choice = policy.choose(name, tensor)
        _, payload, _ = encode_tensor(
            name,
            tensor,
            codec_name=choice.codec,
            storage=choice.storage,
            codec_options=choice.options,
        )
        total += len(payload)
    return total


def bits_of(p: nn.Module) -> int:
    """Bit width of the codes: the integer width, or log2 of the codebook size (rounded up)."""
    if isinstance(p, IntQuantized):
        return p.bits
    if isinstance(p, Codebook):
        return max(1, (p.size - 1).bit_length())
    raise TypeError(f"not a quantized tensor: {type(p).__name__}")
