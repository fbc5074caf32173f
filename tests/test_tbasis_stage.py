"""Stage ``share`` end to end: the T-Basis recipe (shrunk to small_cnn on digits) runs share →
quantize → fold → encode; the basis is quantized and stored once and counted once; the file
decodes bit-exactly to the model that went into encode."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from filelock import FileLock

import jointcomp
from jointcomp.audit.measure import count_params
from jointcomp.cli import cli
from jointcomp.container import open_artifact
from jointcomp.models import build_model
from jointcomp.nn.tbasis import TBasisConv2d, TBasisLinear, shared_modules
from jointcomp.recipe import load_recipe, load_recipe_data
from jointcomp.stages.share import ShareConfig, _assign_rows, _plan

from .conftest import assert_learned, assert_same_tensors, promised_model, spy_encode

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes/resnet32-fashion-tbasis.yaml"
SMALL = [
    "model.builder=zoo:small_cnn",
    "data.dataset=digits",
    "data.val_split=0.2",
    "data.test_split=0.2",
    "train.epochs=2",
    "train.lr=0.02",
    "stages.0.share.basis=8",
    "stages.0.share.rank=8",
    "stages.0.share.fit_steps=10",
    "stages.0.share.finetune.epochs=1",
    "stages.1.quantize.qat.finetune.epochs=1",
    "audit.latency=false",
    "audit.html=false",
]


def test_recipe_validates_as_written() -> None:
    recipe = load_recipe(RECIPE, ["data.limit=2000", "train.epochs=1"])
    assert [s.stage for s in recipe.stages] == ["share", "quantize", "fold", "encode"]
    assert recipe.model.builder == "zoo:resnet32" and recipe.data.dataset == "fashion-mnist"


BEFORE_ENCODE = "before_encode.pt"  # the run's model as it went into encode: tensors, outputs


def _run_recipe(out: Path) -> None:
    """Run the shrunk recipe into ``out``, keeping the tensors of the model encode was given
    (as given, and as the file must hold them) and the outputs of the latter on a fixed batch
    (the state of a parametrized module pickles; the module itself does not)."""
    args = ["run", str(RECIPE), "-q", "-o", str(out)]
    for s in SMALL:
        args += ["--set", s]
    with spy_encode() as seen:
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (before,) = seen
    promised = promised_model(before)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = promised(x)
    state, kept = before.model.state_dict(), promised.state_dict()
    torch.save({"state": state, "promised": kept, "x": x, "y": y}, out / BEFORE_ENCODE)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's folder; under pytest-xdist one run for all workers of the session."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        out = tmp_path_factory.mktemp("tbasis") / "run"
        _run_recipe(out)
        return out
    root = tmp_path_factory.getbasetemp().parent  # the session's, shared by its workers
    out = root / "tbasis-recipe-run"
    with FileLock(str(root / "tbasis-recipe-run.lock")):
        if not (out / BEFORE_ENCODE).exists():
            shutil.rmtree(out, ignore_errors=True)  # a failed attempt's leftovers
            _run_recipe(out)
    return out


def _recipe_stage(index: int, name: str) -> dict:
    return load_recipe_data(RECIPE)["stages"][index][name]


def _stages(run_dir: Path) -> dict[str, dict]:
    state = json.loads((run_dir / "state.json").read_text())
    return {s["name"]: s for s in state["stages"]}


def test_share_records_layers_and_accounting(run_dir: Path) -> None:
    share = _stages(run_dir)["share"]
    record = share["record"]
    rows = record["layers"]
    assert {r["name"] for r in rows} == {"block1.0", "block2.0", "block3.0", "fc"}
    for r in rows:
        assert {"shape", "padded", "cores", "coefficients", "rel_error_init"} <= set(r)
        assert r["coefficients"] == r["cores"] * (8 + 8)
    summary = record["summary"]
    assert summary["basis_params"] == 8 * 8 * 9 * 8
    n_rows = sum(r["cores"] for r in rows)
    assert summary["coefficient_params"] == n_rows * (8 + 8)
    # the stage's total counts the basis once, as the pipeline's own count does
    assert summary["params_after"] == share["params"]
    assert summary["rest_params"] == (
        summary["params_after"] - summary["basis_params"] - summary["coefficient_params"]
    )


def test_quantize_quantizes_the_shared_basis_once(run_dir: Path) -> None:
    rows = _stages(run_dir)["quantize"]["record"]["layers"]
    tensors = [r["tensor"] for r in rows]
    assert sum(t.endswith(".basis.basis") for t in tensors) == 1
    assert sum(t.endswith(".coefficients.coef") for t in tensors) == 1
    bits = {r["tensor"].rpartition(".")[2]: r["bits"] for r in rows}
    assert bits["basis"] == bits["coef"] == bits["rank_scale"] == 4
    grain = {r["tensor"].rpartition(".")[2]: r["granularity"] for r in rows}
    # the recipe's granularity: tensor, or auto (a scale per basis element, whose 8×9×8
    # values are enough; one for each table of short coefficient rows)
    spec = _recipe_stage(1, "quantize")
    want = {"tensor": "tensor", "auto": "channel"}[spec["granularity"]]
    assert grain["basis"] == want and grain["rank_scale"] == "tensor"
    # an override may give the coefficient table a scale per row (per core)
    rows = spec["overrides"].get("*.coef", {}).get("granularity", "tensor")
    assert grain["coef"] == {"channel": "channel", "auto": "tensor", "tensor": "tensor"}[rows]


def test_batch_norms_are_folded_after_qat(run_dir: Path) -> None:
    """QAT trains with the T-Basis layers' batch norms (quantize folds only the plain stem's,
    which small_cnn does not have); then the fold stage takes them into the T-Basis layers'
    output scales and biases and rounds those on the recipe's grids."""
    stages = _stages(run_dir)
    assert "bn_folded" not in stages["share"]["record"]
    assert stages["quantize"]["record"]["summary"]["bn_folded"] == []
    fold = stages["fold"]["record"]
    assert {(f["name"], f["into"]) for f in fold["folded"]} == {
        ("block1.1", "block1.0"),
        ("block2.1", "block2.0"),
        ("block3.1", "block3.0"),
    }
    assert fold["not_folded"] == []
    rounding = _recipe_stage(2, "fold")["round"]
    rounded = {r["tensor"]: r["bits"] for r in fold["rounded"]}
    assert rounded["block2.0.out_scale"] == rounding["scales"]["bits"]
    assert rounded["block2.0.bias"] == rounding["biases"]["bits"]
    model = open_artifact(run_dir / "model.jcz", trust=True).model
    assert isinstance(model.block2[1], torch.nn.Identity)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_quantize_records_its_training_steps_and_time(run_dir: Path) -> None:
    """The QAT record says how many steps it trained and how long they took (what a user
    needs to size a longer run)."""
    from .stage_util import digits_bundle

    summary = _stages(run_dir)["quantize"]["record"]["summary"]
    train = digits_bundle().train
    assert summary["finetune_steps"] == -(-len(train) // 64)  # 1 epoch, batches of 64
    assert summary["finetune_seconds"] > 0


def test_share_equalizes_the_tables_last(run_dir: Path) -> None:
    stages = _stages(run_dir)
    moved = stages["share"]["record"]["equalized"]["layers"]
    # each conv's magnitude went into its batch norm; the classifier has none to take it
    assert moved == {"block1.0": "block1.1", "block2.0": "block2.1", "block3.0": "block3.1"} | {
        "fc": "cores"
    }
    # re-estimated batch norms: right after the quantizers go in, the network is not at chance
    assert stages["quantize"]["record"]["summary"]["metric_quantized"] > 0.15


def test_share_fits_in_the_input_metric_and_recalibrates(run_dir: Path) -> None:
    record = _stages(run_dir)["share"]["record"]
    assert record["fit"]["metric"] == "inputs"
    assert record["fit"]["mean_rel_error"] < record["fit"]["mean_rel_error_start"]


def test_file_decodes_bit_exactly_with_one_basis(run_dir: Path) -> None:
    art = open_artifact(run_dir / "model.jcz", trust=True)
    again = open_artifact(run_dir / "model.jcz", trust=True).model.eval()
    model = art.model.eval()
    bases, tables = shared_modules(model)
    assert len(bases) == 1 and len(tables) == 1
    layers = [m for m in model.modules() if isinstance(m, (TBasisConv2d, TBasisLinear))]
    assert len(layers) == 4 and all(m.basis is bases[0] for m in layers)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    report = json.loads((run_dir / "report.json").read_text())
    assert count_params(model) == _stages(run_dir)["share"]["params"]
    layer_rows = {r["name"]: r for r in report["layers"]}
    basis_row = next(r for n, r in layer_rows.items() if n.endswith(".basis"))
    assert basis_row["type"] == "TBasis+IntQuantized" and basis_row["params"] == 8 * 8 * 9 * 8
    table_row = next(r for n, r in layer_rows.items() if n.endswith(".coefficients"))
    assert table_row["type"].startswith("TBasisCoefficients")


def test_file_holds_the_model_that_went_into_encode(run_dir: Path) -> None:
    """The module read from the file is the one encode was given: every tensor comes back
    exactly (the recipe's ``float_storage: f16`` rounds the float32 tensors not stored as
    log-grid codes — quantizer scales — and nothing else) and it computes the same outputs,
    bit for bit, as the encoded structure with those tensors."""
    before = torch.load(run_dir / BEFORE_ENCODE, weights_only=True)
    loaded = jointcomp.load(run_dir / "model.jcz")
    assert_same_tensors(before["promised"], loaded.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded(before["x"]), before["y"])
    rounded = [n for n, t in before["state"].items() if not torch.equal(before["promised"][n], t)]
    f16 = _recipe_stage(3, "encode").get("float_storage") == "f16"
    assert bool(rounded) == f16 and all(name.endswith(".scale") for name in rounded)


def test_the_run_trained(run_dir: Path) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    assert report["final"]["bytes"] == (run_dir / "model.jcz").stat().st_size
    # shrunk to seconds (2 epochs at lr 0.02, an 8-element basis fit in 10 steps, one epoch
    # of fine-tuning and of QAT): ~71% test top-1 for the baseline, ~32% for the file; chance
    # is 10%, where a run that does not train stays
    assert_learned(report, baseline_floor=0.6, final_floor=0.2, max_drop=0.5)


def test_coupled_layers_share_leading_rows() -> None:
    model = build_model("zoo:resnet20", {"in_channels": 1, "num_classes": 10, "image_size": 8})
    config = ShareConfig(
        basis=4, rank=4, coupled=True, coupled_cores=2, scope={"exclude": ["conv1"]}
    )
    candidates, _ = _plan(model, config)
    n_rows = _assign_rows(candidates, config)
    by_name = {c.name: c.rows for c in candidates}
    # the 3×3 convs of stage 1 all read 16→16: their first two rows are one pair of rows
    stage1 = [by_name[f"layer1.{b}.conv{k}"] for b in range(3) for k in (1, 2)]
    assert all(r[:2] == stage1[0][:2] for r in stage1)
    assert len({tuple(r[2:]) for r in stage1}) == len(stage1)  # the rest their own
    # a layer alone in its layout keeps every row to itself
    assert not set(by_name["fc"]) & {r for n, rr in by_name.items() if n != "fc" for r in rr}
    assert n_rows == len({r for rr in by_name.values() for r in rr})


def test_checkpoint_reloads_with_one_basis_for_a_resumed_quantize(run_dir: Path) -> None:
    """A resumed run quantizes the model read back from the share checkpoint: it must hold
    one basis object again, so the quantizer finds it once."""
    from jointcomp.quant import find_targets

    model = open_artifact(run_dir / "checkpoints/00-share.jcz", trust=True).model
    targets, _ = find_targets(model, set())
    names = [t.name for t in targets]
    assert sum(n.endswith("basis.basis") for n in names) == 1
    assert sum(n.endswith("coefficients.coef") for n in names) == 1


def test_codebook_tables_train_beside_uniform_qat(tmp_path: Path) -> None:
    """An override ``codebook: true`` under QAT: the matched coefficient table gets a
    16-value codebook trained with the uniform grids of the rest, and the file holds it."""
    from jointcomp.container import save
    from jointcomp.nn.quantized import Codebook
    from jointcomp.nn.tbasis_equalize import equalize_tbasis
    from jointcomp.stages.quantize import QuantizeConfig, quantize

    from .test_tbasis_equalize import _digits_context, _uneven_model
    from .test_tbasis_layers import KW

    model = _uneven_model()
    equalize_tbasis(model)
    config = QuantizeConfig.model_validate(
        {
            "qat": {"finetune": {"epochs": 1, "max_batches": 2, "lr": 1e-4}},
            "bits": {"factors": 4, "weights": 8},
            "overrides": {"*.coef": {"codebook": True}},
        }
    )
    model, record = quantize(model, config, _digits_context({"epochs": 1, "lr": 0.002}))
    rows = {r["tensor"].rpartition(".")[2]: r for r in record["layers"]}
    assert rows["coef"]["method"] == "kmeans" and rows["coef"]["granularity"] == "codebook"
    assert rows["basis"]["method"] == rows["rank_scale"]["method"] == "qat"
    save(tmp_path / "m.jcz", model, "zoo:small_cnn", KW)
    loaded = open_artifact(tmp_path / "m.jcz").model
    table = shared_modules(loaded)[1][0]
    (codebook,) = table.parametrizations["coef"]
    assert isinstance(codebook, Codebook) and table.coef.unique().numel() <= 16
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


def test_codebook_overrides_need_training() -> None:
    from jointcomp.errors import RecipeError

    sets = [
        "stages.1.quantize.qat=null",
        "stages.1.quantize.ptq={}",
        'stages.1.quantize.overrides={"*.coef": {"codebook": true}}',
    ]
    with pytest.raises(RecipeError, match="codebook trains codebooks beside uniform grids"):
        load_recipe(RECIPE, sets)
