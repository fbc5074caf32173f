"""T-Basis (Obukhov et al., ICML 2020): the tensor-ring cores of many layers as linear
combinations of one shared basis of B cores of shape R×n×R.

A layer's weight is a TT-matrix with d cores whose k-th core has output mode o_k and input
mode i_k, o_k·i_k ≤ n. Its core k is

    G_k = diag(s_k) · Σ_b c_{k,b} · basis_b          (R×n×R, of which the first o_k·i_k slices
                                                     of the mode axis are used)

and the cores close into a ring (W[i₁…i_d] = trace(G₁[i₁] ⋯ G_d[i_d])), as in the paper, so
every core, first and last too, has the same R×n×R shape. ``s_k`` (length R) is the paper's
rank adaptation: a learned diagonal scaling of the core's first rank axis. A TT with ranks ≤ R
is a ring whose first core uses only row 0 and last core only column 0 (``tt_to_ring``).

All layers' coefficients and scalings are rows of one table (``coef`` [N, B], ``rank_scale``
[N, R]); a layer names its rows. Rows shared by several layers give coupled tensor trains
(common cores plus layer-specific ones).

Modes: a dimension is padded (zero rows/columns that the reconstruction slices away) until it
factors into d modes whose pairwise products fit n (``plan_modes``); conv kernels get their own
cores with output mode 1. Fitting from trained weights: TT-SVD of every layer at rank R →
ring cores, PCA (SVD) of all stacked cores → basis, least-squares coefficients, then a joint
L-BFGS refinement of basis, coefficients and scalings on the layers' (masked) weight error,
or, given a square root S of each layer's input second moment, on ‖(A − W)·S‖, the error of
its outputs on those inputs.
"""

from .tbasis_fit import TBasisFit, fit_tbasis
from .tbasis_modes import ModePlan, pad_weight, plan_modes, unpad_weight
from .tbasis_ring import balance_cores, ring_cores, ring_matrix, tbasis_matrix, tt_to_ring

__all__ = [
    "ModePlan",
    "TBasisFit",
    "balance_cores",
    "fit_tbasis",
    "pad_weight",
    "plan_modes",
    "ring_cores",
    "ring_matrix",
    "tbasis_matrix",
    "tt_to_ring",
    "unpad_weight",
]
