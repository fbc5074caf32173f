"""Gauge equalization of T-Basis tables: the network computes the same function, every
coefficient row and every rank-scaling row ends at one max-abs, and one 4-bit grid per table
then quantizes a small layer as finely as a large one."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from jointcomp.nn.tbasis_equalize import equalize_tbasis

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


def test_share_equalizes_last_and_keeps_the_function() -> None:
    """``share`` with ``equalize`` (its default) ends with the tables equalized: every
    coefficient row at max-abs 1, the convs' magnitudes in their batch norms, and the network
    computing what it computes without equalization."""
    from jointcomp.context import Context
    from jointcomp.models import build_model
    from jointcomp.stages.share import ShareConfig, share

    from .test_tbasis_layers import KW

    x = torch.randn(16, 1, 8, 8)
    outputs, records, tables = {}, {}, {}
    for equalize in (False, True):
        torch.manual_seed(0)
        model = build_model("zoo:small_cnn", KW).eval()
        config = ShareConfig(
            basis=4,
            rank=3,
            fit_steps=0,  # the packed start: its magnitudes are uneven enough
            fit_batches=0,
            bn_batches=0,
            scope={"exclude": ["block1.0"]},
            equalize=equalize,
        )
        model, records[equalize] = share(model, config, Context())
        tables[equalize] = model.fc.coefficients
        with torch.no_grad():
            outputs[equalize] = model(x)
    assert "equalized" not in records[False]
    layers = records[True]["equalized"]["layers"]
    assert layers == {"block2.0": "block2.1", "block3.0": "block3.1", "fc": "cores"}
    peaks = {k: t.coef.abs().amax(dim=1) for k, t in tables.items()}
    assert torch.allclose(peaks[True], torch.ones_like(peaks[True]))
    assert not torch.allclose(peaks[False], torch.ones_like(peaks[False]))
    assert _rel(outputs[True], outputs[False]) < 1e-4


def _digits_context(train: dict | None = None):
    from .stage_util import bundle_context, digits_bundle

    return bundle_context(digits_bundle(), train=train)


QAT_BRIEF = {"finetune": {"epochs": 1, "max_batches": 2, "lr": 1e-4}}


def _qat_then_fold(model: nn.Module) -> tuple[nn.Module, dict, dict, nn.Module]:
    """The T-Basis recipe's steps after share on ``model``: its tables equalized (as share
    leaves them), QAT of tables and plain weights with the plain conv's batch norm folded
    first (the T-Basis layers' still training), then the fold stage folding the rest into
    output scales and biases on 6-bit grids. Returns the model, both records and the model as
    QAT left it."""
    from jointcomp.stages.fold import FoldConfig, fold
    from jointcomp.stages.quantize import QuantizeConfig, quantize

    equalize_tbasis(model)
    config = QuantizeConfig.model_validate(
        {
            "qat": QAT_BRIEF,
            "fold": {"include": ["conv1", "block1.0"]},
            "bits": {"factors": 4, "weights": 8, "biases": 6, "norms": None},
            "granularity": "auto",
        }
    )
    context = _digits_context({"epochs": 1, "lr": 0.002})
    model, quantized = quantize(model, config, context)
    after_qat = copy.deepcopy(model)
    rounding = {"scales": {"bits": 6, "symmetric": False}, "biases": {"bits": 6}}
    model, folded = fold(model, FoldConfig.model_validate({"round": rounding}), context)
    return model, quantized, folded, after_qat


@pytest.fixture(scope="module")
def qat_folded() -> tuple[nn.Module, dict, dict, nn.Module]:
    return _qat_then_fold(_uneven_model())


def test_qat_then_fold_leaves_every_batch_norm_folded_on_grids(qat_folded) -> None:
    """``quantize`` with ``fold`` on the plain conv folds its batch norm before QAT; the fold
    stage afterwards takes the T-Basis layers' into their output scales and biases and rounds
    those on its grids: no batch norm is left and every folded tensor is integers × scale."""
    from jointcomp.nn.quantized import quantized_tensors

    model, quantized, folded, _ = qat_folded
    summary = quantized["summary"]
    assert [(f["name"], f["into"]) for f in summary["bn_folded"]] == [("block1.1", "block1.0")]
    assert {f["name"] for f in summary["bn_not_folded"]} == {"block2.1", "block3.1"}
    assert {(f["name"], f["into"]) for f in folded["folded"]} == {
        ("block2.1", "block2.0"),
        ("block3.1", "block3.0"),
    }
    assert folded["not_folded"] == []
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    rounded = {r["tensor"]: r["bits"] for r in folded["rounded"]}
    names = [f"{p}.{t}" for p in ("block2.0", "block3.0") for t in ("out_scale", "bias")]
    assert rounded == dict.fromkeys(names, 6)
    q = quantized_tensors(model)
    for name in names:
        assert q[name].bits == 6, name
    assert int(q["block3.0.bias"].int_repr.abs().max()) <= 31  # a signed 6-bit grid
    assert int(q["block3.0.out_scale"].int_repr.min()) >= 0  # the offset grid of the scales


def test_fold_after_qat_keeps_the_function_and_round_moves_it_little(qat_folded) -> None:
    """The fold into a quantized T-Basis layer computes what layer + batch norm did; rounding
    the folded scales and biases on 6-bit grids changes the outputs only slightly."""
    from jointcomp.stages.fold import FoldConfig, fold

    model, _, _, after_qat = qat_folded
    x = torch.randn(32, 1, 8, 8)
    with torch.no_grad():
        reference = after_qat.eval()(x)
    exact, record = fold(copy.deepcopy(after_qat), FoldConfig(), _digits_context())
    assert len(record["folded"]) == 2 and "rounded" not in record
    with torch.no_grad():
        assert _rel(exact(x), reference) < 1e-5
        assert 0 < _rel(model(x), reference) < 0.1


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


def test_batch_norms_outside_sequentials_are_found_after_qat() -> None:
    """After QAT the plain conv's weight and the tables are parametrized: the fold still traces
    which batch norm follows which layer where no Sequential says so."""
    model, quantized, folded, _ = _qat_then_fold(_Unrolled(_uneven_model()).eval())
    assert [f["name"] for f in quantized["summary"]["bn_folded"]] == ["bn1"]
    assert {(f["name"], f["into"]) for f in folded["folded"]} == {
        ("bn2", "conv2"),
        ("bn3", "conv3"),
    }
    assert all(f["found_by"] == "fx" for f in folded["folded"])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
