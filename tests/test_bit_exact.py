"""The bit-exact check can fail: ``check_bit_exact`` refuses a model read back with one tensor
off by one ulp, with a tensor missing, or holding a value its f16 storage cannot hold; ``save``
refuses a file that does not hold the model (a writer that narrows floats behind its back)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

import jointcomp
import jointcomp.stages.encode as encode_stage
from jointcomp.errors import JointcompError
from jointcomp.stages.encode import EncodeConfig, check_bit_exact, save


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).eval()
    with torch.no_grad():  # 1/3 needs more than f16's 11 bits of mantissa
        model[2].weight[0, 0] = 1 / 3
    return model


def test_an_identical_model_passes() -> None:
    model = _model()
    check_bit_exact(model, copy.deepcopy(model))
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.half().float())
    check_bit_exact(model, rounded, "f16")  # f16 storage: the f16-rounded values are expected


@pytest.mark.parametrize("name", ["0.weight", "1.running_var", "2.bias"])
def test_one_ulp_off_is_refused(name: str) -> None:
    model = _model()
    loaded = copy.deepcopy(model)
    tensor = loaded.state_dict()[name]  # shares storage with the module's tensor
    flat = tensor.view(-1)
    flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf")))
    assert not torch.equal(tensor, model.state_dict()[name])
    with pytest.raises(JointcompError, match=rf"tensor '{name}' did not survive"):
        check_bit_exact(model, loaded)


def test_a_missing_tensor_is_refused() -> None:
    model = _model()
    loaded = copy.deepcopy(model)
    loaded[2].register_parameter("bias", None)
    assert "2.bias" not in loaded.state_dict()
    with pytest.raises(JointcompError, match=r"tensor '2.bias' did not survive"):
        check_bit_exact(model, loaded)


@pytest.mark.parametrize("value", [1 / 3, 1e6, 1e-9])  # rounded, beyond f16's range, subnormal
def test_f16_storage_of_a_value_f16_cannot_hold_is_refused(value: float) -> None:
    model = _model()
    with torch.no_grad():
        model[0].weight[1, 1] = value
    assert model[0].weight[1, 1].half().float() != model[0].weight[1, 1]
    exact = copy.deepcopy(model)  # a file that kept the float32 value
    with pytest.raises(JointcompError, match=r"tensor '0.weight' did not survive"):
        check_bit_exact(model, exact, "f16")
    check_bit_exact(model, exact, "f32")


def test_save_refuses_a_file_that_does_not_hold_the_model(tmp_path: Path, monkeypatch) -> None:
    model = _model()
    save(model, tmp_path / "ok.jcz", builder="tests.test_bit_exact:_model")
    real = encode_stage.write_file

    def narrowing(*args, choose, **kwargs):  # a writer that stores every float as f16
        def f16(name: str, tensor: torch.Tensor):
            choice = choose(name, tensor)
            if tensor.dtype == torch.float32:
                return dataclasses.replace(choice, storage="f16")
            return choice

        return real(*args, choose=f16, **kwargs)

    monkeypatch.setattr(encode_stage, "write_file", narrowing)
    with pytest.raises(JointcompError, match=r"did not survive the file bit-exactly"):
        save(model, tmp_path / "narrowed.jcz", builder="tests.test_bit_exact:_model")
    # the same writer is right when f16 is what was asked for
    save(model, tmp_path / "f16.jcz", EncodeConfig(float_storage="f16"), builder=_model)
    loaded = jointcomp.load(tmp_path / "f16.jcz", trust=True)
    assert loaded[2].weight[0, 0] == torch.tensor(1 / 3).half().float()
