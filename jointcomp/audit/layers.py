"""The per-layer table of a written file: what each module's tensors cost in the file."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import nn

from ..container import Artifact


def _entropy_bits(values: np.ndarray) -> float:
    """Empirical zeroth-order entropy H0 in bits per symbol."""
    if values.size == 0:
        return 0.0
    _, counts = np.unique(values, return_counts=True)
    p = counts / values.size
    return float(-(p * np.log2(p)).sum())


def layer_rows(artifact: Artifact) -> list[dict[str, Any]]:
    """One row per module that owns stored tensors: type, weight shape, params, file bytes,
    codecs, bits per element, and the zeroth-order entropy bound of its integer tensors."""
    modules = dict(artifact.model.named_modules())
    state = artifact.model.state_dict()
    rows: dict[str, dict[str, Any]] = {}
    for entry in artifact.entries:
        name = entry["n"]
        owner, _, tensor_name = name.rpartition(".")
        module = modules.get(owner, artifact.model)
        row = rows.setdefault(
            owner,
            {
                "name": owner or "(root)",
                "type": type(module).__name__,
                "shape": None,
                "params": 0,
                "elements": 0,
                "bytes": 0,
                "codecs": [],
                "entropy_bytes": 0.0,
                "density": None,
            },
        )
        n = math.prod(entry["s"])
        row["elements"] += n
        row["bytes"] += entry["b"]
        if entry["c"] not in row["codecs"]:
            row["codecs"].append(entry["c"])
        tensor = state.get(name)
        is_param = isinstance(module, nn.Module) and tensor_name in module._parameters
        if is_param:
            row["params"] += n
        if tensor_name == "weight" or (row["shape"] is None and is_param):
            row["shape"] = list(entry["s"])
            if tensor is not None and tensor.numel():
                row["density"] = round(float((tensor != 0).float().mean()), 4)
        if tensor is not None and not tensor.is_floating_point():
            row["entropy_bytes"] += _entropy_bits(tensor.reshape(-1).cpu().numpy()) * n / 8
        elif tensor is not None and entry["c"] == "sparse":
            mask = (tensor != 0).reshape(-1).cpu().numpy()
            row["entropy_bytes"] += _entropy_bits(mask) * n / 8
    out = []
    for row in rows.values():
        row["bits_per_element"] = round(8 * row["bytes"] / max(1, row["elements"]), 3)
        row["entropy_bytes"] = round(row["entropy_bytes"], 1)
        out.append(row)
    return out


def dense_layer_rows(model: nn.Module) -> list[dict[str, Any]]:
    """Per-layer rows of an in-memory model at fp32 dense cost (for stage checkpoints)."""
    rows = []
    for name, module in model.named_modules():
        params = list(module.named_parameters(recurse=False))
        if not params:
            continue
        weight = dict(params).get("weight", params[0][1])
        n = sum(p.numel() for _, p in params)
        rows.append(
            {
                "name": name or "(root)",
                "type": type(module).__name__,
                "shape": list(weight.shape),
                "params": n,
                "bytes": 4 * n,
                "density": round(float((weight != 0).float().mean()), 4),
            }
        )
    return rows

