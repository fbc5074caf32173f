"""Gauge equalization of T-Basis tables: the network computes the same function, every
coefficient row and every rank-scaling row ends at one max-abs, and one 4-bit grid per table
then quantizes a small layer as finely as a large one."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from jointcomp.quant.tbasis_equalize import equalize_tbasis

from .test_tbasis_layers import shared_small_cnn


def _uneven_model() -> nn.Module:
    """The shared small_cnn with its layers' magnitudes far apart (as a fit leaves them) and
    batch norms whose statistics describe those magnitudes."""
    model, _, table = shared_small_cnn(seed=1)
    with torch.no_grad():
        rows = model.get_submodule("block2.0").row_list
        table.coef[rows[0]].mul_(40.0)  # a large row in one layer
        table.rank_scale[rows[-1]].mul_(0.02)  # a small one in the same layer
        table.rank_scale[model.get_submodule("block3.0").row_list[0]].mul_(5.0)
    model.train()
    with torch.no_grad():
        for _ in range(20):  # running statistics that match these magnitudes
            model(torch.randn(32, 1, 8, 8))
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_equalization_keeps_the_function_and_levels_every_row() -> None:
    model = _uneven_model()
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        before = model(x)
    info = equalize_tbasis(model)
    with torch.no_grad():
        after = model(x)
    assert _rel(after, before) < 1e-4
    # the convs' magnitudes went into the batch norms after them; the classifier has none
    assert info["layers"] == {"block2.0": "block2.1", "block3.0": "block3.1", "fc": "cores"}
    table = model.fc.coefficients
    assert torch.allclose(table.coef.abs().amax(dim=1), torch.ones(table.coef.shape[0]))
    peaks = table.rank_scale.abs().amax(dim=1)
    conv_rows = model.get_submodule("block2.0").row_list + model.get_submodule("block3.0").row_list
    # every conv row sits at the classifier's level, which stays its rows' geometric mean
    assert torch.allclose(peaks[conv_rows], torch.full((len(conv_rows),), info["level"]))
    fc_peaks = peaks[model.fc.row_list]
    assert torch.allclose(fc_peaks.prod() ** (1 / len(fc_peaks)), torch.tensor(info["level"]))


def _round_tables(model: nn.Module, bits: int = 4) -> None:
    """Per-tensor symmetric max-abs rounding of coefficients and rank scalings (what the
    recipe's granularity gives the tables)."""
    table = model.fc.coefficients
    levels = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for p in (table.coef, table.rank_scale):
            step = p.abs().max() / levels
            p.copy_(torch.round(p / step) * step)
    for m in model.modules():
        if hasattr(m, "_caches"):
            m._caches = {}


def test_equalized_tables_quantize_each_layer_more_finely() -> None:
    model = _uneven_model()
    x = torch.randn(64, 1, 8, 8)
    with torch.no_grad():
        exact = model(x)
    plain, equalized = copy.deepcopy(model), copy.deepcopy(model)
    equalize_tbasis(equalized)
    _round_tables(plain)
    _round_tables(equalized)
    with torch.no_grad():
        err_plain, err_eq = _rel(plain(x), exact), _rel(equalized(x), exact)
    assert err_eq < 0.5 * err_plain


def test_coupled_rows_are_left_in_place() -> None:
    model, _, _ = shared_small_cnn()
    # two layers reading one row: its magnitude cannot move into either layer's batch norm
    model.get_submodule("block3.0").row_list[0] = model.get_submodule("block2.0").row_list[0]
    info = equalize_tbasis(model)
    assert info["layers"]["block2.0"] == info["layers"]["block3.0"] == "coupled"


@pytest.mark.parametrize(
    "fold", [{"fold_epochs": 1}, {"fold_epochs": 1, "fold_lr": 1e-5}, {"fold_rounding": "qat"}]
)
def test_quantize_folds_every_batch_norm_onto_qat_grids(tmp_path, fold: dict) -> None:
    """``fold_bn: after`` with ``fold_epochs`` or ``fold_rounding: qat``: the plain conv's
    batch norm is folded before QAT, the T-Basis layers' after it, and their folded scales and
    biases then go on QAT's 4-bit grids (trained on them for ``fold_epochs``); no batch norm
    is left, every T-Basis table was equalized first, and the exported network is the one
    whose accuracy was measured on those grids. The epochs after the fold train at
    ``fold_lr`` when it is set, QAT's rate otherwise."""
    from jointcomp.nn.quantized import quantized_tensors
    from jointcomp.stages.quantize import QuantizeParams, QuantizeStage

    from .quantize_util import stage_ctx

    model = _uneven_model()
    params = QuantizeParams(
        bits={"factors": 4, "weights": 8, "norms": 4, "biases": 4},
        granularity="auto",
        fold_bn="after",
        finetune={"epochs": 1, "max_batches": 2},
        **fold,
    )
    stage = QuantizeStage(params)
    ctx = stage_ctx(tmp_path)
    rates: dict[str, float | None] = {}
    finetune = ctx.finetune

    def spy(model, spec, description, **kw):
        rates[description] = spec.lr
        return finetune(model, spec, description=description, **kw)

    ctx.finetune = spy  # type: ignore[method-assign]
    model = stage.apply(model, ctx)
    summary = ctx.record["summary"]
    epochs = fold.get("fold_epochs", 0)
    after = {"quantize (qat, folded)": fold.get("fold_lr", rates["quantize (qat)"])}
    assert rates == {"quantize (qat)": rates["quantize (qat)"], **(after if epochs else {})}
    assert summary["bn_folded_first"] == ["block1.1"]
    assert summary["bn_folded"] == ["block2.1", "block3.1"] and summary["fold_epochs"] == epochs
    assert ("fold_finetune_loss" in summary) == bool(epochs)
    if not epochs:  # no training after the fold: export keeps what was measured
        assert summary["accuracy_after"] == summary["accuracy_folded"]
    assert set(summary["equalized"]["layers"]) == {"block2.0", "block3.0", "fc"}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    rows = {r["tensor"]: r for r in ctx.record["layers"]}
    for name in ("block2.0.out_scale", "block2.0.bias", "block3.0.out_scale"):
        assert rows[name]["method"] == "qat" and rows[name]["bits"] == 4
    q = quantized_tensors(model)
    assert int(q["block3.0.bias"].int_repr.abs().max()) <= 7  # a signed 4-bit grid


class _Unrolled(nn.Module):
    """The shared small_cnn without its Sequentials, as ResNet blocks are: only the traced
    graph says which batch norm follows which layer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1 = model.block1[0], model.block1[1]
        self.conv2, self.bn2 = model.block2[0], model.block2[1]
        self.conv3, self.bn3 = model.block3[0], model.block3[1]
        self.pool, self.gap, self.fc = model.pool, model.gap, model.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


def test_batch_norms_outside_sequentials_fold_onto_qat_grids(tmp_path) -> None:
    """Mid-QAT the plain conv is a brevitas layer and the tables are parametrized, which fx
    cannot trace through: the fold still finds every T-Basis layer's batch norm, so each
    folded scale and bias goes on QAT's grid instead of being rounded after it."""
    from jointcomp.stages.quantize import QuantizeParams, QuantizeStage

    from .quantize_util import stage_ctx

    model = _Unrolled(_uneven_model()).eval()
    params = QuantizeParams(
        bits={"factors": 4, "weights": 8, "norms": 6, "biases": 6},
        fold_bn="after",
        fold_rounding="qat",
        finetune={"epochs": 1, "max_batches": 2},
    )
    ctx = stage_ctx(tmp_path)
    model = QuantizeStage(params).apply(model, ctx)
    summary = ctx.record["summary"]
    assert summary["bn_folded_first"] == ["bn1"] and summary["bn_folded"] == ["bn2", "bn3"]
    rows = {r["tensor"]: r for r in ctx.record["layers"]}
    for name in ("conv2.out_scale", "conv2.bias", "conv3.out_scale", "conv3.bias"):
        assert rows[name]["method"] == "qat", name
    assert summary["accuracy_after"] == summary["accuracy_folded"]
