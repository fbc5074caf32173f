"""Mixed precision: the chosen bit widths meet the byte budget, and the estimate is what the
file really spends on those tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jointcomp.errors import ModelError
from jointcomp.nn.quantized import quantized_tensors
from jointcomp.quant.mixed import Option, allocate_bits
from jointcomp.stages.encode import save

from .quantize_util import KWARGS, factorized_small_cnn, run_quantize


def _file_bytes_per_tensor(model: torch.nn.Module, path: Path) -> dict[str, int]:
    report = save(model, path, builder="zoo:small_cnn", kwargs=KWARGS)
    out: dict[str, int] = {}
    for e in report.entries:
        if ".parametrizations." in e["n"] and not e["n"].endswith(".original"):
            head, _, rest = e["n"].partition(".parametrizations.")
            name = f"{head}.{rest.split('.')[0]}"
            out[name] = out.get(name, 0) + e["b"]
    return out


def test_budget_is_met_and_estimates_are_the_files_bytes(tmp_path: Path) -> None:
    params = {"ptq": {}, "bits": {"factors": 8, "weights": 8, "sparse_values": 8}}
    _, record = run_quantize(factorized_small_cnn("lowrank-sparse"), params)
    at_8_bits = record["summary"]["est_bytes"]

    budget = int(0.75 * at_8_bits)
    bits = {**params["bits"], "budget": {"bytes": budget, "options": [2, 3, 4, 6, 8], "batches": 1}}
    model, record = run_quantize(
        factorized_small_cnn("lowrank-sparse"),
        {**params, "bits": bits, "overrides": {"fc": {"bits": 8}}},
    )
    rows = {r["tensor"]: r for r in record["layers"]}
    allocation = record["summary"]["budget"]
    assert sum(r["est_bytes"] for r in rows.values()) <= budget
    assert allocation["achieved_bytes"] == sum(r["est_bytes"] for r in rows.values())
    assert len({r["bits"] for r in rows.values()}) > 1  # mixed, not one width for all
    assert rows["fc.lowrank.first.weight"]["bits"] == 8  # a pinned layer keeps its width
    assert allocation["fixed_bytes"] > 0
    # the estimate is exactly what the file spends on each quantized tensor
    in_file = _file_bytes_per_tensor(model, tmp_path / "b.jcz")
    assert in_file == {name: r["est_bytes"] for name, r in rows.items()}
    assert set(rows) == set(quantized_tensors(model))


def test_infeasible_budget_is_a_clear_error() -> None:
    params = {"ptq": {}, "bits": {"budget": {"bytes": 10, "options": [2, 4]}}}
    with pytest.raises(
        ModelError, match=r"budget of 10 bytes cannot be met.*smallest bit widths \(2\)"
    ):
        run_quantize(factorized_small_cnn("svd-tucker-cp"), params)


def test_allocation_prefers_cheap_loss_per_byte() -> None:
    measured = {
        "robust": [Option(2, 100, 1.0), Option(4, 200, 1.0), Option(8, 400, 1.0)],
        "fragile": [Option(2, 100, 5.0), Option(4, 200, 1.2), Option(8, 400, 1.0)],
    }
    chosen, total = allocate_bits(measured, 500)
    assert chosen["robust"].bits == 2 and chosen["fragile"].bits == 8 and total == 500
    with pytest.raises(ValueError):
        allocate_bits(measured, 150)
