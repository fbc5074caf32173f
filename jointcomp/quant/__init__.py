"""Quantization helpers of the ``quantize`` stage: which tensors to quantize (targets), uniform
post-training rounding (ptq), brevitas QAT and its integer export (qat), k-means codebooks
(kmeans), quantized CP/TT refits (refit), coded-size estimates (size), bit allocation under a
byte budget (mixed) and scales on a log grid (scale_grid).

``qat`` imports brevitas, which takes seconds: import ``jointcomp.quant.qat`` where it is used."""

from .kmeans import kmeans_codebook
from .ptq import calibrate, ptq_tensor
from .refit import refit_layer
from .size import bits_of, coded_bytes
from .spec import QuantSpec
from .targets import KINDS, Target, find_targets

__all__ = [
    "KINDS",
    "QuantSpec",
    "Target",
    "bits_of",
    "calibrate",
    "coded_bytes",
    "find_targets",
    "kmeans_codebook",
    "ptq_tensor",
    "refit_layer",
]
