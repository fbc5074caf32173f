"""The prune stage: structured (torch-pruning) and unstructured (magnitude) pruning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from jointcomp.container import open_artifact, save
from jointcomp.data import DataBundle
from jointcomp.models import build_model
from jointcomp.recipe import validate_recipe
from jointcomp.stages import StageContext
from jointcomp.stages.prune import PruneParams, PruneStage

from .conftest import tiny_recipe


def _ctx(tmp_path: Path, shape: tuple[int, ...], classes: int = 10, n: int = 64) -> StageContext:
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(
        torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)
    )
    data = DataBundle("random", ds, ds, shape, classes)
    recipe = validate_recipe(tiny_recipe(tmp_path))
    return StageContext(
        recipe=recipe,
        data=data,
        teacher=None,
        device=torch.device("cpu"),
        seed=0,
        stage_index=0,
        stage_name="prune",
        out_dir=tmp_path,
        builder="",
        builder_kwargs={},
    )


def _prune(model: nn.Module, ctx: StageContext, **params) -> nn.Module:
    params.setdefault("finetune", {"epochs": 0})
    return PruneStage(PruneParams.model_validate(params)).apply(model, ctx)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


CASES = [
    ("zoo:lenet5", {}, (1, 28, 28)),
    ("zoo:lenet300", {}, (1, 28, 28)),
    ("zoo:resnet20", {"in_channels": 1}, (1, 28, 28)),
    ("zoo:vit", {}, (1, 28, 28)),
    ("torchvision:resnet18", {"num_classes": 10}, (3, 32, 32)),
    ("torchvision:mobilenet_v2", {"num_classes": 10}, (3, 32, 32)),
]


@pytest.mark.parametrize("builder,kwargs,shape", CASES)
def test_structured_pruning_removes_params_and_runs(tmp_path, builder, kwargs, shape) -> None:
    if builder.startswith("torchvision"):
        pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = build_model(builder, kwargs).eval()
    before = _params(model)
    ctx = _ctx(tmp_path, shape)
    pruned = _prune(model, ctx, ratio=0.4, target="params")
    after = _params(pruned)
    assert after / before == pytest.approx(0.6, abs=0.05)  # removed ≈ 40% of parameters, as asked
    assert ctx.record["params_before"] == before and ctx.record["params_after"] == after
    out = pruned(torch.randn(2, *shape))
    assert out.shape == (2, 10)  # the classifier is left whole
    path = tmp_path / "m.jcz"
    save(path, pruned, builder, kwargs)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.equal(pruned(x), open_artifact(path).model(x))


@pytest.mark.parametrize("importance", ["l1", "l2", "fpgm", "bn_scale", "taylor"])
def test_importance_criteria(tmp_path, importance) -> None:
    model = build_model("zoo:small_cnn", {}).eval()
    ctx = _ctx(tmp_path, (1, 8, 8))
    pruned = _prune(model, ctx, ratio=0.5, importance=importance)
    assert pruned.block1[0].out_channels == 8
    assert pruned(torch.randn(1, 1, 8, 8)).shape == (1, 10)


def test_bn_scale_without_batchnorm_is_a_clear_error(tmp_path) -> None:
    from jointcomp.errors import ModelError

    with pytest.raises(ModelError, match="bn_scale needs BatchNorm"):
        _prune(build_model("zoo:lenet5", {}), _ctx(tmp_path, (1, 28, 28)), importance="bn_scale")


def test_per_layer_ratios_and_ignore(tmp_path) -> None:
    model = build_model("zoo:lenet5", {}).eval()
    ctx = _ctx(tmp_path, (1, 28, 28))
    pruned = _prune(model, ctx, ratio=0.5, layers={"conv1": 0.25}, ignore=["conv2"])
    assert pruned.conv1.out_channels == 15  # 20 × (1 − 0.25)
    assert pruned.conv2.out_channels == 50  # ignored
    assert pruned.fc1.out_features == 250


def test_round_to_keeps_multiples(tmp_path) -> None:
    model = build_model("zoo:lenet5", {}).eval()
    pruned = _prune(model, _ctx(tmp_path, (1, 28, 28)), ratio=0.3, round_to=8)
    assert pruned.conv2.out_channels % 8 == 0 and pruned.fc1.out_features % 8 == 0


def test_unstructured_pruning_keeps_zeros_through_finetune(tmp_path) -> None:
    model = build_model("zoo:lenet300", {}).eval()
    ctx = _ctx(tmp_path, (1, 28, 28))
    pruned = _prune(
        model,
        ctx,
        structured=False,
        ratio=0.9,
        global_ranking=True,
        iterative_steps=2,
        finetune={"epochs": 1, "lr": 0.01},
    )
    weights = [m.weight for m in pruned.modules() if isinstance(m, nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    assert zeros / total == pytest.approx(0.9, abs=0.001)
    assert set(ctx.meta["sparse"]) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    masks = ctx.sparse_masks(pruned)
    ctx.finetune(pruned, PruneParams(finetune={"epochs": 1, "lr": 0.05}).finetune)
    for name, mask in masks.items():
        w = dict(pruned.named_parameters())[name]
        assert torch.all(w[~mask] == 0), f"{name}: pruned weights regrew during fine-tuning"


def test_unstructured_rejects_other_importance() -> None:
    with pytest.raises(ValueError, match="importance must be l1"):
        PruneParams.model_validate({"structured": False, "importance": "taylor"})
