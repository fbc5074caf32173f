"""The model zoo and the builder resolver."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from jointcomp.errors import ModelError
from jointcomp.models import build_model, data_kwargs, is_allowed_builder, list_zoo
from jointcomp.models.vit import Attention

# The input each zoo model is built for by default; a new zoo entry must be added here.
DEFAULT_INPUT = {
    "lenet300": (1, 28, 28),
    "lenet5": (1, 28, 28),
    "small_cnn": (1, 8, 8),
    "resnet20": (3, 32, 32),
    "resnet32": (3, 32, 32),
    "resnet56": (3, 32, 32),
    "vit": (1, 28, 28),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_zoo_lists_every_model():
    assert list_zoo() == sorted(DEFAULT_INPUT)


def test_lenet_parameter_counts():
    assert n_params(build_model("zoo:lenet300")) == 266_610
    assert n_params(build_model("zoo:lenet5")) == 431_080
    # image_size sets fc1's input: 32×32 → 50·5·5 features.
    assert build_model("zoo:lenet5", {"image_size": 32}).fc1.in_features == 1250


@pytest.mark.parametrize("name", sorted(DEFAULT_INPUT))
def test_zoo_forward_default_shape(name):
    model = build_model(f"zoo:{name}").eval()
    with torch.no_grad():
        out = model(torch.randn(3, *DEFAULT_INPUT[name]))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(DEFAULT_INPUT))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_zoo_forward_data_shapes(name, shape):
    # Every zoo model adapts to 28×28 grey and 32×32 colour inputs through data_kwargs.
    model = build_model(f"zoo:{name}", data_kwargs(f"zoo:{name}", shape, 7)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_resnet_width_and_option_b_shortcut():
    model = build_model("zoo:resnet20", {"width": 0.5})
    assert model.fc.in_features == 32
    down = model.layer2[0].shortcut
    assert isinstance(down[0], nn.Conv2d) and down[0].kernel_size == (1, 1)
    assert isinstance(model.layer2[1].shortcut, nn.Identity)
    assert len(build_model("zoo:resnet56").layer1) == 9


def test_vit_attention_is_standard_multihead_attention():
    attn = Attention(dim=16, num_heads=4)
    x = torch.randn(2, 5, 16)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 4, 4).permute(2, 0, 3, 1, 4).unbind(0)
    ref = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 5, 16)
    assert torch.allclose(attn(x), attn.proj(ref), atol=1e-6)


def test_vit_attention_follows_pruned_heads():
    attn = Attention(dim=16, num_heads=4)
    x = torch.randn(2, 5, 16)
    assert attn(x).shape == (2, 5, 16)
    # Keep heads 0 and 2 (head_dim 4): q, k and v rows of those heads, and proj's columns.
    keep = torch.cat([torch.arange(h * 4, h * 4 + 4) for h in (0, 2)])
    rows = torch.cat([keep + part * 16 for part in range(3)])
    qkv, proj = nn.Linear(16, 24), nn.Linear(8, 16)
    with torch.no_grad():
        qkv.weight.copy_(attn.qkv.weight[rows])
        qkv.bias.copy_(attn.qkv.bias[rows])
        proj.weight.copy_(attn.proj.weight[:, keep])
        proj.bias.copy_(attn.proj.bias)
    attn.qkv, attn.proj, attn.num_heads = qkv, proj, 2
    assert attn(x).shape == (2, 5, 16)


def test_unknown_zoo_name_lists_the_zoo():
    with pytest.raises(ModelError, match=r"unknown zoo model 'lenet7'.*lenet300.*vit"):
        build_model("zoo:lenet7")


def test_unknown_kwarg_is_named():
    with pytest.raises(ModelError, match=r"'depth'.*accepts: in_channels, num_classes, image_size"):
        build_model("zoo:lenet5", {"depth": 3})


@pytest.mark.parametrize(
    ("builder", "kwargs", "pattern"),
    [
        ("zoo:lenet5", {"image_size": 8}, "at least 12"),
        ("zoo:vit", {"image_size": 30, "patch_size": 4}, "divisible"),
        ("zoo:vit", {"dim": 30, "heads": 4}, "divisible"),
        ("zoo:resnet20", {"num_classes": 0}, "num_classes"),
        ("zoo:small_cnn", {"widths": [8, 8]}, "widths"),
    ],
)
def test_bad_kwarg_values(builder, kwargs, pattern):
    with pytest.raises(ModelError, match=pattern):
        build_model(builder, kwargs)


@pytest.mark.parametrize(
    "builder", ["", "zoo:", "lenet5", "a:b:c", "torchvision:", ":fn", "mod:", "1x:y", "zoo:le-net"]
)
def test_malformed_builder(builder):
    with pytest.raises(ModelError, match=r"malformed|unknown zoo model"):
        build_model(builder)


def test_non_string_builder_and_kwargs():
    with pytest.raises(ModelError, match=r"must be a string"):
        build_model(None)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=r"mapping"):
        build_model("zoo:lenet5", [("num_classes", 3)])  # type: ignore[arg-type]


def test_untrusted_callable_refused_trusted_runs():
    with pytest.raises(ModelError, match=r"not on the allow-list.*--trust.*trust=True"):
        build_model("torch.nn:Linear", {"in_features": 3, "out_features": 2}, trust=False)
    layer = build_model("torch.nn:Linear", {"in_features": 3, "out_features": 2}, trust=True)
    assert isinstance(layer, nn.Linear) and layer.out_features == 2


@pytest.mark.parametrize(
    ("builder", "pattern"),
    [
        ("no_such_pkg_xyz.mod:fn", "cannot import module 'no_such_pkg_xyz.mod'"),
        ("torch.nn:NoSuchLayer", "has no attribute 'NoSuchLayer'"),
        ("torch:__version__", "not callable"),
        ("collections:OrderedDict", "not a torch.nn.Module"),
    ],
)
def test_trusted_callable_errors(builder, pattern):
    with pytest.raises(ModelError, match=pattern):
        build_model(builder)


def test_is_allowed_builder():
    assert is_allowed_builder("zoo:lenet5")
    assert is_allowed_builder("torchvision:resnet18")
    assert not is_allowed_builder("torch.nn:Linear")
    assert not is_allowed_builder("zoo:")
    assert not is_allowed_builder("zoo:lenet5; import os")
    assert not is_allowed_builder(None)  # type: ignore[arg-type]


def test_torchvision_builds_with_num_classes():
    pytest.importorskip("torchvision", reason="torchvision is an optional extra")
    model = build_model("torchvision:resnet18", {"num_classes": 7})
    assert model.fc.out_features == 7
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(ModelError, match=r"unknown torchvision model 'resnet7'"):
        build_model("torchvision:resnet7")
    with pytest.raises(ModelError, match=r"torchvision:resnet18 rejected.*'bogus'"):
        build_model("torchvision:resnet18", {"bogus": 1})
    with pytest.raises(ModelError, match=r"weights=None"):
        build_model("torchvision:resnet18", {"weights": "DEFAULT"})


def test_torchvision_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(ModelError, match=r"pip install 'jointcomp\[vision\]'"):
        build_model("torchvision:resnet18")


def test_data_kwargs():
    assert data_kwargs("zoo:lenet5", (1, 28, 28), 10) == {
        "in_channels": 1,
        "num_classes": 10,
        "image_size": 28,
    }
    assert data_kwargs("zoo:resnet20", (3, 32, 24), 5)["image_size"] == [32, 24]
    assert data_kwargs("torchvision:resnet18", (3, 32, 32), 5) == {"num_classes": 5}
    assert data_kwargs("my.pkg:fn", (3, 32, 32), 5) == {}


@pytest.mark.parametrize("name", ["lenet5", "small_cnn", "resnet20", "vit"])
def test_structured_pruning_keeps_models_runnable(name):
    tp = pytest.importorskip("torch_pruning")
    model = build_model(f"zoo:{name}").eval()
    x = torch.randn(2, *DEFAULT_INPUT[name])
    kwargs: dict = {"ignored_layers": [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]}
    if name == "vit":
        heads = {m.qkv: m.num_heads for m in model.modules() if isinstance(m, Attention)}
        kwargs.update(
            num_heads=heads,
            prune_num_heads=True,
            prune_head_dims=False,
            head_pruning_ratio=0.5,
            unwrapped_parameters=[(model.cls_token, 2), (model.pos_embed, 2)],
        )
    pruner = tp.pruner.MagnitudePruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5, **kwargs
    )
    before = n_params(model)
    pruner.step()
    if name == "vit":
        for m in model.modules():
            if isinstance(m, Attention):
                m.num_heads = pruner.num_heads[m.qkv]
                assert m.num_heads == 2
    assert n_params(model) < before
    with torch.no_grad():
        assert model(x).shape == (2, 10)


@pytest.mark.slow
def test_small_cnn_learns_digits():
    from jointcomp.data import load_data

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest and immune to a busy CI box
    try:
        acc = _train_small_cnn_on_digits(load_data("digits", val_split=0.2, test_split=0.2))
    finally:
        torch.set_num_threads(threads)
    assert acc >= 0.95


def _train_small_cnn_on_digits(bundle) -> float:
    torch.manual_seed(0)
    x, y = bundle.train.tensors
    model = build_model("zoo:small_cnn")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    tx, ty = bundle.test.tensors  # held out: never trained on, nothing chosen on it
    with torch.no_grad():
        return (model(tx).argmax(1) == ty).float().mean().item()
