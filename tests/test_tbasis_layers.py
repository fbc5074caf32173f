"""T-Basis layers: one basis Parameter shared by layers of several shapes, stored once in the
file and rebuilt as one object, counted once, and bit-exact after save + open_artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from jointcomp.audit.measure import count_params
from jointcomp.container import open_artifact, save
from jointcomp.container.framing import pack, unpack
from jointcomp.models import build_model
from jointcomp.nn.quantized import IntQuantized, attach, quantized_tensors
from jointcomp.nn.tbasis import (
    TBasis,
    TBasisCoefficients,
    TBasisConv2d,
    TBasisLinear,
    shared_modules,
)
from jointcomp.registry import MODULE_TYPES
from jointcomp.tensor.tbasis import plan_modes, tbasis_matrix, unpad_weight

B, R, N = 4, 3, 9
KW = {"in_channels": 1, "num_classes": 10, "image_size": 8}


def _layer(module: nn.Module, rows: list[int], table_rows: int) -> nn.Module:
    common = {"basis_size": B, "rank": R, "mode": N, "rows": rows, "table_rows": table_rows}
    if isinstance(module, nn.Linear):
        plan = plan_modes(module.out_features, module.in_features, N)
        return TBasisLinear(
            module.in_features,
            module.out_features,
            list(plan.out_modes),
            list(plan.in_modes),
            bias=module.bias is not None,
            **common,
        )
    plan = plan_modes(module.out_channels, module.in_channels, N, module.kernel_size)
    return TBasisConv2d(
        module.in_channels,
        module.out_channels,
        list(module.kernel_size),
        list(plan.out_modes),
        list(plan.in_modes),
        padding=list(module.padding),
        bias=module.bias is not None,
        **common,
    )


def shared_small_cnn(seed: int = 0) -> tuple[nn.Module, TBasis, TBasisCoefficients]:
    """small_cnn with its convs 16→32, 32→32 and the 32→10 classifier on one basis."""
    torch.manual_seed(seed)
    model = build_model("zoo:small_cnn", KW).eval()
    names = ["block2.0", "block3.0", "fc"]
    modules = [model.get_submodule(n) for n in names]
    plans = [
        plan_modes(m.weight.shape[0], m.weight.shape[1], N, tuple(m.weight.shape[2:]))
        for m in modules
    ]
    n_rows = sum(p.cores for p in plans)
    basis, table = TBasis(B, R, N), TBasisCoefficients(n_rows, B, R)
    with torch.no_grad():
        table.rank_scale.uniform_(0.5, 1.5)
    start = 0
    for name, m, plan in zip(names, modules, plans):
        layer = _layer(m, list(range(start, start + plan.cores)), n_rows)
        start += plan.cores
        layer.share(basis, table)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, layer)
    return model.eval(), basis, table


def test_layers_of_several_shapes_share_one_basis_parameter() -> None:
    model, basis, table = shared_small_cnn()
    layers = [m for m in model.modules() if isinstance(m, (TBasisConv2d, TBasisLinear))]
    assert {tuple(m.plan.matrix_shape) for m in layers} == {(32, 144), (32, 288), (12, 32)}
    assert all(m.basis is basis and m.coefficients is table for m in layers)
    assert sum(p is basis.basis for p in model.parameters()) == 1  # one Parameter, once
    bases, tables = shared_modules(model)
    assert bases == [basis] and tables == [table]
    # one optimizer step moves the one basis, with gradient from every layer
    x = torch.randn(4, 1, 8, 8)
    model.train()
    model(x).square().mean().backward()
    grads = {}
    for m in layers:
        (g,) = torch.autograd.grad(m.reconstruct_weight().sum(), basis.basis)
        grads[id(m)] = g
    assert all(g.abs().sum() > 0 for g in grads.values())


def test_reconstruction_is_the_tt_matrix_of_basis_and_rows() -> None:
    model, basis, table = shared_small_cnn()
    layer = model.get_submodule("block3.0")
    rows = torch.tensor(layer.row_list)
    matrix = tbasis_matrix(
        basis.basis,
        table.coef[rows],
        table.rank_scale[rows],
        layer.plan.out_modes,
        layer.plan.in_modes,
    )
    expect = unpad_weight(matrix, layer.plan, (3, 3))
    assert torch.equal(layer.reconstruct_weight(), expect)
    x = torch.randn(2, 32, 6, 6)
    ref = nn.functional.conv2d(x, expect, padding=1)
    assert torch.allclose(layer(x), ref, atol=1e-5)


def test_configs_rebuild_identical_layers() -> None:
    model, _, _ = shared_small_cnn()
    for name in ("block2.0", "block3.0", "fc"):
        layer = model.get_submodule(name)
        entry = MODULE_TYPES[type(layer).__name__]
        twin = entry.build(entry.config(layer))
        ours = {n: t.shape for n, t in layer.state_dict().items()}
        assert {n: t.shape for n, t in twin.state_dict().items()} == ours


def _round_trip(model: nn.Module, path: Path) -> nn.Module:
    save(path, model, "zoo:small_cnn", KW)
    return open_artifact(path).model.eval()


def test_file_stores_the_basis_once_and_loads_bit_exact(tmp_path: Path) -> None:
    model, basis, _ = shared_small_cnn()
    loaded = _round_trip(model, tmp_path / "m.jcz")
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    art = open_artifact(tmp_path / "m.jcz")
    stored = [e["n"] for e in art.entries]
    assert sum(n.endswith(".basis.basis") for n in stored) == 1
    assert sum(n.endswith(".coefficients.coef") for n in stored) == 1
    layers = [m for m in loaded.modules() if isinstance(m, (TBasisConv2d, TBasisLinear))]
    assert len({id(m.basis) for m in layers}) == 1  # one object again, not three copies
    assert len({id(m.coefficients) for m in layers}) == 1
    # accounting: the basis once; the loaded model counts exactly what the original does
    others = sum(
        p.numel()
        for n, p in model.named_parameters()
        if ".basis." not in f".{n}." and ".coefficients." not in f".{n}."
    )
    table = layers[0].coefficients
    expected = basis.basis.numel() + table.coef.numel() + table.rank_scale.numel() + others
    assert count_params(model) == count_params(loaded) == expected


def test_quantized_basis_is_one_parametrization_stored_once(tmp_path: Path) -> None:
    model, basis, table = shared_small_cnn()
    ints = torch.randint(-7, 8, tuple(basis.basis.shape))
    attach(basis, "basis", IntQuantized.from_ints(ints, torch.tensor(0.05), bits=4))
    cints = torch.randint(-7, 8, tuple(table.coef.shape))
    scales = torch.rand(table.coef.shape[0], 1) + 0.1
    attach(table, "coef", IntQuantized.from_ints(cints, scales, bits=4, axis=0))
    before = count_params(model)
    loaded = _round_trip(model, tmp_path / "q.jcz")
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert count_params(loaded) == before
    q = quantized_tensors(loaded)
    assert sorted(n.rpartition(".")[2] for n in q) == ["basis", "coef"]  # once each
    art = open_artifact(tmp_path / "q.jcz")
    assert sum(e["n"].endswith("basis.0.int_repr") for e in art.entries) == 1


def test_cached_eval_weight_follows_basis_updates() -> None:
    model, basis, _ = shared_small_cnn()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        first = model(x)
        basis.basis.mul_(1.5)
        second = model(x)
    assert not torch.equal(first, second)


# a 16×16 T-Basis linear layer of three cores over a basis of 2, rank 2 (rows and table set
# by each test)
LINEAR_3_CORES = {
    "in_features": 16,
    "out_features": 16,
    "out_modes": [2, 2, 4],
    "in_modes": [4, 2, 2],
    "basis_size": 2,
    "rank": 2,
    "mode": 9,
}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"out_modes": [2, 4], "in_modes": [4, 2]}, "do not cover"),
        ({"out_modes": [4, 4, 1], "in_modes": [4, 4, 9]}, "exceed mode"),
        ({"rows": [0, 1]}, "one table row per core"),
        ({"rows": [0, 1, 7]}, r"ints in \[0, 3\)"),
        ({"rows": 1}, r"ints in \[0, 3\)"),  # first of three consecutive: runs past the table
        ({"rows": "0"}, "one table row per core"),
    ],
)
def test_bad_layouts_are_clear_errors(kwargs: dict, match: str) -> None:
    args = {**LINEAR_3_CORES, "rows": [0, 1, 2], "table_rows": 3}
    with pytest.raises(ValueError, match=match):
        TBasisLinear(**{**args, **kwargs})


def test_consecutive_rows_are_described_by_the_first() -> None:
    """The header names an uncoupled layer's rows by the first (they follow on); rows that do
    not follow on (coupled cores) stay a list; both rebuild the same layer."""
    args = {**LINEAR_3_CORES, "table_rows": 6}
    layer = TBasisLinear(**args, rows=[3, 4, 5])
    assert layer.jc_config()["rows"] == 3
    assert TBasisLinear(**{**args, **layer.jc_config()}).row_list == [3, 4, 5]
    assert TBasisLinear(**args, rows=[0, 2, 1]).jc_config()["rows"] == [0, 2, 1]


def test_batchnorms_fold_into_shared_layers_and_survive_the_file(tmp_path: Path) -> None:
    from jointcomp.nn.bnfold import fold_batchnorms

    model, _, _ = shared_small_cnn()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        before = model(x)
    plain_weight = model.block1[0].weight.detach().clone()
    folded, skipped = fold_batchnorms(model)
    assert skipped == []
    # one fold for every layer type: the plain conv's weight rows, the shared layers' out_scale
    assert {f["name"]: f["into"] for f in folded} == {
        "block1.1": "block1.0",
        "block2.1": "block2.0",
        "block3.1": "block3.0",
    }
    assert all(isinstance(model.get_submodule(f["name"]), nn.Identity) for f in folded)
    assert not torch.equal(model.block1[0].weight, plain_weight)
    layer = model.get_submodule("block2.0")
    assert layer.jc_config()["out_scale"] and layer.jc_config()["bias"]
    assert list(dict(layer.named_parameters(recurse=False))) == ["out_scale", "bias"]
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-5)
    loaded = _round_trip(model, tmp_path / "f.jcz")
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


class _CountingScale(nn.Module):
    """A parametrization that counts its calls with gradients on, i.e. in training steps (a
    stand-in for QAT's basis quantizer)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        self.calls += torch.is_grad_enabled()
        return value * 0.5


def _fit_with_parametrized_basis(cached: bool) -> tuple[int, list[torch.Tensor]]:
    """One epoch of ``training.fit`` on random data, the shared basis parametrized; returns the
    parametrization's calls and the trained parameters."""
    from torch.nn.utils import parametrize
    from torch.utils.data import TensorDataset

    from jointcomp.training import TrainSpec, fit

    model, basis, _ = shared_small_cnn()
    counter = _CountingScale()
    parametrize.register_parametrization(basis, "basis", counter)
    counter.calls = 0  # registering runs it once
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(24, 1, 8, 8, generator=gen), torch.randint(0, 10, (24,)))
    spec = TrainSpec(epochs=1, optimizer="adam", lr=0.01)
    if not cached:  # the uncached reference: every use of the basis runs the parametrization
        real = parametrize.cached
        parametrize.cached = lambda: __import__("contextlib").nullcontext()
    try:
        fit(model, data, spec, batch_size=8, seed=0)
    finally:
        if not cached:
            parametrize.cached = real
    return counter.calls, [p.detach().clone() for p in model.parameters()]


def test_training_runs_a_shared_parametrization_once_per_step() -> None:
    """Under QAT the basis is a parametrized tensor (its quantizer) that every T-Basis layer
    uses: fit computes it once per step, and the trained network is the same as computing it
    at every use."""
    calls, trained = _fit_with_parametrized_basis(cached=True)
    assert calls == 3  # 24 samples, batches of 8: one call per step for three layers
    calls_uncached, reference = _fit_with_parametrized_basis(cached=False)
    assert calls_uncached == 9
    for ours, theirs in zip(trained, reference):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_header_leaves_out_what_the_replaced_layer_and_previous_edit_imply(
    tmp_path: Path,
) -> None:
    """A T-Basis layer's edit lists neither the conv geometry of the layer it replaces nor the
    basis settings of the T-Basis edit before it (nor its table rows, which follow on), and a
    quantizer not the shape of its tensor; a header that spells every argument out still opens
    to the same module, and is larger."""
    model, basis, _ = shared_small_cnn()
    attach(basis, "basis", IntQuantized.from_ints(torch.randint(-7, 8, (B, R, N, R)), 0.05, bits=4))
    save(tmp_path / "m.jcz", model, "zoo:small_cnn", KW)
    image = (tmp_path / "m.jcz").read_bytes()
    frame = unpack(image)
    edits = {(p, t): c for p, t, c in frame.header["model"]["edits"]}
    geometry = {"in_channels", "out_channels", "kernel_size", "padding"}
    settings = {"basis_size", "rank", "mode", "table_rows"}
    first, second = edits[("block2.0", "TBasisConv2d")], edits[("block3.0", "TBasisConv2d")]
    assert not geometry & set(first) and settings <= set(first)
    assert not (geometry | settings) & set(second)
    # its table rows start where the previous layer's end, so they are left out too
    assert "rows" not in second
    assert model.block3[0].row_list[0] == model.block2[0].row_list[-1] + 1
    assert edits[("block2.0.basis", "@parametrize")]["basis"][0][1] == {"bits": 4}

    loaded = open_artifact(image).model
    spelled = json.loads(json.dumps(frame.header))
    for edit in spelled["model"]["edits"]:
        path, kind, _ = edit
        if kind == "@parametrize":
            edit[2]["basis"][0][1]["shape"] = [B, R, N, R]
        else:
            module = loaded.get_submodule(path)
            edit[2] = MODULE_TYPES[kind].config(module)
    opened = open_artifact(image)
    spelled["tensors"] = [dict(e) for e in opened.entries]
    spelled["model"]["shared"] = opened.manifest.shared
    verbose = pack(spelled, [bytes(frame.payload)])
    assert len(verbose) > len(image)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
        assert torch.equal(model(x), open_artifact(verbose).model(x))


def test_quantized_folded_tbasis_model_loads_bit_exact(tmp_path: Path) -> None:
    """A T-Basis network as quantize and fold leave it (quantized basis and tables, batch norms
    folded into quantized output scales and biases) reads back bit-exactly, its table rows
    left out; the same header with every layer's first row spelled out
    opens to the same module and is larger."""
    from jointcomp.nn.bnfold import fold_batchnorms

    model, basis, table = shared_small_cnn()
    fold_batchnorms(model, lambda name: name != "block1.0")  # the T-Basis layers' only
    gen = torch.Generator().manual_seed(0)

    def ints(shape: tuple[int, ...], lo: int, hi: int) -> torch.Tensor:
        return torch.randint(lo, hi, shape, generator=gen)

    attach(basis, "basis", IntQuantized.from_ints(ints((B, R, N, R), -7, 8), 0.05, bits=4))
    for name in ("coef", "rank_scale"):
        shape = tuple(getattr(table, name).shape)
        attach(table, name, IntQuantized.from_ints(ints(shape, -7, 8), 0.1, bits=4))
    for path in ("block2.0", "block3.0"):
        layer = model.get_submodule(path)
        n = layer.out_scale.shape[0]
        scale = IntQuantized.from_ints(ints((n,), 0, 64), 0.02, 0.0, bits=6, signed=False)
        attach(layer, "out_scale", scale)
        attach(layer, "bias", IntQuantized.from_ints(ints((n,), -31, 32), 0.01, bits=6))
    save(tmp_path / "m.jcz", model, "zoo:small_cnn", KW)
    image = (tmp_path / "m.jcz").read_bytes()
    frame = unpack(image)
    loaded = open_artifact(image).model
    assert isinstance(loaded.block2[1], nn.Identity)
    assert isinstance(loaded.block1[1], nn.BatchNorm2d)  # the plain conv's was left out
    q = quantized_tensors(loaded)
    assert {"block2.0.out_scale", "block2.0.bias", "block3.0.out_scale", "block3.0.bias"} <= set(q)
    spelled = json.loads(json.dumps(frame.header))
    for path, kind, config in spelled["model"]["edits"]:
        if kind.startswith("TBasis"):
            config["rows"] = model.get_submodule(path).row_list[0]
    with_rows = pack(spelled, [bytes(frame.payload)])
    assert len(image) < len(with_rows)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(loaded(x), expected)
        assert torch.equal(open_artifact(with_rows).model(x), expected)


def test_rows_that_do_not_follow_the_previous_layers_are_stored(tmp_path: Path) -> None:
    """1.5 leaves out a T-Basis layer's rows only where they start right after the previous
    layer's; rows elsewhere (a reordered or coupled table) are written and read back."""
    model, _, _ = shared_small_cnn()
    first, second = model.block2[0], model.block3[0]
    reordered = [r + len(first.row_list) for r in range(len(second.row_list))]
    first.row_list, second.row_list = list(range(len(first.row_list))), reordered
    second.row_list = [reordered[-1], *reordered[:-1]]  # not consecutive: stored as a list
    save(tmp_path / "m.jcz", model, "zoo:small_cnn", KW)
    image = (tmp_path / "m.jcz").read_bytes()
    edits = {(p, t): c for p, t, c in unpack(image).header["model"]["edits"]}
    assert edits[("block3.0", "TBasisConv2d")]["rows"] == second.row_list
    loaded = open_artifact(image).model
    assert loaded.block2[0].row_list == first.row_list
    assert loaded.block3[0].row_list == second.row_list
