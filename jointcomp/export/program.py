"""torch.export: the materialized module as an ``ExportedProgram`` saved with
``torch.export.save`` (a .pt2 file), the entry point of ExecuTorch and AOTInductor.

The program takes the example's tensors positionally, in the example's order, and returns a
flat tuple of tensors; its weights are the exact module's values as float tensors (factorized
layers through their factors). ``torch.export.load`` gives it back.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..container import write_atomic
from .common import ExportCheckError, ExportError, Inputs, Traced, call, compare, deployable
from .common import flat_outputs as _flat


def _dims(example: Inputs, dynamic: dict[str, dict[int, str]]) -> tuple[Any, ...] | None:
    """torch.export dynamic shapes: every axis ``dynamic`` names as ``Dim.AUTO`` (torch.export
    keeps it dynamic where the model allows, specializes it where not)."""
    if not dynamic:
        return None
    auto = torch.export.Dim.AUTO
    # one entry: Traced.forward takes the inputs as *args, which torch.export sees as one tuple
    return (tuple({axis: auto for axis in dynamic.get(name, {})} or None for name in example),)


def export_program(
    model: nn.Module, example: Inputs, dynamic: dict[str, dict[int, str]] | None = None
) -> Any:
    """The ``torch.export.ExportedProgram`` of ``model``'s deployable form on ``example``
    (traced at batch 2 where the batch axis is dynamic: torch.export fixes size-1 axes)."""
    plain, _ = deployable(model)
    traced = Traced(plain, list(example)).eval()
    dynamic = dynamic or {}
    args = tuple(
        torch.cat([v, v]) if dynamic.get(k, {}).get(0) and v.shape[0] == 1 else v
        for k, v in example.items()
    )
    try:
        return torch.export.export(traced, args, dynamic_shapes=_dims(example, dynamic))
    except Exception as exc:  # torch.export's errors are long; the first line says what
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.export could not trace the model: {first}") from exc


def to_program(
    model: nn.Module,
    path: str | Path,
    example: Inputs,
    *,
    samples: Inputs | None = None,
    dynamic: dict[str, dict[int, str]] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Write ``model`` (a decoded file's exact module) as a torch.export program at ``path``
    (.pt2) and check it: loaded back with ``torch.export.load``, its outputs on ``samples``
    (default: ``example``) equal the materialized module's. Returns ``bytes`` and the check's
    ``max_abs_err`` / ``cosine`` against the exact module.

    >>> import tempfile, torch
    >>> from jointcomp.export import to_program
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())
    >>> report = to_program(model, tempfile.mkdtemp() + "/m.pt2", {"input": torch.randn(1, 8)})
    >>> report["max_abs_err"]
    0.0
    """
    program = export_program(model, example, dynamic)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    data = buffer.getvalue()
    report: dict[str, Any] = {"bytes": len(data)}
    if check:
        inputs = example if samples is None else samples
        loaded = torch.export.load(io.BytesIO(data)).module()
        plain, _ = deployable(model)
        with torch.no_grad():
            got = _flat(loaded(*inputs.values()))
            expected = _flat(call(plain, inputs))
            exact = _flat(call(model.eval(), inputs))
        if len(got) != len(expected) or any(
            not torch.equal(a, b) for a, b in zip(got, expected, strict=False)
        ):
            raise ExportCheckError("the .pt2 program loaded back computes other outputs than "
                                   "the materialized module")  # fmt: skip
        report.update(compare(exact, got))
    write_atomic(path, data)
    return report
