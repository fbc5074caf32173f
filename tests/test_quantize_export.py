"""QAT export: the integers, scale and zero point written are brevitas' own, and the file's
dequantized weight is bit-equal to brevitas' ``quant_weight().value``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jointcomp.nn import decompose
from jointcomp.nn.quantized import IntQuantized, quantized_tensors
from jointcomp.nn.sparsity import fixed_zero_names
from jointcomp.quant import QuantSpec, find_targets
from jointcomp.quant.qat import ParamQuantizer, QATSession, int_quantized_from, to_quant_layer
from jointcomp.quant.qat import weight_quant as make_quant

CONFIGS = [
    QuantSpec(4, "channel", True, True),
    QuantSpec(2, "tensor", True, True),
    QuantSpec(8, "tensor", True, False),
    QuantSpec(3, "channel", False, True),
    QuantSpec(6, "tensor", False, False),
]


def _check_same(p: IntQuantized, qt) -> None:
    assert torch.equal(p.int_repr.to(torch.int64), qt.int().to(torch.int64))
    assert torch.equal(p.scale, qt.scale.detach())
    assert torch.equal(p.zero_point, qt.zero_point.detach().to(torch.float32))
    assert torch.equal(p(torch.empty(0)), qt.value.detach())
    lo, hi = p.int_range()
    assert int(p.int_repr.min()) >= lo and int(p.int_repr.max()) <= hi


@pytest.mark.parametrize("spec", CONFIGS, ids=str)
@pytest.mark.parametrize("scaling", ["stats", "learned", "mse"])
def test_layer_export_equals_brevitas(spec: QuantSpec, scaling: str) -> None:
    torch.manual_seed(spec.bits)
    for layer in (nn.Conv2d(3, 5, 3), nn.Linear(7, 4)):
        q = to_quant_layer(layer, make_quant(spec, scaling))
        q.train()
        q(torch.randn(2, 3, 6, 6) if isinstance(layer, nn.Conv2d) else torch.randn(2, 7))
        q.eval()
        qt = q.quant_weight()
        assert int(qt.bit_width) == spec.bits and bool(qt.signed) == spec.symmetric
        axis = 0 if spec.granularity == "channel" else None
        p = int_quantized_from(qt, narrow_range=spec.narrow_range, axis=axis)
        _check_same(p, qt)


def test_bare_parameter_export_equals_brevitas() -> None:
    torch.manual_seed(0)
    core = nn.Parameter(torch.randn(1, 3, 4, 5))
    holder = ParamQuantizer(core, make_quant(QuantSpec(4, "channel"), "stats"), channel_axis=3)
    qt = holder.quant_weight()
    assert qt.scale.shape == (1, 1, 1, 5)
    _check_same(int_quantized_from(qt, narrow_range=True, axis=3), qt)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3)
        self.conv2 = nn.Conv2d(6, 6, 3)
        self.fc1 = nn.Linear(6 * 4 * 4, 24)
        self.fc2 = nn.Linear(24, 12)
        self.fc3 = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv(x)))).flatten(1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _factorized_net() -> nn.Module:
    torch.manual_seed(0)
    m = _Net()
    m.conv, _ = decompose(m.conv, "tucker2", [3, 2], sparse=0.1)
    m.conv2, _ = decompose(m.conv2, "cp", 3)
    m.fc1, _ = decompose(m.fc1, "svd", 4, sparse=0.05)
    m.fc2, _ = decompose(m.fc2, "tt", 2, options={"tt_cores": 2})
    m.conv.execution = "dense"  # QAT must still train (and export) through the factors
    return m


def test_qat_session_export_reproduces_the_trained_model_exactly() -> None:
    model = _factorized_net()
    sparse_before = model.fc1.sparse.detach() != 0
    targets, skipped = find_targets(model, set(fixed_zero_names(model)))
    assert not skipped
    main = [(t, QuantSpec(4)) for t in targets if t.kind in ("factors", "sparse_values", "weights")]
    assert {t.kind for t, _ in main} == {"factors", "sparse_values", "weights"}
    session = QATSession(model, "learned")
    session.prepare(main)
    assert model.conv.execution == "factorized"
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(4, 2, 8, 8)
    for _ in range(3):
        model.train()
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        trained = model(x)
    session.export()
    assert model.conv.execution == "dense"
    names = set(quantized_tensors(model))
    assert names == {t.name for t, _ in main}
    with torch.no_grad():
        # dense execution rebuilds the weight from the same integers: equal up to float order
        assert torch.allclose(model(x), trained, atol=1e-5)
        model.conv.execution = "factorized"
        assert torch.equal(model(x), trained)
    # the residual's zeros stayed exactly zero through training and export
    assert not bool((model.fc1.sparse.detach()[~sparse_before] != 0).any())
    assert all(p.bits == 4 for p in quantized_tensors(model).values())


def test_masked_export_keeps_zeros_exact_on_a_shifted_grid() -> None:
    torch.manual_seed(0)
    param = nn.Parameter(torch.randn(6, 5))
    mask = torch.rand(6, 5) < 0.5
    quant = make_quant(QuantSpec(4, "tensor", symmetric=False, narrow_range=False), "stats")
    holder = ParamQuantizer(param, quant, channel_axis=0, mask=mask)
    qt = holder.quant_weight()
    assert float(qt.zero_point.detach()) != 0  # a grid where integer 0 is not the value 0
    p = int_quantized_from(qt, narrow_range=False, axis=None, mask=mask)
    value = p(torch.empty(0))
    assert not bool((value[~mask] != 0).any())
    assert torch.equal(value[mask], qt.value.detach()[mask])


def test_layer_with_an_already_quantized_tensor_keeps_it() -> None:
    from jointcomp.nn.quantized import attach
    from jointcomp.quant import ptq_tensor

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 2)).eval()
    bias = ptq_tensor(model[0].bias.detach(), QuantSpec(16, "tensor"), None)
    attach(model[0], "bias", bias)
    targets, skipped = find_targets(model, set())
    assert skipped == [{"name": "0.bias", "reason": "already quantized"}]
    session = QATSession(model)
    session.prepare([(t, QuantSpec(4)) for t in targets if t.kind == "weights"])
    x = torch.randn(2, 2, 4, 4)
    with torch.no_grad():
        trained = model(x)
    session.export()
    q = quantized_tensors(model)
    assert q["0.bias"] is bias and q["0.weight"].bits == 4 and q["2.weight"].bits == 4
    with torch.no_grad():
        assert torch.equal(model(x), trained)
