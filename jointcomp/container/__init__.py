"""The .jcz container: framing, tensor table, manifest, and ``load``."""

from .artifact import (
    Artifact,
    TensorChoice,
    WriteReport,
    encode_model,
    load,
    open_artifact,
    read_header,
    save,
    write_atomic,
)
from .manifest import Manifest

__all__ = [
    "Artifact",
    "Manifest",
    "TensorChoice",
    "WriteReport",
    "encode_model",
    "load",
    "open_artifact",
    "read_header",
    "save",
    "write_atomic",
]
