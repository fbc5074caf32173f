"""Stage ``decompose``: per-layer rules, budgets met within one rank step, the stage record, and
decomposed models that round-trip bit-exactly through a .jcz file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import jointcomp.nn as jn
from jointcomp.container import open_artifact
from jointcomp.data.bundle import DataBundle
from jointcomp.errors import ModelError, RecipeError
from jointcomp.models import build_model
from jointcomp.nn.layer_trace import trace_layers
from jointcomp.nn.sparsity import fixed_zero_masks, fixed_zero_names
from jointcomp.recipe import validate_recipe
from jointcomp.stages import apply_stage, stage_config
from jointcomp.stages.decompose import DecomposeConfig, _cost
from jointcomp.stages.encode import save

from .conftest import tiny_recipe
from .stage_util import bundle_context

LAYER_KEYS = {
    "name",
    "format",
    "ranks",
    "density",
    "params_before",
    "params_after",
    "rel_error",
    "execution",
}


def random_data(shape: tuple[int, ...], n: int = 64, classes: int = 10) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    ds = TensorDataset(x, y)
    return DataBundle("random", ds, ds, ds, shape, classes)


def run_stage(
    builder: str,
    kwargs: dict,
    data: DataBundle,
    stage: dict,
    model: nn.Module | None = None,
) -> tuple[nn.Module, nn.Module, dict]:
    """Apply one stage (its recipe form ``{name: params}``) to a freshly built (untrained)
    model; returns (original, result, record)."""
    import copy

    config = stage_config(stage)
    torch.manual_seed(0)
    original = model if model is not None else build_model(builder, kwargs).eval()
    ctx = bundle_context(data, train={"epochs": 2, "lr": 0.003}, name=config.stage)
    result, record = apply_stage(copy.deepcopy(original), config, ctx)
    return original, result.eval(), record


def assert_round_trip(
    tmp_path: Path, model: nn.Module, builder: str, kwargs: dict, x: torch.Tensor
) -> None:
    path = tmp_path / "model.jcz"
    save(model.eval(), path, builder=builder, kwargs=kwargs)  # checks every tensor bit for bit
    loaded = open_artifact(path).model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for a, b in zip(model.modules(), loaded.modules()):
        assert type(a) is type(b)
        if isinstance(a, jn.FactorizedModule):
            assert a.execution == b.execution


def test_stage_record_and_round_trip(tmp_path: Path) -> None:
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": 28}
    stage = {
        "decompose": {
            "overrides": {
                "conv1": {"format": "cp", "rank": 4},
                "conv2": {"format": "tucker2", "rank": 0.5, "sparse": 0.02},
                "fc1": {"format": "tt", "rank": 8, "sparse": 0.01},
                "fc2": {"format": "svd", "rank": "energy:0.8"},
            },
            "finetune": {"epochs": 1, "max_batches": 2},
            "timing_seconds": 0.005,
        }
    }
    _original, model, record = run_stage("zoo:lenet5", kwargs, random_data((1, 28, 28)), stage)
    layers = record["layers"]
    assert record["skipped"] == []
    assert [i["name"] for i in layers] == ["conv1", "conv2", "fc1", "fc2"]
    for info in layers:
        assert set(info) >= LAYER_KEYS
        assert info["execution"] in jn.EXECUTIONS
        module = model.get_submodule(info["name"])
        assert module.execution == info["execution"]
        assert info["params_after"] == module.factor_params() < info["params_before"]
        assert 0 <= info["rel_error"] < 1
    assert {i["format"] for i in layers} == {"cp", "tucker2+sparse", "tt+sparse", "svd"}
    assert layers[1]["density"] == pytest.approx(0.02, abs=1e-3)
    # the sparse residuals kept their zero pattern through fine-tuning
    masks = fixed_zero_masks(model)
    assert set(masks) == {"conv2.sparse", "fc1.sparse"}
    assert fixed_zero_names(model) == ["conv2.sparse", "fc1.sparse"]
    assert float(masks["conv2.sparse"].float().mean()) == pytest.approx(0.02, abs=1e-3)
    for name in masks:  # its zeros are +0.0: a −0.0 has a nonzero bit pattern the coder stores
        bits = model.get_parameter(name).detach().view(torch.int32)
        assert torch.equal(bits != 0, masks[name])
    x = torch.randn(3, 1, 28, 28)
    assert_round_trip(tmp_path, model, "zoo:lenet5", kwargs, x)
    for module in model.modules():  # both execution paths survive the file
        if isinstance(module, jn.FactorizedModule):
            module.execution = "dense" if module.execution == "factorized" else "factorized"
    assert_round_trip(tmp_path, model, "zoo:lenet5", kwargs, x)


@pytest.mark.parametrize("kind", ["params", "macs"])
def test_budget_is_met_within_one_rank_step(tmp_path: Path, kind: str) -> None:
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": 12}
    stage = {
        "decompose": {
            "format": "tucker2",
            "overrides": {"fc": {"format": "svd"}},
            "budget": {kind: 0.3, "batches": 1, "batch_size": 32, "levels": 4},
            "execution": "factorized",
            "finetune": {"epochs": 0},
        }
    }
    original, model, record = run_stage("zoo:resnet20", kwargs, random_data((1, 12, 12)), stage)
    budget = record["budget"]
    assert budget["kind"] == kind and budget["achieved"] <= budget["target"]
    # one step up in any decomposed layer's ladder would be enough to cross the target
    use_macs = kind == "macs"
    steps = []
    config = DecomposeConfig.model_validate(stage["decompose"])
    geoms, _ = trace_layers(
        original, [i["name"] for i in record["layers"]], torch.zeros(1, 1, 12, 12)
    )
    for info in record["layers"]:
        module = original.get_submodule(info["name"])
        spec = config.layer(info["name"])
        assert spec.format == ("svd" if info["name"] == "fc" else "tucker2")
        fmt = jn.make_format(module, spec.format)
        ladder = fmt.ladder()
        i = ladder.index(info["ranks"])
        cost = [_cost(fmt, r, spec, geoms[info["name"]], use_macs) for r in ladder]
        cost.append(_cost(fmt, None, spec, geoms[info["name"]], use_macs))
        steps.append(cost[i + 1] - cost[i])
    assert budget["target"] - budget["achieved"] < max(steps)
    # the achieved figure is what the model holds
    if kind == "params":
        kept_dense = sum(
            sum(p.numel() for p in original.get_submodule(s["name"]).parameters())
            for s in record["skipped"]
            if s["reason"].startswith("kept dense")
        )
        held = sum(i["params_after"] for i in record["layers"]) + kept_dense
        assert held == budget["achieved"]
    assert_round_trip(tmp_path, model, "zoo:resnet20", kwargs, torch.randn(2, 1, 12, 12))


def test_unreachable_budget_and_missing_rank_are_clear_errors(tmp_path: Path) -> None:
    def error(params: dict) -> str:
        with pytest.raises(RecipeError) as info:
            validate_recipe(tiny_recipe(tmp_path, [{"decompose": params}]))
        return str(info.value)

    assert "stages.0.decompose: give a rank (for all layers or in overrides), or a budget" in error(
        {"overrides": {"*": {"format": "svd"}}}
    )
    assert "stages.0.decompose.budget: give exactly one of params or macs" in error({"budget": {}})
    assert "stages.0.decompose.rank: " in error({"rank": "big"})
    assert "stages.0.decompose.overrides.fc1.rank: " in error(
        {"overrides": {"fc1": {"rank": "big"}}}
    )
    assert "stages.0.decompose.layers: unknown key" in error({"layers": {"*": {"rank": 2}}})
    with pytest.raises(ModelError, match="cannot be met"):
        run_stage(
            "zoo:lenet5",
            {"image_size": 16},
            random_data((1, 16, 16)),
            {
                "decompose": {
                    "scope": {"include": ["fc2"]},
                    "format": "svd",
                    "budget": {"params": 0.01, "batches": 1},
                }
            },
        )


def test_skip_patterns_classifier_and_unsupported_formats_are_recorded() -> None:
    stage = {
        "decompose": {
            "format": "svd",
            "rank": 0.25,
            "overrides": {"block1.*": {"format": "tt", "rank": 2}},
            "scope": {"exclude": ["block2.*"], "exclude_classifier": True},
            "execution": "dense",
            "finetune": {"epochs": 0},
        }
    }
    model = build_model("zoo:small_cnn", {"in_channels": 2, "num_classes": 10, "image_size": 8})
    model.block1[0] = nn.Conv2d(2, 16, 3, padding=1, groups=2, bias=False)  # depthwise ×8
    model.block3[0] = nn.Conv2d(32, 32, 3, padding=1, groups=2, bias=False)
    _, out, record = run_stage("zoo:small_cnn", {}, random_data((2, 8, 8)), stage, model)
    reasons = {s["name"]: s["reason"] for s in record["skipped"]}
    assert reasons == {
        "block1.0": "tt needs groups=1, this conv has groups=2",
        "block2.0": "matches scope.exclude",
        "fc": "classifier (scope.exclude_classifier)",
    }
    assert [i["name"] for i in record["layers"]] == ["block3.0"]
    assert record["layers"][0]["execution"] == "dense"
    assert isinstance(out.block3[0], jn.SVDConv2d) and out.block3[0].spec.groups == 2
    # a rank that saves nothing leaves the layer dense, with the figures in the reason
    stage = {
        "decompose": {
            "scope": {"include": ["conv1"]},
            "format": "svd",
            "rank": 1.0,
            "finetune": {"epochs": 0},
        }
    }
    _, out, record = run_stage("zoo:lenet5", {}, random_data((1, 28, 28)), stage)
    assert record["layers"] == [] and type(out.conv1) is nn.Conv2d
    assert [s["name"] for s in record["skipped"]] == ["conv1"]  # out-of-scope layers not listed
    assert "keeps 920 of 520 params" in record["skipped"][0]["reason"]


def test_layers_in_scope_without_a_rank_are_skipped_with_a_reason() -> None:
    stage = {
        "decompose": {
            "overrides": {"fc1": {"rank": 4}},
            "scope": {"exclude": ["conv*"]},
            "execution": "dense",
            "finetune": {"epochs": 0},
        }
    }
    _, out, record = run_stage("zoo:lenet5", {}, random_data((1, 28, 28)), stage)
    assert [i["name"] for i in record["layers"]] == ["fc1"]
    assert record["layers"][0]["ranks"] == [4] and isinstance(out.fc1, jn.SVDLinear)
    reasons = {s["name"]: s["reason"] for s in record["skipped"]}
    assert reasons["fc2"].startswith("no rank for this layer")
    assert reasons["conv1"] == reasons["conv2"] == "matches scope.exclude"
    assert type(out.fc2) is nn.Linear


def _stage_on(
    builder: str, kwargs: dict, shape: tuple, **params: Any
) -> tuple[nn.Module, nn.Module, dict]:
    stage = {"decompose": {"execution": "factorized", "finetune": {"epochs": 0}, **params}}
    return run_stage(builder, kwargs, random_data(shape, n=8), stage)


def test_mobilenet_v2_skips_depthwise_with_reason(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    kwargs = {"num_classes": 10}
    _, model, record = _stage_on(
        "torchvision:mobilenet_v2",
        kwargs,
        (3, 32, 32),
        scope={"include": ["features.1*", "features.2.*", "classifier.*"]},
        rank=0.5,
        overrides={"classifier.*": {"rank": 0.1}},
    )
    reasons = {s["name"]: s["reason"] for s in record["skipped"]}
    assert reasons["features.1.conv.0.0"].startswith("depthwise conv")
    done = {i["name"]: i for i in record["layers"]}
    assert done["classifier.1"]["ranks"] == [1]  # 0.1 of full rank 10
    assert "features.1.conv.1" in done and "classifier.1" in done  # 1×1 conv: svd by default
    assert done["features.2.conv.0.0"]["format"] == "svd"
    assert_round_trip(
        tmp_path, model, "torchvision:mobilenet_v2", kwargs, torch.randn(1, 3, 32, 32)
    )


def test_resnet18_spatial_svd_and_vit_linears(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    _, model, record = _stage_on(
        "torchvision:resnet18",
        {"num_classes": 10},
        (3, 32, 32),
        scope={"include": ["layer1.0.*", "fc"]},
        overrides={"layer1.0.*": {"format": "svd_spatial", "rank": 0.25}, "fc": {"rank": 0.5}},
    )
    assert {i["name"] for i in record["layers"]} == {"layer1.0.conv1", "layer1.0.conv2", "fc"}
    assert_round_trip(
        tmp_path, model, "torchvision:resnet18", {"num_classes": 10}, torch.randn(1, 3, 32, 32)
    )
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": 28}
    _, model, record = _stage_on(
        "zoo:vit",
        kwargs,
        (1, 28, 28),
        rank=0.25,
        format="svd",
        scope={"exclude": ["patch_embed"]},
    )
    kinds = {type(m).__name__ for m in model.modules()}
    assert "SVDLinear" in kinds
    assert_round_trip(tmp_path, model, "zoo:vit", kwargs, torch.randn(1, 1, 28, 28))


def test_resnet32_vbmf_tucker(tmp_path: Path) -> None:
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": 12}
    _original, model, record = _stage_on(
        "zoo:resnet32",
        kwargs,
        (1, 12, 12),
        format="cp",
        rank=0.3,
        overrides={"layer3.*": {"format": "tucker2", "rank": "vbmf"}},
        scope={"exclude": ["conv1", "fc"]},
        cp_iters=10,
    )
    formats = {i["name"]: i["format"] for i in record["layers"]}
    assert formats and all(
        f == ("tucker2" if n.startswith("layer3.") else "cp") for n, f in formats.items()
    )
    assert any(f == "tucker2" for f in formats.values())
    assert any(f == "cp" for f in formats.values())
    assert_round_trip(tmp_path, model, "zoo:resnet32", kwargs, torch.randn(1, 1, 12, 12))
