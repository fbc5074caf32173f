"""``jointcomp export FILE --to TARGET``: a .jcz file into the format TARGET's suffix (or
``format``) names — ``.onnx``, ``.pt2``, ``.safetensors``, or a folder (``transformers``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..api import open_file
from .common import ExportError, check_target
from .inputs import examples_for

FORMATS = ("onnx", "pt2", "safetensors", "transformers")
SUFFIXES = {".onnx": "onnx", ".pt2": "pt2", ".safetensors": "safetensors"}


def target_format(target: str | Path, fmt: str | None = None) -> str:
    """The format ``target`` is written in: ``fmt``, else its suffix's; a path without a
    suffix is a transformers folder. ExportError for an unknown suffix."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ExportError(f"format {fmt!r}: one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(target).suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if not suffix or Path(target).is_dir():
        return "transformers"
    raise ExportError(f"--to {target}: unknown suffix {suffix!r}; use .onnx, .pt2, "
                      ".safetensors, or a folder with --format transformers")  # fmt: skip


def export_file(
    file: str | Path,
    target: str | Path,
    *,
    fmt: str | None = None,
    weights: str | None = None,
    input_shape: str | tuple[int, ...] | None = None,
    input_dtype: str | None = None,
    opset: int | None = None,
    check: bool = True,
    force: bool = False,
    trust: bool = False,
) -> dict[str, Any]:
    """Export the model of .jcz ``file`` to ``target`` (see the module docstring); returns
    what was written: ``format``, ``bytes`` or ``tensors``, the check's figures, and where
    the example input came from."""
    from .onnx import DEFAULT_WEIGHTS, OPSET, to_onnx
    from .program import to_program
    from .safetensors_dense import to_dense_safetensors
    from .transformers_folder import to_transformers

    kind = target_format(target, fmt)
    if weights is not None and kind != "onnx":
        raise ExportError(f"--weights applies to ONNX only, not {kind}")
    path = check_target(target, file, force)
    artifact = open_file(file, trust=trust)
    model, manifest = artifact.model, artifact.manifest
    out: dict[str, Any] = {"format": kind, "target": str(path)}
    if kind == "safetensors":
        meta = {"source": Path(file).name, "builder": manifest.builder}
        return {**out, **to_dense_safetensors(model, path, meta)}
    if kind == "transformers":
        if path.exists() and not path.is_dir():
            raise ExportError(f"--to {target}: a transformers folder, but a file is there")
        examples = examples_for(manifest.builder, manifest.kwargs, file=file,
                                input_shape=input_shape)  # fmt: skip
        samples = examples.samples if check else None
        return {**out, **to_transformers(model, path, manifest.builder, samples=samples)}
    examples = examples_for(
        manifest.builder, manifest.kwargs, file=file, input_shape=input_shape, dtype=input_dtype
    )
    out["inputs"] = examples.source
    out["input_shapes"] = {k: list(v.shape) for k, v in examples.example.items()}
    if kind == "pt2":
        report = to_program(model, path, examples.example, samples=examples.samples,
                            dynamic=examples.dynamic, check=check)  # fmt: skip
        return {**out, **report}
    report = to_onnx(
        model, path, examples.example, samples=examples.samples, dynamic=examples.dynamic,
        weights=weights or DEFAULT_WEIGHTS, opset=opset or OPSET, check=check,
    )  # fmt: skip
    out.update(bytes=report.bytes, weights=report.weights, opset=report.opset,
               tensors=report.tensors, **(report.check or {}))  # fmt: skip
    return out
