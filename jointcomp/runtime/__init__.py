"""jointcomp.runtime: running a decoded model for deployment rather than for further compression.

``materialize`` turns the exact module's quantized parametrizations into plain tensors (keeping
the integer grids aside); ``to_fast`` builds on it a module for fast CPU inference (int8 kernels
holding the file's integers, each layer's form chosen by its measured time and its measured
effect on the output, the fastest within a deviation budget), which carries a report of its
choices (``runtime_report``) and is measured against the exact module by ``deviation``.
The exporters build on ``materialize`` too.
"""

from .deviation import Deviation, deviation
from .fast import FORMS, FastReport, LayerChoice, dense_module, runtime_report, to_fast
from .int8 import Int8Linear, int8_linear
from .materialize import IntGrid, materialize

__all__ = [
    "FORMS",
    "Deviation",
    "FastReport",
    "Int8Linear",
    "IntGrid",
    "LayerChoice",
    "dense_module",
    "deviation",
    "int8_linear",
    "materialize",
    "runtime_report",
    "to_fast",
]
