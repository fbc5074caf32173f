"""Quantization helpers of the ``quantize`` stage: which tensors to quantize (targets), uniform
post-training rounding (ptq), brevitas QAT and its integer export (qat), k-means codebooks
(kmeans), batch-norm folding (bnfold), quantized CP/TT refits (refit), coded-size estimates
(size) and bit allocation under a byte budget (mixed).

``qat`` imports brevitas, which takes seconds: import ``jointcomp.quant.qat`` where it is used."""

from .bnfold import fold_batchnorms
from .kmeans import kmeans_codebook
from .ptq import calibrate, ptq_tensor
from .refit import refit_layer
from .size import bits_of, coded_bytes
from .spec import QuantSpec
from .targets import KINDS, Target, find_targets, fixed_zero_names

__all__ = [
    "KINDS",
    "QuantSpec",
    "Target",
    "bits_of",
    "calibrate",
    "coded_bytes",
    "find_targets",
    "fixed_zero_names",
    "fold_batchnorms",
    "kmeans_codebook",
    "ptq_tensor",
    "refit_layer",
]
