"""jointcomp.tensor: decompositions, rank measures and quantizers as pure functions on tensors.

Imports nothing else from jointcomp and defines no nn.Module. Inputs are torch tensors; the
algorithms compute in float64 and return W's floating dtype (float32 in, float32 out);
integer outputs (quantized codes) are int32. Bad ranks/shapes raise ``ValueError``.
"""

from .cp import cp_als, cp_to_full, khatri_rao, mttkrp
from .factorize import factorize_dim, pad_to_factorable
from .lowrank_sparse import (
    cp_lowrank,
    lowrank_sparse,
    svd_lowrank,
    topk_sparse,
    tt_lowrank,
    tt_matrix_lowrank,
    tucker2_lowrank,
)
from .penalty import (
    effective_rank_penalty,
    gini_penalty,
    hoyer_penalty,
    nuclear_penalty,
    weight_matrix,
)
from .qcp import qcp_to_full, quantized_cp_als, round_cp_factors
from .qtt import (
    dequantize_cores,
    qtt_to_full,
    quantized_tt_matrix,
    quantized_tt_svd,
    round_tt_cores,
)
from .quant import calibrate_scale, dequantize, fake_quantize, int_range, quantize_uniform
from .rank import effective_rank, energy_rank, rank_for_indicator, spectral_norm_indicator
from .svd import singular_values, svd_factors, svd_to_full, truncated_svd
from .tt import tt_matrix, tt_matrix_to_full, tt_svd, tt_to_full
from .tucker import tucker2, tucker2_to_full
from .vbmf import evbmf, tucker2_vbmf_ranks, vbmf_rank

__all__ = [
    "calibrate_scale",
    "cp_als",
    "cp_lowrank",
    "cp_to_full",
    "dequantize",
    "dequantize_cores",
    "effective_rank",
    "effective_rank_penalty",
    "energy_rank",
    "evbmf",
    "factorize_dim",
    "fake_quantize",
    "gini_penalty",
    "hoyer_penalty",
    "int_range",
    "khatri_rao",
    "lowrank_sparse",
    "mttkrp",
    "nuclear_penalty",
    "pad_to_factorable",
    "qcp_to_full",
    "qtt_to_full",
    "quantize_uniform",
    "quantized_cp_als",
    "quantized_tt_matrix",
    "quantized_tt_svd",
    "rank_for_indicator",
    "round_cp_factors",
    "round_tt_cores",
    "singular_values",
    "spectral_norm_indicator",
    "svd_factors",
    "svd_lowrank",
    "svd_to_full",
    "topk_sparse",
    "truncated_svd",
    "tt_lowrank",
    "tt_matrix",
    "tt_matrix_lowrank",
    "tt_matrix_to_full",
    "tt_svd",
    "tt_to_full",
    "tucker2",
    "tucker2_lowrank",
    "tucker2_to_full",
    "tucker2_vbmf_ranks",
    "vbmf_rank",
    "weight_matrix",
]
