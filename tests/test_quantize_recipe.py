"""The quantize stage inside a whole recipe: prune → decompose (low-rank + sparse) → quantize
(QAT) → encode writes a file that loads bit-exactly, with the stage's record in the report;
bad parameters are recipe errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import jointcomp
from jointcomp.errors import RecipeError
from jointcomp.nn.quantized import IntQuantized, quantized_tensors
from jointcomp.pipeline import run
from jointcomp.recipe import validate_recipe

from .conftest import tiny_recipe

JOINT = [
    {"prune": {"ratio": 0.3, "finetune": {"epochs": 1}}},
    {
        "decompose": {
            "layers": {
                "block2.0": {"format": "tucker2", "rank": 0.5, "sparse": 0.05},
                "block3.0": {"format": "cp", "rank": 6},
                "fc": {"format": "tt", "rank": 2},
            },
            "finetune": {"epochs": 1},
        }
    },
    {
        "quantize": {
            "method": "qat",
            "fold_bn": True,
            "bits": {"factors": 4, "sparse_values": 6, "weights": 6, "biases": 16},
            "finetune": {"epochs": 1},
        }
    },
    {"encode": {"codec": "auto"}},
]


def test_joint_recipe_writes_a_bit_exact_quantized_file(tmp_path: Path) -> None:
    result = run(validate_recipe(tiny_recipe(tmp_path, stages=JOINT)), show_progress=False)
    loaded = jointcomp.load(str(result.model_path))
    x = torch.randn(7, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.cpu().eval()(x))
    q = quantized_tensors(loaded)
    assert q and all(isinstance(p, IntQuantized) for p in q.values())
    assert {p.bits for p in q.values()} == {4, 6, 16}
    assert "fc.cores.0" in q and "block2.0.sparse" in q
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    stage = next(s for s in report["stages"] if s["name"] == "quantize")
    summary = stage["record"]["summary"]
    assert {"accuracy_before", "accuracy_quantized", "accuracy_after"} <= set(summary)
    assert len(summary["bn_folded"]) == 3
    assert {r["tensor"] for r in stage["record"]["layers"]} == set(q)
    # the file's per-layer table: a TT layer's cores count with it, with their code widths
    layers = {r["name"]: r for r in report["layers"]}
    assert "fc.cores" not in layers and layers["fc"]["type"] == "TTLinear+IntQuantized"
    assert layers["fc"]["qbits"] == "4,16" and layers["block2.0"]["qbits"] == "6"
    md = (tmp_path / "run" / "report.md").read_text()
    assert "## Stage 2: quantize" in md and "fc.cores.0" in md
    # integers are what the file codes: 4-bit factors cost well under a byte each
    enc = next(s for s in report["stages"] if s["name"] == "encode")["record"]["tensors"]
    ints = enc["block2.0.lowrank.core.parametrizations.weight.0.int_repr"]
    assert (
        ints["codec"] != "plain"
        and ints["bytes"] < 0.75 * q["block2.0.lowrank.core.weight"].int_repr.numel()
    )


@pytest.mark.parametrize(
    "params,message",
    [
        ({"method": "qat", "refit": True}, "refit .* use method ptq"),
        ({"method": "qat", "fold_epochs": 1}, "fold_epochs .* fold_bn after"),
        ({"method": "ptq", "fold_bn": "after", "fold_epochs": 1}, "use method qat"),
        ({"method": "ptq", "fold_bn": "after", "fold_rounding": "qat"}, "fold_rounding qat"),
        ({"method": "qat", "fold_rounding": "qat"}, "fold_rounding qat .* fold_bn after"),
        (
            {"method": "qat", "fold_bn": "after", "fold_lr": 1e-4},
            "fold_lr .* set fold_epochs too",
        ),
        ({"method": "qat", "fold_bn": "after", "fold_epochs": 1, "fold_lr": 0}, r"fold_lr"),
        ({"method": "ptq", "bits": {"factors": 1}}, "needs at least 2 bits"),
        ({"bits": {"factor": 4}}, r"bits\.factor: unknown key; allowed keys here: factors"),
        ({"bits": {"weights": 17}}, r"bits\.weights: .*less than or equal to 16"),
        ({"budget": {"bytes": 100, "options": [0, 4]}}, "bit widths in 1..16"),
        ({"method": "svd"}, r"quantize\.method"),
        ({"layers": {"fc": {"bits": 4, "granularity": "row"}}}, r"layers\.fc\.granularity"),
    ],
)
def test_bad_parameters_are_recipe_errors(tmp_path: Path, params: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        validate_recipe(tiny_recipe(tmp_path, stages=[{"quantize": params}]))
