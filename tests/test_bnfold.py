"""Batch-norm folding (``jointcomp.nn.bnfold``): one fold for plain, factorized and T-Basis
layers keeps the network's function (to float tolerance), records what it could not fold and
why — never folding into a tensor that is already quantized — and leaves a model the file can
describe. The ``fold`` stage selects layers by scope and rounds what it wrote (``round``);
``quantize: {fold: ...}`` folds before its quantizers see the weights."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import jointcomp
from jointcomp.nn.bnfold import fold_batchnorms, fold_pair
from jointcomp.nn.quantized import IntQuantized, attach, quantized_tensors
from jointcomp.nn.tbasis import TBasisConv2d, TBasisLinear
from jointcomp.quant import QuantSpec, ptq_tensor

from .quantize_util import (
    KWARGS,
    LAYOUTS,
    factorized_small_cnn,
    run_fold,
    run_quantize,
    small_cnn,
    uneven_tbasis_model,
)

BNS = {"block1.1", "block2.1", "block3.1"}


def _model(layout: str) -> nn.Module:
    return uneven_tbasis_model() if layout == "tbasis" else factorized_small_cnn(layout)


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> bool:
    return float((a - b).abs().max()) <= rel * float(b.abs().max())


@pytest.mark.parametrize("layout", [*LAYOUTS, "tbasis"])
def test_folding_preserves_outputs(layout: str) -> None:
    model = _model(layout)
    reference = copy.deepcopy(model)
    folded, skipped = fold_batchnorms(model)
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        assert _close(model(x), reference(x), 1e-5)
    assert {f["name"] for f in folded} | {s["name"] for s in skipped} == BNS
    for f in folded:
        assert isinstance(model.get_submodule(f["name"]), nn.Identity)
        assert f["found_by"] == "fx" and f["into"] == f["name"][:-1] + "0"
    if layout == "spatial-tt":  # block3.0 is a TT conv: its cores mix output channels
        assert [s["name"] for s in skipped] == ["block3.1"]
        assert "TT" in skipped[0]["reason"]
    else:
        assert not skipped
    if layout == "tbasis":  # T-Basis layers take the factor into an output scale, not cores
        for name in ("block2.0", "block3.0"):
            layer = model.get_submodule(name)
            assert isinstance(layer, TBasisConv2d)
            assert isinstance(layer.out_scale, nn.Parameter) and layer.bias is not None
        assert model.block2[0].basis is model.fc.basis  # the shared basis is left as it was
        assert isinstance(model.fc, TBasisLinear) and getattr(model.fc, "out_scale", None) is None


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
    tbasis = uneven_tbasis_model().block2[0]  # 32 output channels
    with pytest.raises(ValueError, match="features after"):
        fold_pair(tbasis, nn.BatchNorm2d(16))
    with pytest.raises(ValueError, match="running statistics"):
        fold_pair(tbasis, nn.BatchNorm2d(32, track_running_stats=False))
    assert tbasis.out_scale is None  # a refused fold leaves the layer as it was


def _quantize_tensor(model: nn.Module, name: str) -> None:
    path, _, tensor = name.rpartition(".")
    module = model.get_submodule(path)
    x = getattr(module, tensor).detach()
    attach(module, tensor, ptq_tensor(x, QuantSpec(8, "tensor"), None))


@pytest.mark.parametrize(
    "build,tensor,channels",
    [
        (lambda: nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)), "0.weight", 2),
        (lambda: nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)), "0.bias", 2),
        (lambda: factorized_small_cnn("lowrank-sparse").block2, "0.sparse", 16),
        (lambda: factorized_small_cnn("svd-tucker-cp").block2, "0.last.weight", 16),
        (lambda: uneven_tbasis_model().block2, "0.coefficients.coef", 16),  # cores: folds
        (lambda: _tbasis_with_bias(), "0.bias", 16),
    ],
    ids=["weight", "bias-only", "sparse-residual", "tucker-last", "tbasis-cores", "tbasis-bias"],
)
def test_quantized_tensors_are_never_folded_into(build, tensor: str, channels: int) -> None:
    model = _randomize(build())
    _quantize_tensor(model, tensor)
    x = torch.randn(3, channels, 8, 8)
    with torch.no_grad():
        before = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folded, skipped = fold_batchnorms(model)
    if tensor.endswith(".coef"):  # T-Basis folds into its output scale, beside the cores
        assert [f["name"] for f in folded] == ["1"] and not skipped
        with torch.no_grad():
            assert _close(model(x), before, 1e-5)
        return
    what = tensor.rpartition(".")[2]
    reason = f"its {what} is already quantized: fold before quantizing"
    assert not folded and skipped == [{"name": "1", "reason": reason}]
    assert isinstance(model[1], nn.BatchNorm2d)
    after = model.state_dict()
    assert set(after) == set(state) and all(torch.equal(after[k], state[k]) for k in state)
    with torch.no_grad():
        assert torch.equal(model(x), before)


def _tbasis_with_bias() -> nn.Module:
    """A T-Basis conv that has a bias, before its batch norm."""
    layer = uneven_tbasis_model().block2[0]
    with torch.no_grad():
        layer.bias = nn.Parameter(torch.linspace(-1, 1, 32))
    return nn.Sequential(layer, nn.BatchNorm2d(32))


def test_fold_stage_after_qat_refuses_quantized_plain_layers() -> None:
    model, _ = run_quantize(
        small_cnn(),
        {"qat": {"bn_batches": 2, "finetune": {"max_batches": 1}}, "bits": {"weights": 6}},
    )
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        before = model(x)
    model, record = run_fold(model, {"round": {}})
    assert record["folded"] == []
    assert {r["name"] for r in record["not_folded"]} == BNS
    for r in record["not_folded"]:
        assert r["reason"] == "its weight is already quantized: fold before quantizing"
        assert isinstance(model.get_submodule(r["name"]), nn.BatchNorm2d)
    assert "rounded" not in record  # nothing folded, nothing to round
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_quantize_folds_before_its_quantizers_see_the_weights() -> None:
    model = small_cnn()
    folded = copy.deepcopy(model)
    fold_batchnorms(folded)
    model, record = run_quantize(
        model, {"ptq": {}, "fold": {}, "bits": {"weights": 8}, "calibration": "absmax"}
    )
    summary = record["summary"]
    assert {f["name"] for f in summary["bn_folded"]} == BNS and summary["bn_not_folded"] == []
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    q = quantized_tensors(model)
    for layer in ("block1.0", "block2.0", "block3.0", "fc"):
        # the grid is the folded weight's: each value lies within half a step of it
        p = q[f"{layer}.weight"]
        want = folded.get_submodule(layer).weight.detach()
        step = p.scale.reshape(-1, *[1] * (want.dim() - 1))
        assert bool(((p.dequantize() - want).abs() <= 0.5 * step + 1e-6).all())
        # the fold's bias is the model's (float: bits.biases is null)
        got_bias = model.get_submodule(layer).bias
        assert torch.equal(got_bias.detach(), folded.get_submodule(layer).bias.detach())
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert _close(model(x), folded(x), 0.05)

    # fold's scope: only the layers it names take their batch norms
    model, record = run_quantize(small_cnn(), {"ptq": {}, "fold": {"include": ["block2.*"]}})
    summary = record["summary"]
    assert [f["name"] for f in summary["bn_folded"]] == ["block2.1"]
    reasons = {r["name"]: r["reason"] for r in summary["bn_not_folded"]}
    assert reasons == {
        "block1.1": "block1.0 is out of scope",
        "block3.1": "block3.0 is out of scope",
    }


def test_fold_stage_rounds_the_tbasis_scales_and_biases_it_wrote(tmp_path: Path) -> None:
    quantized, _ = run_quantize(uneven_tbasis_model(), {"ptq": {}, "bits": {"factors": 8}})
    float_fold, record = run_fold(copy.deepcopy(quantized))  # round: null keeps them float
    assert "rounded" not in record
    assert isinstance(float_fold.block2[0].out_scale, nn.Parameter)

    # a full-range grid around the values' max-abs / min-max (no clipping): every rounded
    # value lies within half a step of the float fold's
    full = {"narrow_range": False}
    rounding = {
        "scales": {"bits": 5, "symmetric": False, **full},
        "biases": {"bits": 4, **full},
        "calibration": "absmax",
    }
    coarse, _ = run_fold(copy.deepcopy(quantized), {"round": rounding})
    q = quantized_tensors(coarse)
    assert q["block2.0.out_scale"].int_range() == (0, 31)
    assert q["block2.0.bias"].int_range() == (-8, 7)
    for name in ("block2.0.out_scale", "block2.0.bias", "block3.0.out_scale", "block3.0.bias"):
        layer, _, tensor = name.rpartition(".")
        want = getattr(float_fold.get_submodule(layer), tensor).detach()
        assert bool(((q[name].dequantize() - want).abs() <= 0.5 * q[name].scale + 1e-6).all())

    rounding = {"scales": {"bits": 6, "symmetric": False}, "biases": {"bits": 8}}
    model, record = run_fold(quantized, {"round": rounding})
    assert [f["name"] for f in record["folded"]] == ["block2.1", "block3.1"]
    assert record["not_folded"] == [
        {"name": "block1.1", "reason": "its weight is already quantized: fold before quantizing"}
    ]
    want = {f"block{i}.0.out_scale": 6 for i in (2, 3)} | {f"block{i}.0.bias": 8 for i in (2, 3)}
    assert {r["tensor"]: r["bits"] for r in record["rounded"]} == want
    q = quantized_tensors(model)
    assert {name: q[name].bits for name in want} == want
    assert all(isinstance(q[name], IntQuantized) for name in want)
    assert q["block2.0.out_scale"].int_range() == (0, 62)  # unsigned, narrow: the grid asked
    assert q["block2.0.bias"].int_range() == (-127, 127)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert _close(model(x), float_fold(x), 0.05)
    # the rounded fold is a file that loads bit for bit
    path = tmp_path / "folded.jcz"
    jointcomp.save(model, path, builder="zoo:small_cnn", kwargs=KWARGS)
    loaded = jointcomp.load(path)
    assert set(quantized_tensors(loaded)) == set(q)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_fold_stage_scope_and_factorized_biases() -> None:
    model = factorized_small_cnn("lowrank-sparse")  # block1.0 plain, block2.0 Tucker + sparse
    reference = copy.deepcopy(model)
    config = {"scope": {"exclude": ["block3.*"]}, "round": {"scales": None, "biases": {"bits": 12}}}
    model, record = run_fold(model, config)
    assert [(f["name"], f["into"]) for f in record["folded"]] == [
        ("block1.1", "block1.0"),
        ("block2.1", "block2.0"),
    ]
    assert record["not_folded"] == [{"name": "block3.1", "reason": "block3.0 is out of scope"}]
    # the bias a fold wrote sits in the sub-layer that produces the outputs, rounded there
    want = {"block1.0.bias": 12, "block2.0.lowrank.last.bias": 12}
    assert {r["tensor"]: r["bits"] for r in record["rounded"]} == want
    q = quantized_tensors(model)
    assert {name: q[name].bits for name in want} == want
    assert isinstance(model.block3[1], nn.BatchNorm2d)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert _close(model(x), reference(x), 1e-3)
