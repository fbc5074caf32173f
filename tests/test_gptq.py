"""GPTQ (jointcomp.quant.gptq) on its own: on a layer whose inputs are correlated its output
error is below round-to-nearest's on the same grid, the errors it reports are the layer's real
output errors, its integers lie on the grid, and fixed zeros stay zero."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jointcomp.quant.gptq import GPTQSettings, gptq_layers, gptq_weight, input_rows
from jointcomp.quant.ptq import ptq_tensor
from jointcomp.quant.spec import QuantSpec
from jointcomp.quant.targets import find_targets
from jointcomp.tensor.quant import int_range


def correlated_inputs(n: int, features: int, rank: int = 4, seed: int = 0) -> torch.Tensor:
    """Rows near a ``rank``-dimensional subspace (as real layers' inputs are)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(rank, features, generator=g)
    return torch.randn(n, rank, generator=g) @ mix + 0.05 * torch.randn(n, features, generator=g)


def relative_output_error(w: torch.Tensor, w_hat: torch.Tensor, x: torch.Tensor) -> float:
    return float(((x @ (w - w_hat).T) ** 2).sum() / ((x @ w.T) ** 2).sum())


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_output_error_is_below_round_to_nearest(bits: int, act_order: bool) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(48, 24)
    x = correlated_inputs(512, 48)
    h = (x.T @ x).double() / len(x)
    spec = QuantSpec(bits)
    settings = GPTQSettings(act_order=act_order, block=16)  # several lazy blocks
    q, errors = gptq_weight(layer.weight, h, spec, 0, "mse", settings)
    rtn = ptq_tensor(layer.weight.detach(), spec, 0, "mse")
    w = layer.weight.detach()
    ours = relative_output_error(w, q.dequantize(), x)
    nearest = relative_output_error(w, rtn.dequantize(), x)
    assert ours < 0.5 * nearest, (ours, nearest)
    # the reported errors are the layer's own, measured on the inputs
    assert errors["error"] == pytest.approx(ours, rel=1e-3)
    assert errors["rtn_error"] == pytest.approx(nearest, rel=1e-3)
    # same grid as round-to-nearest: integers in range, scales identical
    lo, hi = int_range(bits, True, True)
    assert int(q.int_repr.min()) >= lo and int(q.int_repr.max()) <= hi
    assert torch.equal(q.scale, rtn.scale)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gptq_keeps_fixed_zeros_and_never_loses_to_rounding(seed: int) -> None:
    """Pruned weights stay exactly zero; where GPTQ's greedy order loses to round-to-nearest
    on the calibration inputs (pruned positions cannot absorb error), the rounded codes are
    kept instead, so the layer is never worse than plain PTQ."""
    torch.manual_seed(seed)
    w = torch.randn(16, 32)
    w[torch.rand_like(w) < 0.5] = 0
    x = correlated_inputs(256, 32)
    spec, h = QuantSpec(4), (x.T @ x).double()
    q, errors = gptq_weight(w, h, spec, 0, "mse", GPTQSettings(), True)
    assert bool((q.dequantize()[w == 0] == 0).all())  # pruned weights stay pruned
    assert errors["error"] <= errors["rtn_error"]
    assert errors["error"] == pytest.approx(relative_output_error(w, q.dequantize(), x), rel=1e-3)
    rtn = ptq_tensor(w, spec, 0, "mse", fixed_zeros=True)
    same = torch.equal(q.int_repr, rtn.int_repr)
    assert same == (errors["gptq"] == 0.0)
    if seed == 0:  # here GPTQ does better, masked
        assert errors["gptq"] == 1.0 and errors["error"] < 0.5 * errors["rtn_error"]
    if seed == 1:  # here it does worse: rounded instead
        assert errors["gptq"] == 0.0 and same


def test_conv_input_rows_follow_the_flattened_weight() -> None:
    """H from ``input_rows`` gives a conv's true output error (its columns in the order of the
    flattened weight), so GPTQ on a conv minimizes the right quantity."""
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 5, 3, padding=1, stride=2)
    x = torch.randn(4, 3, 9, 9)
    rows = input_rows(conv, x).double()
    w = conv.weight.detach()
    w_hat = w + 0.01 * torch.randn_like(w)
    direct = F.conv2d(x, w - w_hat, None, conv.stride, conv.padding)
    from_rows = rows @ (w - w_hat).reshape(5, -1).T.double()
    assert torch.allclose(direct.permute(0, 2, 3, 1).reshape(-1, 5).double(), from_rows, atol=1e-5)


def test_gptq_layers_quantizes_in_execution_order() -> None:
    """On a small network, every Linear is GPTQ-quantized in place (sequentially: each on the
    inputs of the already quantized layers before it) and its output error is below RTN's."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16)).eval()
    batches = [correlated_inputs(64, 32, seed=s) for s in range(4)]
    targets, _ = find_targets(model, set())
    plan = [(t, QuantSpec(3)) for t in targets if t.kind == "weights"]
    done, left = gptq_layers(model, plan, batches, "cpu", "mse", GPTQSettings())
    assert [r["name"] for r in done] == ["0.weight", "2.weight"] and not left
    assert all(r["error"] < r["rtn_error"] for r in done)
    assert all(hasattr(model[i], "parametrizations") for i in (0, 2))


def test_sequential_passes_stop_after_the_group_with_the_same_hessians() -> None:
    """A group's Hessians are the same whether each batch's pass runs to the end or stops once
    the group has seen it, and the stopped pass never runs the layers after the group (the
    time sequential GPTQ saves on a deep model)."""
    from jointcomp.quant.gptq import input_hessians

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Linear(16, 4))
    batches = [torch.randn(5, 8) for _ in range(3)]
    later_calls = []
    model[3].register_forward_hook(lambda *_: later_calls.append(1))
    group = {"0": model[0], "2": model[2]}
    whole = input_hessians(model, group, batches, "cpu", whole_pass=True)
    assert len(later_calls) == 3
    stopped = input_hessians(model, group, batches, "cpu", whole_pass=False)
    assert len(later_calls) == 3  # not run again
    for name in group:
        assert torch.equal(whole[name][0], stopped[name][0]) and whole[name][1] == stopped[name][1]
