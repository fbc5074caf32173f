"""jointcomp.nn: the runnable factorized layers and the conversion from dense layers.

Importing this package registers every layer type for the .jcz file (``jointcomp.registry``).
"""

from .convert import decompose, decompose_at, decompose_conv2d, decompose_linear, rel_error
from .cp import CPConv2d
from .embedding import LowRankEmbedding
from .execution import EXECUTIONS, FactorizedModule
from .formats import FORMATS, Geometry, Unsupported, make_format
from .lowrank_sparse import LowRankPlusSparse
from .ranks import RankRule, parse_rank
from .svd import SVDConv2d, SVDLinear
from .tt import TTConv2d, TTLinear
from .tucker import TuckerConv2d

__all__ = [
    "EXECUTIONS",
    "FORMATS",
    "CPConv2d",
    "FactorizedModule",
    "Geometry",
    "LowRankEmbedding",
    "LowRankPlusSparse",
    "RankRule",
    "SVDConv2d",
    "SVDLinear",
    "TTConv2d",
    "TTLinear",
    "TuckerConv2d",
    "Unsupported",
    "decompose",
    "decompose_at",
    "decompose_conv2d",
    "decompose_linear",
    "make_format",
    "parse_rank",
    "rel_error",
]
