"""The factorized layers: forward = dense reconstruction, conv hyperparameters carried over,
exact recovery of exactly-low-rank weights, rebuild from config, the dense-weight cache."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import jointcomp.nn as jn
from jointcomp.errors import ModelError
from jointcomp.registry import MODULE_TYPES, module_type_of

CONV_CASES = [
    {"stride": 2, "padding": 1},
    {"padding": (2, 1), "dilation": (2, 1)},
    {"padding": "same", "padding_mode": "reflect"},
    {"padding": "valid", "bias": False},
    {"groups": 2, "stride": (2, 1), "padding": (0, 1)},
    {"padding": "same", "dilation": 2, "padding_mode": "circular", "bias": False},
]
CONV_FORMATS = ["svd", "svd_spatial", "tucker2", "cp", "tt"]


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("fmt", CONV_FORMATS)
@pytest.mark.parametrize(
    "case", CONV_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items())
)
def test_conv_formats_keep_hyperparameters(fmt: str, case: dict) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, (3, 3), **case)
    x = torch.randn(2, 8, 11, 10)
    if fmt == "tt" and case.get("groups", 1) > 1:
        with pytest.raises(ModelError, match="groups=1"):
            jn.decompose(conv, fmt, 1.0, name="conv")
        return
    # full rank: every format except CP reproduces the conv exactly
    new, info = jn.decompose(conv, fmt, 1.0 if fmt != "cp" else 4, name="conv")
    y_fact = new(x)
    new.execution = "dense"
    y_dense = new(x)
    assert y_fact.shape == conv(x).shape
    assert _close(y_fact, y_dense)
    # the dense op is the original conv with the reconstructed weight: hyperparameters intact
    ref = nn.Conv2d(8, 12, (3, 3), **case)
    with torch.no_grad():
        ref.weight.copy_(new.reconstruct_weight())
        if ref.bias is not None:
            ref.bias.copy_(new.dense_bias)
    assert _close(y_fact, ref(x))
    if fmt != "cp":
        assert info["rel_error"] < 1e-5
        assert _close(y_fact, conv(x))


@pytest.mark.parametrize("fmt", ["svd", "tt"])
def test_linear_formats_match_dense(fmt: str) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(30, 22)  # both sizes factor badly into 3 TT modes: 22 is padded
    x = torch.randn(3, 5, 30)  # extra leading dims (tokens) pass through
    full, info = jn.decompose(lin, fmt, 1.0)
    assert info["rel_error"] < 1e-5 and _close(full(x), lin(x))
    small, _ = jn.decompose(lin, fmt, 2)
    y = small(x)
    small.execution = "dense"
    assert _close(y, small(x))


def test_exact_low_rank_weights_are_recovered() -> None:
    torch.manual_seed(1)
    lin = nn.Linear(40, 30)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(30, 3) @ torch.randn(3, 40))
    _, info = jn.decompose(lin, "svd", 3)
    assert info["rel_error"] < 1e-5 and info["params_after"] == 3 * 70 + 30

    conv = nn.Conv2d(10, 12, 3)
    u_out, u_in = torch.randn(12, 4), torch.randn(10, 3)
    core = torch.randn(4, 3, 3, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("abyx,oa,ib->oiyx", core, u_out, u_in))
    assert jn.decompose(conv, "tucker2", [4, 3])[1]["rel_error"] < 1e-5
    # channel SVD: the kernel matrix [O, I·9] has rank 4 (the Tucker r_out)
    assert jn.decompose(conv, "svd", 4)[1]["rel_error"] < 1e-5

    factors = [torch.randn(n, 2) for n in (12, 10, 3, 3)]
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("or,ir,yr,xr->oiyx", *factors))
    assert jn.decompose(conv, "cp", 2, options={"cp_iters": 500})[1]["rel_error"] < 1e-4

    tt = jn.TTLinear(24, 20, [2, 3, 4], [2, 2, 5], [1, 2, 3, 1])
    with torch.no_grad():
        lin2 = nn.Linear(24, 20)
        lin2.weight.copy_(tt.reconstruct_weight())
    _rebuilt, info = jn.decompose(lin2, "tt", [2, 3], options={"tt_cores": 3})
    assert info["rel_error"] < 1e-5 and info["ranks"] == [2, 3]


def _all_layers() -> list[jn.FactorizedModule]:
    torch.manual_seed(2)
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=(1, 0), groups=2)
    conv1 = nn.Conv2d(6, 8, 3, padding="same", padding_mode="reflect")
    lin = nn.Linear(12, 10)
    return [
        jn.decompose(lin, "svd", 3)[0],
        jn.decompose(lin, "tt", 2)[0],
        jn.decompose(conv, "svd", 2)[0],
        jn.decompose(conv, "svd_spatial", 2)[0],
        jn.decompose(conv, "tucker2", [2, 2])[0],
        jn.decompose(conv, "cp", 3)[0],
        jn.decompose(conv1, "tt", 2)[0],
        jn.decompose(conv, "tucker2", [2, 1], sparse=0.1)[0],
        jn.decompose(lin, "tt", 2, sparse=0.05)[0],
    ]


def test_every_layer_rebuilds_from_its_config() -> None:
    for layer in _all_layers():
        entry = module_type_of(layer)
        assert entry is not None and MODULE_TYPES[entry.name] is entry
        cfg = layer.jc_config()
        assert cfg == entry.config(layer)
        rebuilt = entry.build(cfg)
        ours, theirs = layer.state_dict(), rebuilt.state_dict()
        assert list(ours) == list(theirs)
        assert all(ours[k].shape == theirs[k].shape for k in ours)
        rebuilt.load_state_dict(ours)
        linear = layer.reconstruct_weight().dim() == 2
        x = torch.randn(2, 12) if linear else torch.randn(2, 6, 9, 9)
        layer.eval(), rebuilt.eval()
        assert torch.equal(layer(x), rebuilt(x))


def test_dense_weight_cache_follows_the_factors() -> None:
    layer = jn.decompose(nn.Linear(12, 10), "svd", 3)[0]
    layer.execution = "dense"
    x = torch.randn(4, 12)
    layer.eval()
    with torch.no_grad():
        y0 = layer(x)
        assert "dense" in layer._caches
        layer.first.weight.mul_(2)  # an in-place edit invalidates the cache
        y1 = layer(x)
    assert _close(y1, 2 * (y0 - layer.second.bias) + layer.second.bias)
    layer.train()
    assert not layer._caches
    out = layer(x).sum()  # training: no cache, gradients reach the factors
    out.backward()
    assert layer.first.weight.grad is not None and not layer._caches


def test_flop_counter_sees_only_the_executed_ops() -> None:
    from jointcomp.audit.measure import count_macs

    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    x = torch.randn(1, 8, 10, 10)
    dense_macs = 16 * 8 * 9 * 100
    layer = jn.decompose(conv, "tucker2", [4, 4])[0]
    factor_macs = 100 * (8 * 4 + 4 * 4 * 9 + 4 * 16)
    assert count_macs(layer, x) == factor_macs
    layer.execution = "dense"  # the reconstruction is built at eval(), outside the count
    assert count_macs(layer, x) == dense_macs


def test_choose_execution_times_both_and_keeps_the_faster() -> None:
    layer = jn.decompose(nn.Conv2d(8, 8, 3, padding=1), "tucker2", [2, 2])[0]
    times = layer.choose_execution(torch.randn(1, 8, 6, 6), min_run_time=0.005, rounds=1)
    assert set(times) == set(jn.EXECUTIONS) and all(t > 0 for t in times.values())
    assert layer.execution == min(times, key=times.get)
    assert layer.jc_config()["execution"] == layer.execution


def test_lowrank_plus_sparse_beats_pure_low_rank() -> None:
    torch.manual_seed(3)
    lin = nn.Linear(40, 30)
    with torch.no_grad():  # low rank plus a few large outliers: what LR+S is made for
        w = torch.randn(30, 2) @ torch.randn(2, 40)
        w.view(-1)[torch.randperm(1200)[:24]] += 10
        lin.weight.copy_(w)
    _, pure = jn.decompose(lin, "svd", 2)
    lrs, mixed = jn.decompose(lin, "svd", 2, sparse=0.02)
    assert isinstance(lrs, jn.LowRankPlusSparse) and lrs.jc_sparse_tensors == ("sparse",)
    assert mixed["density"] == pytest.approx(0.02, abs=1e-3)
    assert mixed["rel_error"] < 0.1 * pure["rel_error"]
    assert mixed["params_after"] == pure["params_after"] + int((lrs.sparse != 0).sum())


def test_bad_input_names_the_layer_and_problem() -> None:
    lin, conv = nn.Linear(8, 6), nn.Conv2d(4, 6, 3)
    with pytest.raises(ModelError, match=r"fc.*rank 7 is larger than the layer allows \(6\)"):
        jn.decompose(lin, "svd", 7, name="fc")
    with pytest.raises(ModelError, match="tucker2 applies to Conv2d"):
        jn.decompose(lin, "tucker2", 2, name="fc")
    with pytest.raises(ModelError, match=r"energy:2.*must lie in \(0, 1\]"):
        jn.decompose(conv, "svd", "energy:2", name="c")
    with pytest.raises(ModelError, match="unknown format"):
        jn.decompose(conv, "svdd", 2, name="c")
    with pytest.raises(ValueError, match="multiply to less than 30"):
        jn.TTLinear(30, 8, [2, 3, 4], [2, 2, 2], [1, 2, 2, 1])
    with pytest.raises(ValueError, match=r"r_out: rank 7 is larger than the layer allows \(6\)"):
        jn.TuckerConv2d(4, 6, 3, [7, 2])
    with pytest.raises(ValueError, match="execution"):
        jn.SVDLinear(8, 6, 2, execution="fast")


def test_rank_measures_pick_sensible_ranks() -> None:
    torch.manual_seed(4)
    lin = nn.Linear(50, 40)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(40, 5) @ torch.randn(5, 50) + 1e-3 * torch.randn(40, 50))
    for rank in ("energy:0.99", "vbmf", "indicator:0.01"):
        assert jn.decompose(lin, "svd", rank)[1]["ranks"] == [5], rank
    assert jn.decompose(lin, "svd", 0.25)[1]["ranks"] == [10]
    eff = jn.decompose(lin, "svd", "effective")[1]["ranks"][0]
    assert 2 <= eff <= 40


@settings(max_examples=20, deadline=None)
@given(
    groups=st.sampled_from([1, 2]),
    cin_per=st.integers(1, 3),
    cout_per=st.integers(1, 3),
    kh=st.integers(1, 3),
    kw=st.integers(1, 3),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.one_of(st.tuples(st.integers(0, 2), st.integers(0, 2)), st.just("valid")),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    mode=st.sampled_from(["zeros", "reflect", "circular"]),
    fmt=st.sampled_from(["svd", "svd_spatial", "tucker2", "tt"]),
)
def test_full_rank_factorizations_reproduce_any_conv(
    groups, cin_per, cout_per, kh, kw, stride, padding, dilation, mode, fmt
) -> None:
    conv = nn.Conv2d(
        groups * cin_per,
        groups * cout_per,
        (kh, kw),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=mode,
    )
    x = torch.randn(2, groups * cin_per, 9, 8)
    try:
        layer, info = jn.decompose(conv, fmt, 1.0)
    except ModelError as exc:  # formats that cannot apply say so
        assert ("groups=1" in str(exc) and groups > 1) or ("2×2" in str(exc) and 1 in (kh, kw))
        return
    assert info["rel_error"] < 1e-5
    with torch.no_grad():
        assert _close(layer(x), conv(x))
        layer.execution = "dense"
        assert _close(layer(x), conv(x))
