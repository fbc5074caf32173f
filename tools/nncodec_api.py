"""Thin wrappers over NNCodec (Fraunhofer HHI's implementation of the ISO/IEC 15938-17 neural
network coding standard), an optional benchmark dependency that CI never installs:

    pip install --no-deps nncodec && pip install --no-deps pandas h5py opencv-python-headless

(``from nncodec import nnc`` imports NNCodec's training framework, which needs those three and
torchvision; ``--no-deps`` keeps our torch.) Every function checks its round trip: a bitstream
that does not decode to what was coded raises instead of being counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class NNCodecError(RuntimeError):
    """NNCodec is missing, rejected the input (it raises SystemExit), or did not round-trip."""


def _nnc() -> Any:
    try:
        from nncodec import nnc
    except ImportError as exc:
        raise NNCodecError(
            f"NNCodec is not importable ({exc}); install it with: pip install --no-deps nncodec "
            "&& pip install --no-deps pandas h5py opencv-python-headless"
        ) from None
    return nnc


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    try:
        return pkg_version("nncodec")
    except PackageNotFoundError:
        return "?"


def compress(params: dict[str, np.ndarray], **options: Any) -> tuple[bytes, dict[str, np.ndarray]]:
    """NNCodec's whole pipeline (quantization of float32 tensors at ``qp``, int32 tensors coded
    as they are, DeepCABAC, NNR headers): the bitstream and what it decodes to."""
    nnc = _nnc()
    try:
        stream = nnc.compress(params, bitstream_path=None, return_bitstream=True, **options)
        decoded = nnc.decompress(bytearray(stream), verbose=False)
    except SystemExit as exc:  # NNCodec reports bad input by exiting
        raise NNCodecError(f"NNCodec refused the input: {exc}") from None
    if not isinstance(decoded, dict) or set(decoded) != set(params):
        raise NNCodecError("NNCodec's bitstream decoded to different tensors")
    for name, value in params.items():
        if decoded[name].shape != value.shape:
            raise NNCodecError(f"{name}: decoded shape {decoded[name].shape} != {value.shape}")
        if value.dtype == np.int32 and not np.array_equal(decoded[name], value):
            raise NNCodecError(f"{name}: integers did not survive NNCodec exactly")
    return bytes(stream), decoded


def deepcabac_bytes(q: np.ndarray, unary_length: int = 11) -> int:
    """Bytes of DeepCABAC's raw stream for one integer tensor (no NNR headers; its context
    models adapted on the fly, so no tables either): NNCodec's coder alone, as its encoder
    calls it for an unquantized ("skip") tensor. The stream is decoded and checked."""
    from nncodec.extensions import deepCABAC
    from nncodec.nnc_core.hdsp.hdsp_tool import HDSP_OPTS_OFF

    x = np.ascontiguousarray(q, dtype=np.int32)
    x = x.reshape(1, -1) if x.ndim < 2 else x
    enc = deepCABAC.Encoder()
    enc.initCtxModels(unary_length, 1)  # param_opt on, as NNCodec's compress() default
    rows = np.zeros(x.shape[0], dtype=np.int32)
    # dq_flag 0, scan order 0, general profile 1, no parent node, no row skipping, no codebook
    enc.encodeLayer(x, 0, 0, 1, 0, 0, rows, *HDSP_OPTS_OFF(), 0, 0)
    stream = enc.finish().tobytes()
    dec = deepCABAC.Decoder()
    dec.setStream(np.frombuffer(stream, dtype=np.uint8))
    dec.initCtxModels(unary_length)
    out = np.zeros_like(x)
    dec.decodeLayer(out, 0, 0, 1, 0, *HDSP_OPTS_OFF(), 0, 0)
    dec.finish()
    if not np.array_equal(out, x):
        raise NNCodecError("DeepCABAC did not reproduce the integers")
    return len(stream)
