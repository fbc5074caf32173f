"""The per-layer table of a written file: what each module's tensors cost in the file."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from ..container import Artifact
from ..nn.quantized import IntQuantized, quantized_tensors
from ..registry import module_type_of
from .measure import logical_tensors


def entropy_bits(values: np.ndarray) -> float:
    """Empirical zeroth-order entropy H0 in bits per symbol."""
    if values.size == 0:
        return 0.0
    _, counts = np.unique(values, return_counts=True)
    p = counts / values.size
    return float(-(p * np.log2(p)).sum())


def _layer_of(name: str) -> tuple[str, str]:
    """(layer path, tensor name) of a state-dict entry; a parametrization's internals belong to
    the layer whose tensor they parametrize (``conv.parametrizations.weight.0.int_repr`` →
    ``conv``, ``weight``)."""
    if ".parametrizations." in f".{name}":
        head, _, rest = f".{name}".partition(".parametrizations.")
        return head[1:], rest.split(".")[0]
    owner, _, tensor = name.rpartition(".")
    return owner, tensor


def _owner_layer(path: str, modules: dict[str, nn.Module]) -> str:
    """A parameter container (a TT layer's ``cores`` ParameterList) belongs to its layer."""
    while path and isinstance(modules.get(path), (nn.ParameterList, nn.ParameterDict)):
        path = path.rpartition(".")[0]
    return path


def _code_bits(p: nn.Module) -> int:
    """Integer width of a quantized tensor, or index width of a codebook."""
    return p.bits if isinstance(p, IntQuantized) else max(1, (p.size - 1).bit_length())


def _payload_bound(tensor: Any, codec: str) -> float | None:
    """H0 bound in bytes for what a coder sees: integer values, or (sparse floats) the
    positions' entropy plus the nonzero values at full width; None for plain floats."""
    flat = tensor.reshape(-1).cpu().numpy()
    if not tensor.is_floating_point():
        return entropy_bits(flat) * flat.size / 8
    if codec == "sparse":
        mask = flat != 0
        return entropy_bits(mask) * flat.size / 8 + int(mask.sum()) * flat.itemsize
    return None


def layer_rows(artifact: Artifact) -> list[dict[str, Any]]:
    """One row per layer with stored tensors: type, weight shape, logical params, density, bytes
    in the file, codecs, bits per parameter, and the H0 bound of its coded payloads."""
    model = artifact.model
    modules = dict(model.named_modules())
    state = model.state_dict()
    quantized = quantized_tensors(model)
    logical = logical_tensors(model)
    rows: dict[str, dict[str, Any]] = {}
    for entry in artifact.entries:
        layer = _owner_layer(_layer_of(entry["n"])[0], modules)
        module = modules.get(layer, model)
        row = rows.get(layer)
        if row is None:
            mine = {
                n: p
                for n, p in quantized.items()
                if _owner_layer(_layer_of(n)[0], modules) == layer
            }
            kinds = {type(p).__name__ for p in mine.values()}
            entry_type = module_type_of(module)
            row = rows[layer] = {
                "name": layer or "(root)",
                "type": (entry_type.name if entry_type else type(module).__name__)
                + (f"+{'+'.join(sorted(kinds))}" if kinds else ""),
                "shape": None,
                "params": 0,
                "density": None,
                "bytes": 0,
                "codecs": [],
                "entropy_bytes": None,
                "qbits": ",".join(str(b) for b in sorted({_code_bits(p) for p in mine.values()})),
            }
            prefix = f"{layer}." if layer else ""
            own = {
                n[len(prefix) :]: t
                for n, (t, is_param) in logical.items()
                if is_param
                and n.startswith(prefix)
                and _owner_layer(n.rpartition(".")[0], modules) == layer
            }
            row["params"] = sum(t.numel() for t in own.values())
            # the weight's shape; for a layer without one (TT cores) its largest tensor's
            weight = own.get("weight", max(own.values(), key=lambda t: t.numel(), default=None))
            if weight is not None:
                row["shape"] = list(weight.shape)
                row["density"] = (
                    round(float((weight != 0).float().mean()), 4) if weight.numel() else None
                )
        row["bytes"] += entry["b"]
        if entry["c"] not in row["codecs"]:
            row["codecs"].append(entry["c"])
        tensor = state.get(entry["n"])
        bound = None if tensor is None else _payload_bound(tensor, entry["c"])
        if bound is not None:
            row["entropy_bytes"] = (row["entropy_bytes"] or 0.0) + bound
    out = []
    for row in rows.values():
        row["bits_per_element"] = round(8 * row["bytes"] / max(1, row["params"]), 3)
        if row["entropy_bytes"] is not None:
            row["entropy_bytes"] = round(row["entropy_bytes"], 1)
        out.append(row)
    return out
