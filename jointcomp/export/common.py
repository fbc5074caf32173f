"""What every exporter shares: its errors, the output-path guard, the optional onnx libraries,
the module an exporter traces (inputs by name, outputs as a flat tuple of tensors) and the
materialized module with its factorized layers running through their factors."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..errors import JointcompError, OutputExistsError
from ..nn.execution import FactorizedModule
from ..nn.lowrank_sparse import LowRankPlusSparse
from ..runtime import IntGrid, materialize

EXTRA = 'pip install "jointcomp[export]"'

# model inputs by name, in the order the model takes them; a model of one positional input
# (an image classifier) has the single name INPUT
Inputs = dict[str, torch.Tensor]
INPUT = "input"
PREFIX = "model."  # what Traced puts before the model's tensor names


class ExportError(JointcompError):
    """A model cannot be exported as asked: the message names what and why."""

    exit_code = 2


class ExportCheckError(JointcompError):
    """An exported file computes something else than the module it came from."""

    exit_code = 1


def require(name: str) -> ModuleType:
    """``onnx`` or ``onnxruntime``, or an ExportError naming the extra that installs them."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ExportError(f"exporting to ONNX needs {name}, an optional extra: {EXTRA}") from e


def check_target(target: str | Path, source: str | Path | None, force: bool) -> Path:
    """``target`` as a Path once it may be written: never ``source`` itself, and an existing
    file or folder only with ``force``."""
    path = Path(target)
    if path.exists() or path.is_symlink():
        same = source is not None and path.exists() and Path(source).exists()
        if same and os.path.samefile(source, path):  # type: ignore[arg-type]
            raise OutputExistsError(f"{target} is the input file itself; refused")
        if not force:
            raise OutputExistsError(f"{target} already exists; pass --force to replace it")
    return path


def keyword_inputs(inputs: Inputs) -> bool:
    """True when the model takes ``inputs`` by keyword (anything but one INPUT tensor)."""
    return list(inputs) != [INPUT]


def flat_outputs(out: Any) -> tuple[torch.Tensor, ...]:
    """A model's output as a flat tuple of tensors: a tensor, a tuple/list, or a mapping
    (transformers' ModelOutput) in its key order, None entries left out."""
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, Mapping):
        out = [v for v in out.values() if v is not None]
    if isinstance(out, Sequence) and not isinstance(out, (str, bytes)):
        return tuple(t for item in out for t in flat_outputs(item))
    if out is None:
        return ()
    raise ExportError(f"model output of type {type(out).__name__} is not a tensor or tensors")


def output_names(model: nn.Module, inputs: Inputs) -> list[str]:
    """Names of the flat outputs: a mapping's keys, else ``output``, ``output_1``, …"""
    with torch.no_grad():
        out = call(model, inputs)
    if isinstance(out, Mapping):
        names = [str(k) for k, v in out.items() if isinstance(v, torch.Tensor)]
        if len(names) == len(flat_outputs(out)):
            return names
    n = len(flat_outputs(out))
    return ["output" if i == 0 else f"output_{i}" for i in range(n)]


def call(model: nn.Module, inputs: Inputs) -> Any:
    """``model`` on ``inputs``: by keyword, or positionally for one INPUT tensor."""
    if keyword_inputs(inputs):
        return model(**inputs)
    return model(inputs[INPUT])


class Traced(nn.Module):
    """``model`` with positional tensor inputs (named ``names``) and a flat tuple of outputs,
    the form torch.onnx.export and torch.export trace; the model's tensors are named
    ``PREFIX + name`` in it."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return flat_outputs(call(self.model, dict(zip(self.names, args, strict=True))))


def deployable(model: nn.Module) -> tuple[nn.Module, dict[str, IntGrid | None]]:
    """``materialize(model)`` with every factorized layer set to run through its factors, so
    an export holds the factors (fewer numbers) rather than the rebuilt dense weights."""
    plain, grids = materialize(model)
    for module in plain.modules():
        if isinstance(module, FactorizedModule):
            module.execution = "factorized"
            module._caches = {}
        if isinstance(module, LowRankPlusSparse):
            # the residual as a plain dense op: its CSR matmul has no ONNX / export form
            module.sparse_branch = functools.partial(_dense_residual, module)  # type: ignore
    return plain.eval(), grids


def _dense_residual(module: LowRankPlusSparse, x: torch.Tensor) -> torch.Tensor:
    return module.lowrank.dense_op(x, module.sparse, None)


def compare(reference: Sequence[torch.Tensor], got: Sequence[Any]) -> dict[str, float]:
    """Max abs error, the smallest per-sample cosine and, for 2-D outputs, top-1 agreement of
    ``got`` (arrays or tensors) against ``reference``, over all outputs."""
    if len(reference) != len(got):
        raise ExportCheckError(f"{len(got)} outputs where the module gives {len(reference)}")
    err, cos, agree, rows = 0.0, 1.0, 0, 0
    for ref, value in zip(reference, got, strict=True):
        a = ref.detach().double()
        b = torch.as_tensor(value).double()
        if a.shape != b.shape:
            raise ExportCheckError(f"output shape {tuple(b.shape)} where the module gives "
                                   f"{tuple(a.shape)}")  # fmt: skip
        if a.numel() == 0:
            continue
        err = max(err, float((a - b).abs().max()))
        fa, fb = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        c = torch.nn.functional.cosine_similarity(fa, fb, dim=1, eps=1e-30)
        same = (fa == fb).all(dim=1)  # two zero vectors agree
        cos = min(cos, float(torch.where(same, torch.ones_like(c), c).min()))
        if a.dim() == 2 and a.shape[1] > 1:
            agree += int((a.argmax(1) == b.argmax(1)).sum())
            rows += a.shape[0]
    out = {"max_abs_err": err, "cosine": cos}
    if rows:
        out["top1_agreement"] = agree / rows
    return out
