"""jointcomp.export: a decoded file's model in the formats other tools run — ONNX (integer
weights as QDQ or dynamic int8, checked in onnxruntime), a torch.export program (.pt2), a dense
safetensors state dict, and a transformers folder."""

from .common import ExportCheckError, ExportError
from .files import FORMATS, export_file, target_format
from .inputs import Examples, examples_for, parse_shape
from .onnx import OnnxReport, check_onnx, to_onnx
from .program import to_program
from .safetensors_dense import dense_state_dict, to_dense_safetensors
from .transformers_folder import to_transformers

__all__ = [
    "FORMATS",
    "Examples",
    "ExportCheckError",
    "ExportError",
    "OnnxReport",
    "check_onnx",
    "dense_state_dict",
    "examples_for",
    "export_file",
    "parse_shape",
    "target_format",
    "to_dense_safetensors",
    "to_onnx",
    "to_program",
    "to_transformers",
]
