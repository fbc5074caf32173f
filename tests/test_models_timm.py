"""``timm:NAME``: a timm model with the user's own weights (a .safetensors file), never with
timm's pretrained downloads; its files load without trust. timm's own tiny test models."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("timm")

import jointcomp
from jointcomp.baseline import get_baseline
from jointcomp.errors import FormatError, ModelError
from jointcomp.models import build_model, data_kwargs, is_allowed_builder
from jointcomp.models.resolve import check_builder
from jointcomp.recipe import validate_recipe
from tests.hostile import parts, reseal

NAME = "timm:test_efficientnet"  # about 0.1 M parameters
KWARGS = {"num_classes": 10, "in_chans": 1}


def _trained(seed: int = 0) -> torch.nn.Module:
    """The model with weights no fresh build has: a user's own trained model."""
    torch.manual_seed(seed)
    model = build_model(NAME, KWARGS)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_timm_builds_the_named_model_without_pretrained_weights():
    model = build_model(NAME, KWARGS)
    assert type(model).__name__ == "EfficientNet"
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert is_allowed_builder(NAME) and is_allowed_builder("timm:resnet18.a1_in1k")
    assert data_kwargs(NAME, (1, 8, 8), 10) == {"num_classes": 10}
    check_builder(NAME, KWARGS)


@pytest.mark.parametrize(
    ("builder", "kwargs", "message"),
    [
        (NAME, {"pretrained": True}, "never fetched"),
        (NAME, {"checkpoint_path": "/tmp/x.pth"}, "checkpoint_path is not allowed"),
        (NAME, {"pretrained_cfg_overlay": {"file": "/tmp/x"}}, "not allowed"),
        ("timm:no_such_model", {}, "unknown timm model"),
        ("timm:hf-hub:org/repo", {}, "malformed"),
        (NAME, {"num_classes": "ten"}, "rejected its arguments"),
    ],
)
def test_timm_refuses_downloads_files_and_unknown_names(builder, kwargs, message):
    with pytest.raises(ModelError, match=message):
        build_model(builder, kwargs)


def test_recipe_weights_are_loaded_into_the_timm_model(tmp_path):
    trained = _trained()
    weights = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(weights))
    recipe = validate_recipe(
        {
            "model": {"builder": NAME, "kwargs": KWARGS, "weights": str(weights)},
            "data": {"dataset": "digits", "test_split": 0.2},
            "stages": [{"encode": {}}],
        }
    )
    model, source = get_baseline(recipe, None, KWARGS, device=torch.device("cpu"))
    assert source == {"source": str(weights)}
    for key, tensor in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor), key


def test_timm_file_loads_bit_exactly_without_trust(tmp_path):
    model = _trained(1)
    path = tmp_path / "timm.jcz"
    jointcomp.save(model, path, builder=NAME, kwargs=KWARGS)
    loaded = jointcomp.load(path)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # a file asking timm for pretrained weights is refused, not fetched
    header, payload = parts(path.read_bytes())
    header["model"]["kwargs"]["pretrained"] = True
    with pytest.raises(FormatError, match="never fetched"):
        jointcomp.load(reseal(header, payload))


def test_missing_timm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm fails
    with pytest.raises(ModelError, match=r"jointcomp\[timm\]"):
        build_model(NAME, KWARGS)
