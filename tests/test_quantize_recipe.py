"""The quantize stage inside a whole recipe: prune → decompose (low-rank + sparse) → quantize
(QAT, folding the batch norms first) → encode writes a file that loads bit-exactly, with the
stage's record in the report; bad parameters — two methods, options of another method, old keys
— are recipe errors that name the key and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import jointcomp
from jointcomp.errors import RecipeError
from jointcomp.nn.quantized import IntQuantized, quantized_tensors
from jointcomp.pipeline import run
from jointcomp.recipe import validate_recipe
from jointcomp.stages import QuantizeConfig

from .conftest import assert_file_holds, assert_learned, tiny_recipe

JOINT = [
    {"prune": {"ratio": 0.3, "finetune": {"epochs": 1}}},
    {
        "decompose": {
            "overrides": {
                "block2.0": {"format": "tucker2", "rank": 0.5, "sparse": 0.05},
                "block3.0": {"format": "cp", "rank": 6},
                "fc": {"format": "tt", "rank": 2},
            },
            "finetune": {"epochs": 1},
        }
    },
    {
        "quantize": {
            "qat": {"finetune": {"epochs": 1}},
            "fold": {},
            "bits": {"factors": 4, "sparse_values": 6, "weights": 6, "biases": 16},
        }
    },
    {"encode": {"codec": "auto"}},
]


def test_joint_recipe_writes_a_bit_exact_quantized_file(tmp_path: Path, encoded) -> None:
    result = run(validate_recipe(tiny_recipe(tmp_path, stages=JOINT)), show_progress=False)
    (before,) = encoded
    loaded = assert_file_holds(before, torch.randn(7, 1, 8, 8), result.model_path)
    # small_cnn after 2 epochs on digits: ~87% test top-1; pruned, factorized and at 4-6 bits
    # after one epoch each: ~64%
    assert_learned(result.report, baseline_floor=0.75, final_floor=0.5, max_drop=0.3)
    q = quantized_tensors(loaded)
    assert q and all(isinstance(p, IntQuantized) for p in q.values())
    assert {p.bits for p in q.values()} == {4, 6, 16}
    assert "fc.cores.0" in q and "block2.0.sparse" in q
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    stage = next(s for s in report["stages"] if s["name"] == "quantize")
    summary = stage["record"]["summary"]
    assert {"metric_before", "metric_folded", "metric_quantized", "metric_after"} <= set(summary)
    assert summary["method"] == "qat"
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


ALLOWED = (
    "qat, ptq, kmeans, bits, granularity, symmetric, narrow_range, calibration, scope, "
    "overrides, fold"
)
LAYER_ALLOWED = (
    "bits, sparse_bits, granularity, symmetric, narrow_range, include_zero, scale_grid, codebook"
)


@pytest.mark.parametrize(
    "params,message",
    [
        # one method, each with only its own options
        ({"qat": {}, "ptq": {}}, "give one method, qat, ptq or kmeans, not qat and ptq"),
        ({"ptq": {}, "kmeans": {}, "qat": {}}, "not qat and ptq and kmeans"),
        (
            {"ptq": {"refit": True, "rate": 1}},
            r"quantize\.ptq\.rate: unknown key; .*: refit, gptq$",
        ),
        ({"kmeans": {"scaling": "mse"}}, r"kmeans\.scaling: unknown key; .*: iters, finetune"),
        ({"qat": {"scaling": "minmax"}}, r"qat\.scaling: .*'stats', 'learned' or 'mse'"),
        ({"qat": {"rate": -1}}, r"qat\.rate: .*greater than or equal to 0"),
        # codebook overrides train beside qat's grids
        (
            {"ptq": {}, "overrides": {"fc": {"codebook": True}}},
            r"overrides \['fc'\]: codebook trains codebooks beside uniform grids under qat",
        ),
        ({"kmeans": {}, "overrides": {"fc*": {"codebook": True}}}, r"overrides \['fc\*'\]"),
        # a 1-bit grid holds one value: only a codebook (kmeans) has 2 values at 1 bit
        (
            {"ptq": {}, "bits": {"factors": 1}},
            r"1-bit integer grids hold one value; ptq needs at least 2 bits "
            r"\(found in \['factors'\]\)",
        ),
        ({"bits": {"weights": 1}}, "qat needs at least 2 bits"),
        ({"overrides": {"fc": {"sparse_bits": 1}}}, r"found in \['fc'\]"),
        (
            {"ptq": {}, "bits": {"budget": {"bytes": 100, "options": [1, 4]}}},
            r"found in \['bits\.budget\.options'\]",
        ),
        # unknown keys name the allowed ones
        ({"bits": {"factor": 4}}, r"bits\.factor: unknown key; allowed keys here: factors"),
        (
            {"overrides": {"fc": {"keep_float": True}}},
            rf"overrides\.fc\.keep_float: .*{LAYER_ALLOWED}$",
        ),
        ({"fold": {"layers": ["fc"]}}, r"fold\.layers: unknown key; .*: include, exclude, exclude"),
        # bad values
        ({"bits": {"weights": 17}}, r"bits\.weights: .*less than or equal to 16"),
        ({"bits": {"biases": 1}}, r"bits\.biases: .*greater than or equal to 2"),
        ({"bits": {"budget": {"bytes": 100, "options": [0, 4]}}}, "bit widths in 1..16"),
        ({"overrides": {"fc": {"bits": 4, "granularity": "row"}}}, r"overrides\.fc\.granularity"),
    ],
)
def test_bad_parameters_are_recipe_errors(tmp_path: Path, params: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message) as caught:
        validate_recipe(tiny_recipe(tmp_path, stages=[{"quantize": params}]))
    assert "stages.0.quantize" in str(caught.value)


@pytest.mark.parametrize(
    "key,value",
    [
        ("method", "kmeans"),  # → qat: {} | ptq: {} | kmeans: {}
        ("fold_bn", True),  # → fold: {}
        ("skip", ["fc"]),  # → scope: {exclude: [fc]}
        ("layers", {"fc": {"bits": 4}}),  # → overrides
        ("budget", {"bytes": 100}),  # → bits.budget
        ("finetune", {"epochs": 1}),  # → qat.finetune / kmeans.finetune
        ("kmeans_iters", 10),  # → kmeans.iters
        ("refit", True),  # → ptq.refit
        ("bias_correction", True),  # → the fold stage's round.bias_correction
        ("equalize", True),  # → the share stage's equalize
        ("fold_epochs", 1),  # removed
    ],
)
def test_old_keys_are_unknown_keys_listing_the_allowed_ones(
    tmp_path: Path, key: str, value: object
) -> None:
    with pytest.raises(RecipeError) as caught:
        validate_recipe(tiny_recipe(tmp_path, stages=[{"quantize": {key: value}}]))
    assert f"stages.0.quantize.{key}: unknown key; allowed keys here: {ALLOWED}" in str(
        caught.value
    )
    assert ", ".join(QuantizeConfig.model_fields) == ALLOWED  # every key is listed


def test_the_method_is_qat_unless_another_is_given() -> None:
    config = QuantizeConfig()
    assert config.method == "qat" and config.qat is not None
    assert config.qat.scaling == "stats" and config.qat.rate is None
    assert QuantizeConfig(ptq={}).method == "ptq" and QuantizeConfig(ptq={}).qat is None
    kmeans = QuantizeConfig.model_validate({"kmeans": {"iters": 5}, "bits": {"weights": 1}})
    assert kmeans.method == "kmeans" and kmeans.kmeans.iters == 5  # 1 bit: a 2-value codebook
    codebook = QuantizeConfig.model_validate({"overrides": {"fc": {"codebook": True}}})
    assert codebook.method == "qat"
    # the Python API checks the same rules
    with pytest.raises(ValidationError, match="give one method"):
        QuantizeConfig.model_validate({"qat": {}, "kmeans": {}})
    with pytest.raises(ValidationError, match="needs at least 2 bits"):
        QuantizeConfig.model_validate({"ptq": {}, "bits": {"sparse_values": 1}})


def test_the_python_api_names_the_allowed_keys_too() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(RecipeError, match=rf"quantize\.method: unknown key; .*: {ALLOWED}$"):
        jointcomp.quantize(model, {"method": "ptq"})
    with pytest.raises(RecipeError, match="give one method, qat, ptq or kmeans, not qat and ptq"):
        jointcomp.quantize(model, {"qat": {}, "ptq": {}})
