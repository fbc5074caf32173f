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
from jointcomp.container import open_artifact, save
from jointcomp.data.bundle import DataBundle
from jointcomp.errors import RecipeError
from jointcomp.models import build_model
from jointcomp.recipe import validate_recipe
from jointcomp.stages import STAGES, StageContext

from .conftest import tiny_recipe

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
    return DataBundle("random", ds, ds, shape, classes)


def run_stage(
    tmp_path: Path,
    builder: str,
    kwargs: dict,
    data: DataBundle,
    stage: dict,
    model: nn.Module | None = None,
) -> tuple[nn.Module, nn.Module, StageContext]:
    """Apply one stage to a freshly built (untrained) model; returns (original, result, ctx)."""
    raw = tiny_recipe(tmp_path, [stage])
    raw["model"]["builder"] = builder
    recipe = validate_recipe(raw)
    spec = recipe.stages[0]
    torch.manual_seed(0)
    original = model if model is not None else build_model(builder, kwargs).eval()
    ctx = StageContext(
        recipe=recipe,
        data=data,
        teacher=None,
        device=torch.device("cpu"),
        seed=0,
        stage_index=0,
        stage_name=spec.name,
        out_dir=tmp_path,
        builder=builder,
        builder_kwargs=kwargs,
    )
    import copy

    result = STAGES[spec.name](spec.params).apply(copy.deepcopy(original), ctx)
    return original, result.eval(), ctx


def assert_round_trip(
    tmp_path: Path, model: nn.Module, builder: str, kwargs: dict, x: torch.Tensor
) -> None:
    path = tmp_path / "model.jcz"
    save(path, model.eval(), builder, kwargs)
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
            "layers": {
                "conv1": {"format": "cp", "rank": 4},
                "conv2": {"format": "tucker2", "rank": 0.5, "sparse": 0.02},
                "fc1": {"format": "tt", "rank": 8, "sparse": 0.01},
                "fc2": {"format": "svd", "rank": "energy:0.8"},
            },
            "finetune": {"epochs": 1, "max_batches": 2},
            "timing_seconds": 0.005,
        }
    }
    _original, model, ctx = run_stage(
        tmp_path, "zoo:lenet5", kwargs, random_data((1, 28, 28)), stage
    )
    layers = ctx.record["layers"]
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
    masks = ctx.sparse_masks(model)
    assert set(masks) == {"conv2.sparse", "fc1.sparse"}
    assert ctx.meta["sparse"] == ["conv2.sparse", "fc1.sparse"]
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
            "layers": {"*": {"format": "tucker2"}, "fc": {"format": "svd"}},
            "budget": {kind: 0.3, "batches": 1, "batch_size": 32, "levels": 4},
            "execution": "factorized",
            "finetune": {"epochs": 0},
        }
    }
    original, model, ctx = run_stage(
        tmp_path, "zoo:resnet20", kwargs, random_data((1, 12, 12)), stage
    )
    budget = ctx.record["budget"]
    assert budget["kind"] == kind and budget["achieved"] <= budget["target"]
    # one step up in any decomposed layer's ladder would be enough to cross the target
    use_macs = kind == "macs"
    steps = []
    stage_obj = STAGES["decompose"](
        validate_recipe(tiny_recipe(tmp_path, [stage])).stages[0].params
    )
    from jointcomp.stages.layerops import trace_layers

    geoms, _ = trace_layers(
        original, [i["name"] for i in ctx.record["layers"]], torch.zeros(1, 1, 12, 12)
    )
    layer_specs = stage_obj.params.layers
    for info in ctx.record["layers"]:
        module = original.get_submodule(info["name"])
        fmt = jn.make_format(module, "svd" if info["name"] == "fc" else "tucker2")
        ladder = fmt.ladder()
        i = ladder.index(info["ranks"])
        spec = layer_specs["fc" if info["name"] == "fc" else "*"]
        cost = [stage_obj._cost(fmt, r, spec, geoms[info["name"]], use_macs) for r in ladder]
        cost.append(stage_obj._cost(fmt, None, spec, geoms[info["name"]], use_macs))
        steps.append(cost[i + 1] - cost[i])
    assert budget["target"] - budget["achieved"] < max(steps)
    # the achieved figure is what the model holds
    if kind == "params":
        kept_dense = sum(
            sum(p.numel() for p in original.get_submodule(s["name"]).parameters())
            for s in ctx.record["skipped"]
            if s["reason"].startswith("kept dense")
        )
        held = sum(i["params_after"] for i in ctx.record["layers"]) + kept_dense
        assert held == budget["achieved"]
    assert_round_trip(tmp_path, model, "zoo:resnet20", kwargs, torch.randn(2, 1, 12, 12))


def test_unreachable_budget_and_missing_rank_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="give a rank, or a budget"):
        validate_recipe(tiny_recipe(tmp_path, [{"decompose": {"layers": {"*": {}}}}]))
    with pytest.raises(RecipeError, match="exactly one of params or macs"):
        validate_recipe(tiny_recipe(tmp_path, [{"decompose": {"budget": {}}}]))
    with pytest.raises(RecipeError, match="rank"):
        validate_recipe(tiny_recipe(tmp_path, [{"decompose": {"layers": {"*": {"rank": "big"}}}}]))
    from jointcomp.errors import ModelError

    with pytest.raises(ModelError, match="cannot be met"):
        run_stage(
            tmp_path,
            "zoo:lenet5",
            {"image_size": 16},
            random_data((1, 16, 16)),
            {
                "decompose": {
                    "layers": {"fc2": {"format": "svd"}},
                    "budget": {"params": 0.01, "batches": 1},
                }
            },
        )


def test_skip_patterns_classifier_and_unsupported_formats_are_recorded(tmp_path: Path) -> None:
    stage = {
        "decompose": {
            "layers": {
                "block1.*": {"format": "tt", "rank": 2},
                "*": {"format": "svd", "rank": 0.25},
            },
            "skip": ["block2.*"],
            "skip_classifier": True,
            "execution": "dense",
            "finetune": {"epochs": 0},
        }
    }
    model = build_model("zoo:small_cnn", {"in_channels": 2, "num_classes": 10, "image_size": 8})
    model.block1[0] = nn.Conv2d(2, 16, 3, padding=1, groups=2, bias=False)  # depthwise ×8
    model.block3[0] = nn.Conv2d(32, 32, 3, padding=1, groups=2, bias=False)
    _, out, ctx = run_stage(tmp_path, "zoo:small_cnn", {}, random_data((2, 8, 8)), stage, model)
    reasons = {s["name"]: s["reason"] for s in ctx.record["skipped"]}
    assert reasons == {
        "block1.0": "tt needs groups=1, this conv has groups=2",
        "block2.0": "matches a skip pattern",
        "fc": "classifier (skip_classifier)",
    }
    assert [i["name"] for i in ctx.record["layers"]] == ["block3.0"]
    assert ctx.record["layers"][0]["execution"] == "dense"
    assert isinstance(out.block3[0], jn.SVDConv2d) and out.block3[0].spec.groups == 2
    # a rank that saves nothing leaves the layer dense, with the figures in the reason
    stage = {
        "decompose": {
            "layers": {"conv1": {"format": "svd", "rank": 1.0}},
            "finetune": {"epochs": 0},
        }
    }
    _, out, ctx = run_stage(tmp_path, "zoo:lenet5", {}, random_data((1, 28, 28)), stage)
    assert ctx.record["layers"] == [] and type(out.conv1) is nn.Conv2d
    assert "keeps 920 of 520 params" in ctx.record["skipped"][0]["reason"]


def _stage_on(
    tmp_path: Path, builder: str, kwargs: dict, shape: tuple, layers: dict, **extra: Any
) -> tuple[nn.Module, nn.Module, StageContext]:
    stage = {
        "decompose": {
            "layers": layers,
            "execution": "factorized",
            "finetune": {"epochs": 0},
            **extra,
        }
    }
    return run_stage(tmp_path, builder, kwargs, random_data(shape, n=8), stage)


def test_mobilenet_v2_skips_depthwise_with_reason(tmp_path: Path) -> None:
    kwargs = {"num_classes": 10}
    _, model, ctx = _stage_on(
        tmp_path,
        "torchvision:mobilenet_v2",
        kwargs,
        (3, 32, 32),
        {
            "features.1*": {"rank": 0.5},
            "features.2.*": {"rank": 0.5},
            "classifier.*": {"rank": 0.1},
        },
    )
    reasons = {s["name"]: s["reason"] for s in ctx.record["skipped"]}
    assert reasons["features.1.conv.0.0"].startswith("depthwise conv")
    done = {i["name"]: i for i in ctx.record["layers"]}
    assert "features.1.conv.1" in done and "classifier.1" in done  # 1×1 conv: svd by default
    assert done["features.2.conv.0.0"]["format"] == "svd"
    assert_round_trip(
        tmp_path, model, "torchvision:mobilenet_v2", kwargs, torch.randn(1, 3, 32, 32)
    )


def test_resnet18_spatial_svd_and_vit_linears(tmp_path: Path) -> None:
    _, model, ctx = _stage_on(
        tmp_path,
        "torchvision:resnet18",
        {"num_classes": 10},
        (3, 32, 32),
        {"layer1.0.*": {"format": "svd_spatial", "rank": 0.25}, "fc": {"rank": 0.5}},
    )
    assert {i["name"] for i in ctx.record["layers"]} == {"layer1.0.conv1", "layer1.0.conv2", "fc"}
    assert_round_trip(
        tmp_path, model, "torchvision:resnet18", {"num_classes": 10}, torch.randn(1, 3, 32, 32)
    )
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": 28}
    _, model, ctx = _stage_on(
        tmp_path,
        "zoo:vit",
        kwargs,
        (1, 28, 28),
        {"*": {"rank": 0.25, "format": "svd"}},
        skip=["patch_embed"],
    )
    kinds = {type(m).__name__ for m in model.modules()}
    assert "SVDLinear" in kinds
    assert_round_trip(tmp_path, model, "zoo:vit", kwargs, torch.randn(1, 1, 28, 28))


def test_resnet32_vbmf_tucker(tmp_path: Path) -> None:
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": 12}
    _original, model, ctx = _stage_on(
        tmp_path,
        "zoo:resnet32",
        kwargs,
        (1, 12, 12),
        {"layer3.*": {"format": "tucker2", "rank": "vbmf"}, "*": {"format": "cp", "rank": 0.3}},
        skip=["conv1", "fc"],
        cp_iters=10,
    )
    assert any(i["format"] == "tucker2" for i in ctx.record["layers"])
    assert any(i["format"] == "cp" for i in ctx.record["layers"])
    assert_round_trip(tmp_path, model, "zoo:resnet32", kwargs, torch.randn(1, 1, 12, 12))
