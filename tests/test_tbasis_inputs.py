"""The data-aware T-Basis fit: layer-input metrics, the fit in that metric, and the batch-norm
re-estimation after it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from jointcomp.stages.share_inputs import input_metrics, square_root_metric
from jointcomp.tensor.tbasis import fit_tbasis, pad_weight, plan_modes, tbasis_matrix
from jointcomp.training import recalibrate_batchnorm


def test_square_root_metric_squares_to_the_ridged_moment() -> None:
    torch.manual_seed(0)
    x = torch.randn(500, 6, dtype=torch.float64) * torch.tensor([5, 3, 1, 0.1, 0.01, 0.0])
    moment = x.T @ x / len(x)
    s = square_root_metric(moment, ridge=0.1)
    want = moment + 0.1 * float(moment.diagonal().mean()) * torch.eye(6, dtype=torch.float64)
    assert torch.allclose(s @ s.T, want, atol=1e-10)
    assert torch.allclose(s, s.T)


def test_input_metric_of_a_linear_and_a_padded_conv() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(80, 4))
    batches = [(torch.randn(8, 3, 4, 4), torch.zeros(8)) for _ in range(2)]
    plans = [plan_modes(5, 3, 9, (3, 3)), plan_modes(4, 80, 9)]
    s_conv, s_fc = input_metrics(model, ["0", "3"], plans, batches, torch.device("cpu"), ridge=0)
    # the Linear: the plain second moment of its inputs
    with torch.no_grad():
        h = torch.cat([model[:3](x) for x, _ in batches]).double()
    own = 80
    assert s_fc.shape == (plans[1].in_padded, plans[1].in_padded)
    assert torch.allclose(s_fc[:own, :own] @ s_fc[:own, :own], h.T @ h / len(h), atol=1e-6)
    assert not s_fc[own:].any() and not s_fc[:, own:].any()
    # the conv: its columns are (channel, kh, kw), the padding's channels weigh nothing
    cols = plans[0].in_size * plans[0].window
    assert s_conv.shape[0] == plans[0].in_padded * plans[0].window
    assert not s_conv[cols:].any() and torch.linalg.matrix_rank(s_conv) == cols


def test_fit_in_the_input_metric_has_the_smaller_output_error() -> None:
    """On inputs concentrated in a few directions, fitting the outputs (not the weights)
    gives the smaller error on those inputs — what the network sees."""
    torch.manual_seed(2)
    layouts = [((2, 4), (4, 2)), ((4, 2), (2, 4)), ((2, 2, 2), (2, 2, 4))]
    rows = [[0, 1], [2, 3], [4, 5, 6]]
    weights, metrics, inputs = [], [], []
    for om, im in layouts:
        w = torch.randn(math.prod(om), math.prod(im), dtype=torch.float64)
        spread = torch.logspace(0, -3, math.prod(im), dtype=torch.float64)
        q, _ = torch.linalg.qr(torch.randn(len(spread), len(spread), dtype=torch.float64))
        x = torch.randn(400, len(spread), dtype=torch.float64) * spread @ q.T
        weights.append(w)
        inputs.append(x)
        metrics.append(square_root_metric(x.T @ x / len(x), ridge=1e-3))
    kwargs = {"basis_size": 3, "rank": 3, "mode": 9, "steps": 200}

    def output_error(fit) -> float:
        errs = []
        for w, x, (om, im), r in zip(weights, inputs, layouts, rows):
            idx = torch.tensor(r)
            a = tbasis_matrix(fit.basis, fit.coef[idx], fit.rank_scale[idx], om, im).double()
            errs.append(float((x @ (a - w).T).norm() / (x @ w.T).norm()))
        return sum(errs) / len(errs)

    plain = fit_tbasis(weights, layouts, rows, **kwargs)
    aware = fit_tbasis(weights, layouts, rows, input_metrics=metrics, **kwargs)
    assert output_error(aware) < 0.5 * output_error(plain)
    # its reported errors are in the metric it fitted
    for j, (w, (om, im), r) in enumerate(zip(weights, layouts, rows)):
        a = tbasis_matrix(aware.basis, aware.coef[torch.tensor(r)], aware.rank_scale[r], om, im)
        err = float(((a.double() - w) @ metrics[j]).norm() / (w @ metrics[j]).norm())
        assert err == pytest.approx(aware.rel_error[j], rel=1e-3)


def test_fit_rejects_a_metric_of_the_wrong_size() -> None:
    w = torch.randn(8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="input metric"):
        fit_tbasis(
            [w],
            [((2, 4), (4, 2))],
            [[0, 1]],
            basis_size=2,
            rank=2,
            mode=9,
            input_metrics=[torch.eye(7)],
        )


def test_pad_weight_columns_match_the_metric_order() -> None:
    """The metric's first in·window columns are the padded matrix's own columns."""
    plan = plan_modes(5, 3, 9, (3, 3))
    w = torch.randn(5, 3, 3, 3)
    matrix, mask = pad_weight(w, plan)
    assert torch.equal(matrix[:5, : 3 * 9], w.reshape(5, 27))
    assert not mask[:, 27:].any()


def test_batch_norm_recalibration_measures_the_new_network() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6))
    model[1].running_mean.fill_(100.0)  # statistics of some other network
    model.eval()
    batches = [(torch.randn(32, 4), torch.zeros(32)) for _ in range(3)]
    assert recalibrate_batchnorm(model, batches, "cpu") == 1
    with torch.no_grad():
        h = torch.cat([model[0](x) for x, _ in batches])
    assert torch.allclose(model[1].running_mean, h.mean(0), atol=1e-5)
    assert model[1].momentum == 0.1 and not model.training
