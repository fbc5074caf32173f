"""Batch-norm folding keeps the network's function (to float tolerance), records what it could
not fold and why, and leaves a model the file can describe."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from jointcomp.quant import fold_batchnorms
from jointcomp.quant.bnfold import fold_pair

from .quantize_util import LAYOUTS, factorized_small_cnn


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_folding_preserves_outputs(layout: str) -> None:
    model = factorized_small_cnn(layout)
    reference = copy.deepcopy(model)
    folded, skipped = fold_batchnorms(model)
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5, rtol=1e-4)
    names = {f["name"] for f in folded} | {s["name"] for s in skipped}
    assert names == {"block1.1", "block2.1", "block3.1"}
    for f in folded:
        assert isinstance(model.get_submodule(f["name"]), nn.Identity)
        assert f["found_by"] == "fx"
    if layout == "spatial-tt":  # block3.0 is a TT conv: its cores mix output channels
        assert [s["name"] for s in skipped] == ["block3.1"]
        assert "TT" in skipped[0]["reason"]
    else:
        assert not skipped


class _Branchy(nn.Module):
    """A conv whose output feeds a BN and a skip connection, and an untraceable branch."""

    def __init__(self, trace_breaker: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
        self.trace_breaker = trace_breaker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        z = self.bn(y) + y
        if self.trace_breaker and float(z.sum()) > 1e9:  # data-dependent: fx cannot trace it
            z = -z
        return self.body(z)


def _randomize(model: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.3, 3)
                m.weight.uniform_(-2, 2)
    return model.eval()


def test_shared_outputs_are_not_folded_and_untraceable_models_fall_back() -> None:
    model = _randomize(_Branchy())
    ref = copy.deepcopy(model)
    folded, skipped = fold_batchnorms(model)
    assert [f["name"] for f in folded] == ["body.1"]
    assert skipped == [{"name": "bn", "reason": "conv's output is also used elsewhere"}]
    x = torch.randn(3, 2, 5, 5)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5)

    model = _randomize(_Branchy(trace_breaker=True))
    ref = copy.deepcopy(model)
    folded, skipped = fold_batchnorms(model)
    # module order is trusted inside nn.Sequential only: conv and bn are merely neighbours
    assert [(f["name"], f["into"]) for f in folded] == [("body.1", "body.0")]
    assert folded[0]["found_by"].startswith("module order")
    assert [s["name"] for s in skipped] == ["bn"] and "module order" in skipped[0]["reason"]
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5)


def test_fold_adds_a_bias_and_refuses_bad_pairs() -> None:
    conv, bn = nn.Conv2d(3, 5, 3, bias=False), _randomize(nn.BatchNorm2d(5))
    seq = nn.Sequential(conv, bn).eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        want = seq(x)
        fold_pair(conv, bn)
        assert conv.bias is not None
        assert torch.allclose(conv(x), want, atol=1e-5)
    with pytest.raises(ValueError, match="output channels"):
        fold_pair(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match="running statistics"):
        fold_pair(nn.Conv2d(3, 5, 1), nn.BatchNorm2d(5, track_running_stats=False))
