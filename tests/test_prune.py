"""The prune stage: structured (torch-pruning) and unstructured (magnitude) pruning."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import jointcomp
from jointcomp.container import open_artifact, save
from jointcomp.context import Context
from jointcomp.data import DataBundle
from jointcomp.models import build_model
from jointcomp.nn.sparsity import fixed_zero_masks, fixed_zero_names
from jointcomp.stages.prune import PruneConfig, prune

from .stage_util import bundle_context


def _ctx(shape: tuple[int, ...], classes: int = 10, n: int = 64) -> Context:
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(
        torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)
    )
    data = DataBundle("random", ds, ds, ds, shape, classes)
    return bundle_context(data, train={"epochs": 1, "lr": 0.003}, name="prune")


def _prune(model: nn.Module, ctx: Context, **params) -> tuple[nn.Module, dict]:
    params.setdefault("finetune", {"epochs": 0})
    return prune(model, PruneConfig.model_validate(params), ctx)


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
    ctx = _ctx(shape)
    pruned, record = _prune(model, ctx, ratio=0.4, target="params")
    after = _params(pruned)
    assert after / before == pytest.approx(0.6, abs=0.05)  # removed ≈ 40% of parameters, as asked
    assert record["params_before"] == before and record["params_after"] == after
    out = pruned(torch.randn(2, *shape))
    assert out.shape == (2, 10)  # the classifier is left whole
    path = tmp_path / "m.jcz"
    save(path, pruned, builder, kwargs)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.equal(pruned(x), open_artifact(path).model(x))


@pytest.mark.parametrize("importance", ["l1", "l2", "fpgm", "bn_scale", "taylor"])
def test_importance_criteria(importance) -> None:
    model = build_model("zoo:small_cnn", {}).eval()
    ctx = _ctx((1, 8, 8))
    pruned, _ = _prune(model, ctx, ratio=0.5, importance=importance)
    assert pruned.block1[0].out_channels == 8
    assert pruned(torch.randn(1, 1, 8, 8)).shape == (1, 10)


def test_bn_scale_without_batchnorm_is_a_clear_error() -> None:
    from jointcomp.errors import ModelError

    with pytest.raises(ModelError, match="bn_scale needs BatchNorm"):
        _prune(build_model("zoo:lenet5", {}), _ctx((1, 28, 28)), importance="bn_scale")


def test_per_layer_ratios_and_scope_exclude() -> None:
    model = build_model("zoo:lenet5", {}).eval()
    ctx = _ctx((1, 28, 28))
    pruned, record = _prune(
        model, ctx, ratio=0.5, overrides={"conv1": {"ratio": 0.25}}, scope={"exclude": ["conv2"]}
    )
    assert pruned.conv1.out_channels == 15  # 20 × (1 − 0.25)
    assert pruned.conv2.out_channels == 50  # excluded
    assert pruned.fc1.out_features == 250
    assert pruned.fc2.out_features == 10  # the classifier is left out by default
    assert record["excluded"] == ["conv2", "fc2"]


def test_structured_scope_include_and_classifier() -> None:
    model = build_model("zoo:lenet300", {}).eval()
    pruned, record = _prune(model, _ctx((1, 28, 28)), ratio=0.5, scope={"include": ["fc1"]})
    assert (pruned.fc1.out_features, pruned.fc2.out_features) == (150, 100)
    assert record["excluded"] == ["fc2", "fc3"]
    # exclude_classifier: false lets structured pruning cut the output layer too
    pruned, record = _prune(
        build_model("zoo:lenet300", {}).eval(),
        _ctx((1, 28, 28)),
        ratio=0.5,
        scope={"exclude_classifier": False},
    )
    assert record["excluded"] == [] and pruned.fc3.out_features == 5


def test_round_to_keeps_multiples() -> None:
    model = build_model("zoo:lenet5", {}).eval()
    pruned, _ = _prune(model, _ctx((1, 28, 28)), ratio=0.3, round_to=8)
    assert pruned.conv2.out_channels % 8 == 0 and pruned.fc1.out_features % 8 == 0


def test_unstructured_pruning_keeps_zeros_through_finetune(tmp_path) -> None:
    model = build_model("zoo:lenet300", {}).eval()
    ctx = _ctx((1, 28, 28))
    pruned, record = _prune(
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
    assert fixed_zero_names(pruned) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert set(record["layers"]) == {"fc1", "fc2", "fc3"}
    masks = fixed_zero_masks(pruned)
    assert set(masks) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    ctx.train(pruned, PruneConfig(finetune={"epochs": 1, "lr": 0.05}).finetune)
    for name, mask in masks.items():
        w = dict(pruned.named_parameters())[name]
        assert torch.all(w[~mask] == 0), f"{name}: pruned weights regrew during fine-tuning"
    # the file stores the zero patterns; the loaded module keeps them marked
    path = tmp_path / "sparse.jcz"
    jointcomp.save(pruned, path, builder="zoo:lenet300")
    loaded = jointcomp.load(path)
    assert fixed_zero_names(loaded) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned.eval()(x))


def test_unstructured_rejects_other_importance() -> None:
    with pytest.raises(ValueError, match="importance must be l1"):
        PruneConfig.model_validate({"structured": False, "importance": "taylor"})
