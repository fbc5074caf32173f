"""The fast runtime: plain and factorized layers of every kind at 2, 4 and 8 bits (and k-means
codebooks) stay within a stated tolerance of the exact module in every form they can run in;
quantized Linears really run on int8 kernels holding the file's own integers; the input module
is left as it was; files load fast; a tiny BERT stays close; deviations and reports say what
they should."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.nn.utils import parametrize

import jointcomp
from jointcomp.nn.execution import FactorizedModule
from jointcomp.nn.quantized import Codebook, IntQuantized, attach, quantized_tensors
from jointcomp.runtime import (
    FORMS,
    Int8Linear,
    IntGrid,
    deviation,
    int8_linear,
    materialize,
    runtime_report,
    to_fast,
)
from jointcomp.runtime.fast import _candidates, _capture, _Int8Setup, _units

from .quantize_util import KWARGS, factorized_small_cnn, small_cnn, uneven_tbasis_model
from .tiny_transformers import tiny_batch, write_tiny_bert

# The stated tolerance: int8 kernels quantize activations to 8 bits per token, a rebuilt dense
# weight sums in another order. Every output stays within 2% of the exact output's largest
# magnitude, at a mean cosine of 0.999 or more.
REL_TOL, MIN_COSINE = 0.02, 0.999
FAST = {"min_run_time": 0.001, "rounds": 1}  # tests check choices, not timings

LAYOUTS = ["plain", "svd-tucker-cp", "spatial-tt", "lowrank-sparse", "tbasis"]


def _model(layout: str) -> nn.Module:
    if layout == "plain":
        return small_cnn()
    if layout == "tbasis":
        return uneven_tbasis_model()
    return factorized_small_cnn(layout)


def _batches(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
        for _ in range(n)
    ]


def _quantized(layout: str, bits: int, method: str = "ptq") -> nn.Module:
    torch.manual_seed(0)
    config = {method: {}, "bits": {"weights": bits, "factors": bits}}
    model, _ = jointcomp.quantize(_model(layout), config, data=_batches())
    return model.eval()


def _assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    got, want = got.detach(), want.detach()
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= REL_TOL * scale
    cos = torch.nn.functional.cosine_similarity(
        got.reshape(got.shape[0], -1).double(), want.reshape(want.shape[0], -1).double()
    )
    assert float(cos.mean()) >= MIN_COSINE


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_form_of_every_layer_stays_close_to_exact(layout: str, bits: int) -> None:
    exact = _quantized(layout, bits)
    assert quantized_tensors(exact)
    x = _batches(1)[0][0]
    plain, grids = materialize(exact)
    units = _units(plain, grids)
    inputs = _capture(plain, [m for _, m in units], x)
    kinds = set()
    for name, module in units:
        want = module(inputs[id(module)])
        setup = _Int8Setup(grids, (True, False), inputs, 4.0)
        forms, rule = _candidates(name, module, setup)
        assert rule in forms and set(forms) <= set(FORMS)
        for form, candidate in forms.items():
            kinds.add(form)
            _assert_close(candidate(inputs[id(module)]), want)
    if layout != "plain":
        assert {"dense float", "factorized float"} <= kinds
    # the whole module, forms chosen by rule and by time
    for example in (None, x[:1]):
        fast = to_fast(exact, example, **FAST)
        _assert_close(fast(x), exact(x))
        assert deviation(fast, exact, [x]).mean_cosine >= MIN_COSINE


@pytest.mark.parametrize("layout", ["plain", "svd-tucker-cp"])
def test_kmeans_codebooks_run_as_plain_floats(layout: str) -> None:
    exact = _quantized(layout, 4, method="kmeans")
    assert any(isinstance(p, Codebook) for p in quantized_tensors(exact).values())
    x = _batches(1)[0][0]
    fast = to_fast(exact, x[:1], **FAST)
    assert not any(parametrize.is_parametrized(m) for m in fast.modules())
    _assert_close(fast(x), exact(x))


def _int_mlp(bits: int = 4, zero_point: float = 0.0, axis: int | None = 0) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 10))
    for layer in (model[0], model[2]):
        rows, cols = layer.weight.shape
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        ints = torch.randint(lo, hi + 1, (rows, cols))
        scale = torch.rand(rows, 1) * 0.05 + 0.01 if axis == 0 else torch.tensor(0.03)
        zp = torch.full((rows, 1) if axis == 0 else (), zero_point)
        grid = IntQuantized.from_ints(ints, scale, zp, bits=bits, axis=axis)
        attach(layer, "weight", grid)
    return model.eval()


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantized_linears_run_on_int8_kernels_with_their_own_integers(bits: int) -> None:
    exact = _int_mlp(bits)
    fast = to_fast(exact)  # no example: the rule puts every quantized Linear on int8
    for i in (0, 2):
        kernel = fast[i]
        assert isinstance(kernel, nnqd.Linear) and isinstance(kernel, Int8Linear)
        ints = exact[i].parametrizations.weight[0].int_repr
        assert torch.equal(kernel.weight().int_repr().to(torch.int64), ints.to(torch.int64))
    assert runtime_report(fast).counts() == {"int8": 2}
    x = torch.randn(32, 48)
    _assert_close(fast(x), exact(x))


@pytest.mark.parametrize(
    "zero_point, axis, activations",
    [(2.0, 0, "token"), (-3.0, None, "tensor"), (0.0, None, "token")],
)
def test_int8_kernels_take_zero_points_and_per_tensor_grids(
    zero_point: float, axis: int | None, activations: str
) -> None:
    exact = _int_mlp(4, zero_point, axis)
    fast = to_fast(exact, activations=activations)
    assert isinstance(fast[0], Int8Linear) and fast[0].per_token == (activations == "token")
    x = torch.randn(8, 3, 48)  # leading dimensions pass through
    _assert_close(fast(x).reshape(-1, 10), exact(x).reshape(-1, 10))


def test_an_8_bit_grid_reduces_the_activation_range_and_stays_close() -> None:
    exact = _int_mlp(8)
    fast = to_fast(exact)
    assert fast[0].reduce_range  # |ints| up to 128 could overflow fbgemm's int16 pairs
    x = torch.randn(16, 48) * 50  # large activations
    _assert_close(fast(x), exact(x))


def test_outlier_channels_run_in_float_and_cut_the_error() -> None:
    exact = _int_mlp(4)
    x = torch.randn(64, 48)
    x[:, 5] *= 40.0  # one channel far larger than the rest in every sample
    assert to_fast(exact)[0].outlier_cols is None  # no example: no float channels
    plain, grids = materialize(exact)
    inputs = _capture(plain, [plain[0]], x[:16])
    for ratio, want in ((4.0, {"int8 + float channels": [5], "int8": None}), (None, {})):
        forms, _ = _candidates("0", plain[0], _Int8Setup(grids, (True,), inputs, ratio))
        assert set(forms) == {"dense float", "int8", *want}
        for form, want_cols in want.items():
            cols = forms[form].outlier_cols
            assert (cols.tolist() if cols is not None else None) == want_cols
    kernel = int8_linear(plain[0], grids["0.weight"])
    with torch.no_grad():
        want = exact[0](x)
    err_plain = float((kernel(x) - want).abs().max())
    kernel.set_outliers(torch.tensor([5]), plain[0].weight)
    err_split = float((kernel(x) - want).abs().max())
    assert err_split < err_plain / 8  # about 20× here
    _assert_close(kernel(x), want)


def test_grids_an_int8_kernel_cannot_take_stay_float() -> None:
    layer = nn.Linear(4, 3)
    ints = torch.randint(-8, 8, (3, 4))
    scale = torch.full((1, 4), 0.1)
    by_column = IntGrid(ints, scale, torch.zeros(1, 4), 4, True, False, 1)
    wide = IntGrid(ints, torch.full((3, 1), 0.1), torch.zeros(3, 1), 12, True, False, 0)
    half_zero = IntGrid(ints, torch.full((3, 1), 0.1), torch.full((3, 1), 0.5), 4, True, False, 0)
    assert int8_linear(layer, by_column) is None
    assert int8_linear(layer, wide) is None
    assert int8_linear(layer, half_zero) is None


def test_a_zero_scale_row_stays_zero() -> None:
    layer = nn.Linear(4, 3, bias=False)
    ints = torch.randint(-8, 8, (3, 4))
    scale = torch.tensor([[0.1], [0.0], [0.2]])
    kernel = int8_linear(layer, IntGrid(ints, scale, torch.zeros(3, 1), 4, True, False, 0))
    assert kernel is not None
    y = kernel(torch.randn(5, 4))
    assert torch.equal(y[:, 1], torch.zeros(5))


def test_the_input_module_is_left_untouched() -> None:
    exact = _quantized("lowrank-sparse", 4)
    x = _batches(1)[0][0]
    before, y_before = _state(exact), exact(x)
    executions = {
        n: m.execution for n, m in exact.named_modules() if isinstance(m, FactorizedModule)
    }
    fast = to_fast(exact, x[:1], **FAST)
    assert fast is not exact
    after = exact.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert executions == {
        n: m.execution for n, m in exact.named_modules() if isinstance(m, FactorizedModule)
    }
    assert quantized_tensors(exact) and not exact.training
    assert torch.equal(exact(x), y_before)


def test_shared_layers_are_replaced_everywhere() -> None:
    exact = _int_mlp(4)
    twice = nn.Sequential(exact[0], nn.ReLU(), nn.Linear(64, 48), exact[0])
    fast = to_fast(twice)
    assert fast[0] is fast[3] and isinstance(fast[0], Int8Linear)


def test_load_runs_a_saved_file_fast(tmp_path: Path) -> None:
    exact = _quantized("svd-tucker-cp", 4)
    path = tmp_path / "model.jcz"
    jointcomp.save(exact, path, builder="zoo:small_cnn", kwargs=KWARGS)
    x = _batches(1)[0][0]
    loaded = jointcomp.load(path)
    fast = jointcomp.load(path, runtime="fast", example=x[:1], threads=1)
    report = runtime_report(fast)
    assert report is not None and report.timed and not report.bit_exact
    assert all(
        c.times_ms and c.form in c.times_ms for c in report.layers if c.why != "the only form"
    )
    assert runtime_report(loaded) is None and quantized_tensors(loaded)
    _assert_close(fast(x), loaded(x))
    assert deviation(fast, loaded, [(x, None)]).top1_agreement >= 0.9
    ruled = jointcomp.load(path, runtime="fast")
    assert not runtime_report(ruled).timed
    with pytest.raises(ValueError, match=r"runtime must be one of \('exact', 'fast'\)"):
        jointcomp.load(path, runtime="quick")


def test_report_lists_every_choice_and_says_it_is_not_exact() -> None:
    exact = _quantized("spatial-tt", 4)
    x = _batches(1)[0][0][:1]
    fast = to_fast(exact, x, **FAST)
    report = runtime_report(fast)
    names = {c.name for c in report.layers}
    assert {"block2.0", "block3.0", "fc"} <= names
    for choice in report.layers:
        assert choice.form in FORMS
        times, devs, form = choice.times_ms, choice.deviations, choice.form
        if len(times) > 1:  # under the budget: no other form is both faster and as exact
            assert not any(times[f] < times[form] and devs[f] <= devs[form] for f in times)
    text = report.table()
    assert "not bit-exact" in text and "block3.0" in text
    assert report.to_dict()["bit_exact"] is False


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        to_fast("model.jcz")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        to_fast(nn.Linear(2, 2), threads=0)
    with pytest.raises(
        ValueError, match=r"activations must be one of \('auto', 'token', 'tensor'\)"
    ):
        to_fast(nn.Linear(2, 2), activations="row")
    with pytest.raises(ValueError, match="outliers must be a ratio above 1"):
        to_fast(nn.Linear(2, 2), outliers=0.5)
    with pytest.raises(ValueError, match="min_cosine must be a number"):
        to_fast(nn.Linear(2, 2), min_cosine=1.5)


class _Outputs(nn.Module):
    """A classifier whose output is a dict or a tuple around its logits."""

    def __init__(self, inner: nn.Module, kind: str) -> None:
        super().__init__()
        self.inner, self.kind = inner, kind

    def forward(self, x: torch.Tensor) -> object:
        logits = self.inner(x)
        return {"hidden": x, "logits": logits} if self.kind == "dict" else (logits, x)


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_deviation_reads_the_selected_output(kind: str) -> None:
    exact = _Outputs(_int_mlp(4), kind)
    fast = to_fast(exact)
    x = torch.randn(20, 48)
    which = "logits" if kind == "dict" else 0
    d = deviation(fast, exact, [x, x * 2], output=which)
    assert d.samples == 40 and d.mean_cosine >= MIN_COSINE and d.top1_agreement >= 0.9
    with torch.no_grad():
        peak = float(exact(x * 2)[which].abs().max())
    assert 0 < d.max_abs_error <= REL_TOL * peak
    same = deviation(exact, copy.deepcopy(exact), x, output=which)
    assert same.max_abs_error == 0.0 and same.top1_agreement == 1.0
    with pytest.raises(ValueError, match="at least one batch"):
        deviation(fast, exact, [])


def test_a_tiny_bert_runs_fast_close_to_exact(tmp_path: Path) -> None:
    folder = write_tiny_bert(tmp_path / "bert")
    model = jointcomp.models.build_model(f"hf:{folder}")
    batch = tiny_batch(folder)
    data = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    exact, _ = jointcomp.quantize(
        model, {"ptq": {}, "bits": {"weights": 4}}, data=data, task="distill"
    )
    example = {k: v[:1] for k, v in batch.items()}
    fast = to_fast(exact, example, **FAST)
    linears = [
        k
        for k in quantized_tensors(exact)
        if k.endswith(".weight")
        and isinstance(exact.get_submodule(k[: -len(".weight")]), nn.Linear)
    ]
    members = [m for c in runtime_report(fast).layers for m in c.members]
    assert linears and sorted(members) == sorted(k[: -len(".weight")] for k in linears)
    # query, key and value read one input: chosen together, run on one stacked kernel
    qkv = [c for c in runtime_report(fast).layers if len(c.members) == 3]
    assert len(qkv) == 2 and all(m.endswith(("query", "key", "value")) for m in qkv[0].members)
    ruled = to_fast(exact)  # the rule: every 4-bit Linear on an int8 kernel
    assert sum(isinstance(m, Int8Linear) for m in ruled.modules()) == len(linears)
    for candidate in (fast, ruled):
        d = deviation(candidate, exact, batch, output="last_hidden_state")
        assert d.mean_cosine >= MIN_COSINE and d.top1_agreement is None


def _tiny_bert_exact(tmp_path: Path) -> tuple[nn.Module, dict, dict]:
    folder = write_tiny_bert(tmp_path / "bert")
    model = jointcomp.models.build_model(f"hf:{folder}")
    batch = tiny_batch(folder)
    exact, _ = jointcomp.quantize(
        model, {"ptq": {}, "bits": {"weights": 4}}, data=[batch], task="distill"
    )
    return exact.eval(), batch, {k: v[:2] for k, v in batch.items()}


def test_a_loose_budget_takes_each_layers_fastest_form_and_a_tight_one_holds(
    tmp_path: Path,
) -> None:
    exact, _, example = _tiny_bert_exact(tmp_path)
    loose = runtime_report(to_fast(exact, example, min_cosine=-1.0, **FAST))
    timed = [c for c in loose.layers if len(c.times_ms) > 1]
    assert timed and all(c.deviations for c in timed)
    for c in timed:
        assert c.times_ms[c.form] == min(c.times_ms.values())
        assert all(c.deviations[f] == 0.0 for f in ("dense float",) if f in c.deviations)
    assert any(d > 0 for c in timed for d in c.deviations.values())  # int8 forms do deviate
    for min_cosine in (0.99999, 1.0):
        fast = to_fast(exact, example, min_cosine=min_cosine, **FAST)
        report = runtime_report(fast)
        assert report.min_cosine == min_cosine and report.cosine >= min_cosine
        assert deviation(fast, exact, example).mean_cosine >= min_cosine - 1e-12
        assert report.predicted_cosine >= min_cosine or report.backed_off
    # cosine 1 leaves only the float forms; the table says what was asked and measured
    assert set(report.counts()) == {"dense float"}
    assert "within cosine 1.0" in report.table()


def test_a_missed_budget_backs_off_the_worst_layers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jointcomp.runtime.fast as fast_module

    exact, _, example = _tiny_bert_exact(tmp_path)
    # a plan that ignores the budget (every layer at its least exact form, whatever the
    # timings): measuring must catch it and move layers to more exact forms
    monkeypatch.setattr(fast_module, "_hull", lambda times, devs: sorted(devs, key=devs.get)[::-1])
    monkeypatch.setattr(fast_module, "_within_budget", lambda hulls, *_: dict.fromkeys(hulls, 0))
    fast = to_fast(exact, example, min_cosine=1.0, **FAST)
    report = runtime_report(fast)
    assert report.backed_off and report.cosine == 1.0
    assert deviation(fast, exact, example).mean_cosine >= 1.0 - 1e-12
    backed = {c.name: c for c in report.layers if c.name in report.backed_off}
    assert all("backed off" in c.why for c in backed.values())


def test_the_budgeted_choice_walks_the_convex_hull() -> None:
    from jointcomp.runtime.fast import _hull, _within_budget

    times = {"fast": 1.0, "mid": 2.0, "bad": 2.5, "poor": 2.9, "exact": 3.0}
    devs = {"fast": 1.0, "mid": 0.2, "bad": 0.5, "poor": 0.15, "exact": 0.0}
    # bad is slower and worse than mid; poor lies above the line from mid to exact
    assert _hull(times, devs) == ["fast", "mid", "exact"]
    hulls = {"a": ["fast", "mid", "exact"], "b": ["fast", "exact"]}
    t = {"a": times, "b": {"fast": 1.0, "exact": 1.1}}
    d = {"a": devs, "b": {"fast": 0.3, "exact": 0.0}}
    assert _within_budget(hulls, t, d, 2.0) == {"a": 0, "b": 0}  # 1.3 fits
    assert _within_budget(hulls, t, d, 1.0) == {"a": 0, "b": 1}  # b buys 0.3 for 0.1 ms
    assert _within_budget(hulls, t, d, 0.5) == {"a": 1, "b": 1}
    assert _within_budget(hulls, t, d, 0.0) == {"a": 2, "b": 1}


def test_linears_reading_one_input_share_one_stacked_kernel(tmp_path: Path) -> None:
    from jointcomp.runtime.fast import _make_units
    from jointcomp.runtime.shared import SharedInputSlice

    exact, batch, example = _tiny_bert_exact(tmp_path)
    plain, grids = materialize(exact)
    units0 = _units(plain, grids)
    inputs = _capture(plain, [m for _, m in units0], example)
    setup = _Int8Setup(grids, (True, False), inputs, 4.0)
    units = _make_units(plain, grids, setup)
    groups = [u for u in units if len(u.layers) == 3]
    assert len(groups) == 2 and len(units) == len(units0) - 4
    group = groups[0]
    x = group.x
    assert x is not None
    for form, slices in group.forms.items():
        if form == "dense float":
            continue
        assert all(isinstance(s, SharedInputSlice) for s in slices)
        assert len({id(s.shared) for s in slices}) == 1
        # each slice computes what the Linear's own kernel of that form computes
        for name, layer, piece in zip(
            group.name.split("{")[1].rstrip("}").split(","), group.layers, slices, strict=True
        ):
            own = next(u for u in _candidates_of(plain, grids, setup, layer))
            alone = own[form](x)
            assert torch.allclose(piece(x), alone, rtol=1e-5, atol=1e-5 * float(alone.abs().max()))
            assert name in ("query", "key", "value")
        # a new input, or the same one changed in place, is computed anew
        y = slices[0](x + 1.0)
        assert not torch.equal(y, slices[0](x))
    # the whole model on stacked per-token kernels stays close to exact
    fast = to_fast(exact, example, min_cosine=-1.0, activations="token", **FAST)
    assert any(isinstance(m, SharedInputSlice) for m in fast.modules()) or all(
        c.form == "dense float" for c in runtime_report(fast).layers if len(c.members) == 3
    )
    d = deviation(fast, exact, batch, output="last_hidden_state")
    assert d.mean_cosine >= MIN_COSINE


def _candidates_of(
    plain: nn.Module, grids: dict, setup: _Int8Setup, layer: nn.Module
) -> list[dict[str, nn.Module]]:
    name = next(n for n, m in plain.named_modules() if m is layer)
    return [_candidates(name, layer, setup)[0]]


def test_batch_norms_fold_into_float_layers_but_not_into_int8_ones() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 6 * 6, 16), nn.BatchNorm1d(16),
    )  # fmt: skip
    with torch.no_grad():  # batch norms that do something
        for bn in (model[1], model[5]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 2)
    model.eval()
    ints = torch.randint(-8, 8, (16, 8 * 6 * 6))
    grid = IntQuantized.from_ints(ints, torch.full((16, 1), 0.01), bits=4, axis=0)
    attach(model[4], "weight", grid)
    fast = to_fast(model)
    report = runtime_report(fast)
    assert report.folded == ["1"]  # the conv's; the int8 Linear keeps its integers and its BN
    assert isinstance(fast[1], nn.Identity) and isinstance(fast[5], nn.BatchNorm1d)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=0.05 * float(model(x).abs().max()))
