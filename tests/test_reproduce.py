"""tools/reproduce.py and its helpers: README table blocks are replaced exactly, nothing else
moves; tables come out of tools' output; the anchor pick honours the accuracy tolerance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jointcomp.codec import entropy_bits

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import anchors_table  # noqa: E402
import reproduce  # noqa: E402
from bench_nncodec import zero_context_bytes  # noqa: E402
from readme_tables import (  # noqa: E402
    block_names,
    last_markdown_table,
    md_table,
    replace_block,
)

README = """# x

intro

<!-- table:codecs -->
| old | table |
|---|---|
| 1 | 2 |
<!-- /table:codecs -->

between

<!-- table:anchors -->
<!-- /table:anchors -->
tail
"""


def test_replace_block_changes_only_that_block() -> None:
    new = replace_block(README, "codecs", "| a |\n|---|\n| 9 |\n")
    assert "| old | table |" not in new and "| a |\n|---|\n| 9 |" in new
    before, after = README.split("<!-- table:codecs -->"), new.split("<!-- table:codecs -->")
    assert before[0] == after[0]
    assert (
        before[1].split("<!-- /table:codecs -->")[1] == after[1].split("<!-- /table:codecs -->")[1]
    )
    assert replace_block(new, "codecs", "| old | table |\n|---|---|\n| 1 | 2 |") == README


def test_replace_block_fills_an_empty_block_and_is_idempotent() -> None:
    once = replace_block(README, "anchors", "T")
    assert "<!-- table:anchors -->\nT\n<!-- /table:anchors -->\ntail" in once
    assert replace_block(once, "anchors", "T") == once


def test_replace_block_refuses_missing_duplicated_or_reversed_markers() -> None:
    with pytest.raises(KeyError):
        replace_block(README, "layers", "T")
    with pytest.raises(ValueError, match="duplicated"):
        replace_block(README + "<!-- table:codecs -->", "codecs", "T")
    with pytest.raises(ValueError, match="out of order"):
        replace_block("<!-- /table:x -->\n<!-- table:x -->", "x", "T")
    with pytest.raises(ValueError, match="invalid table name"):
        replace_block(README, "a b", "T")


def test_block_names() -> None:
    assert block_names(README) == ["codecs", "anchors"]
    assert block_names("<!-- table:open --> never closed") == []


def test_last_markdown_table_picks_the_last_real_table() -> None:
    out = "log\n| a | b |\n|---|---|\n| 1 | 2 |\n\nmore log\n|x|\n| h |\n|:--|\n| 3 |\ndone\n"
    assert last_markdown_table(out) == "| h |\n|:--|\n| 3 |"
    assert last_markdown_table("| not a table |\nno separator") is None
    bare = "rows so far\na | b\n--- | ---\n1 | 2\n"  # no outer pipes (bench_tbasis)
    assert last_markdown_table(bare) == "a | b\n--- | ---\n1 | 2"


def test_md_table_escapes_pipes() -> None:
    assert md_table(["a", "b"], [[1, "x|y"]]) == "| a | b |\n|---|---|\n| 1 | x\\|y |"


def test_codecs_markdown_from_bench_json() -> None:
    rows = [
        {
            "coder": "ans",
            "source": "s",
            "n": 10,
            "entropy_bits": 1.5,
            "coded_bits": 1.52,
            "side_bytes": 7,
            "encode_msym_s": 3.0,
            "decode_msym_s": 4.0,
            "exact": True,
        },
        {"coder": "tunstall", "source": "s", "n": 10, "entropy_bits": 1.5, "skipped": "no"},
    ]
    table = reproduce.codecs_markdown("note\n" + json.dumps(rows))
    assert table.splitlines()[2] == "| s | ans | 1.500 | 1.520 | 7 | 3.0 | 4.0 | yes |"
    assert len(table.splitlines()) == 3


def test_pick_within_tolerance() -> None:
    pts = [
        {"bytes": 100, "accuracy": 0.880},
        {"bytes": 200, "accuracy": 0.886},
        {"bytes": 300, "accuracy": 0.895},
    ]
    assert anchors_table.pick_within(pts, 0.889, 0.003)["bytes"] == 200
    assert anchors_table.pick_within(pts, 0.880, 0.003)["bytes"] == 100
    assert anchors_table.pick_within(pts, 0.95, 0.003) is None


def _fake_table(name: str, code: str) -> reproduce.Table:
    return reproduce.Table(name, (), ((reproduce.PY, "-c", code),), ((reproduce.PY, "-c", code),))


def test_main_rewrites_only_the_chosen_block(tmp_path, monkeypatch, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README)
    tables = (
        _fake_table("codecs", "print('log'); print('| n |'); print('|---|'); print('| 42 |')"),
        _fake_table("anchors", "raise SystemExit(3)"),
    )
    monkeypatch.setattr(reproduce, "TABLES", tables)
    rc = reproduce.main(["--readme", str(readme)])
    text = readme.read_text()
    assert rc == 1  # anchors failed and was skipped
    assert (
        "| n |\n|---|\n| 42 |\n\n<sub>Reproduce: `python tools/reproduce.py --only codecs`" in text
    )
    assert "<!-- table:anchors -->\n<!-- /table:anchors -->" in text  # untouched
    assert text.split("<!-- table:codecs -->")[0] == README.split("<!-- table:codecs -->")[0]
    assert "skipped" in capsys.readouterr().err


def test_dry_run_lists_every_table_and_runs_nothing(capsys) -> None:
    assert reproduce.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert {line.split(":")[0] for line in out.splitlines()} == set(reproduce.NAMES)
    assert "jointcomp run recipes/deep-compression-lenet5.yaml --force" in out
    assert reproduce.main(["--dry-run", "--quick", "--only", "anchors"]) == 0
    assert "train.max_batches=20" in capsys.readouterr().out


def _report(path: Path, size: int, acc: float) -> None:
    path.mkdir(parents=True)
    rep = {
        "baseline": {"dense_bytes": 1_000_000, "accuracy": 0.9},
        "final": {"bytes": size, "accuracy": acc},
    }
    (path / "report.json").write_text(json.dumps(rep))


def test_anchor_tables_pick_nncodec_per_jointcomp_row_and_judge_targets(tmp_path) -> None:
    _report(tmp_path / "lenet300-fashion-joint", 15_000, 0.890)
    _report(tmp_path / "deep-compression-lenet300", 30_000, 0.888)
    (tmp_path / "nncodec-lenet300").mkdir()
    points = [
        {"qp": -20, "bytes": 60_000, "accuracy": 0.891},
        {"qp": -16, "bytes": 40_000, "accuracy": 0.888},
        {"qp": -14, "bytes": 30_000, "accuracy": 0.850},
    ]
    results = {"nncodec_version": "9.9", "points": points, "coders": []}
    (tmp_path / "nncodec-lenet300" / "results.json").write_text(json.dumps(results))
    main, pairs = anchors_table.build_tables(tmp_path).split("\n\n")
    lines = main.splitlines()
    assert len(lines) == 2 + 3  # header, separator, jointcomp, Deep Compression, NNCodec qp -16
    assert "| NNCodec 9.9 (qp -16) | 40,000 | 25.0× | 88.80% |" in lines[4]
    assert "`jointcomp run recipes/lenet300-fashion-joint.yaml --force`" in lines[2]
    dc, nnc = pairs.splitlines()[2:]
    assert "| +0.20 | 0.50× | ≤ 0.67× | yes |" in dc
    assert "| +0.20 | 0.38× | ≤ 0.33× | no |" in nnc


def test_zero_context_entropy_sees_runs_that_h0_misses() -> None:
    runs = np.repeat(np.array([0, 3] * 500), 8)  # long runs: knowing the last symbol helps
    switch = 1 / 8  # a run of 8 ends after each symbol with probability 1/8
    h_switch = -(switch * np.log2(switch) + (1 - switch) * np.log2(1 - switch))
    assert entropy_bits(runs) == 1.0
    assert zero_context_bytes(runs) == pytest.approx(h_switch * runs.size / 8, rel=0.01)
    iid = np.random.default_rng(0).integers(0, 2, 20_000)  # nothing to gain from context
    assert zero_context_bytes(iid) == pytest.approx(entropy_bits(iid) * iid.size / 8, rel=0.01)


def test_recipes_table_reads_reports_and_never_guesses_a_missing_run(tmp_path: Path) -> None:
    import recipes_table

    report = {
        "seconds": 41.6,
        "stages": [{"name": "prune", "seconds": 40.1}, {"name": "encode", "seconds": 1.5}],
        "baseline": {"params": 1000, "accuracy": 0.9, "latency_ms": 2.0},
        "final": {
            "nonzero_params": 250,
            "accuracy": 0.8912,
            "bytes": 400,
            "compression_ratio": 10.0,
            "latency_ms": 1.25,
        },
    }
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "report.json").write_text(json.dumps(report))
    lines = recipes_table.recipes_table(tmp_path, ("done", "missing")).splitlines()
    assert lines[2] == (
        "| `done` | prune → encode | 90.00% | 89.12% | 250 (25.0%) | 400 | 10.0× | 42 |"
    )
    assert lines[3].startswith("| `missing` | not run | – |")


def test_bench_tbasis_quantized_row_runs_the_recipe_with_the_asked_overrides() -> None:
    """The quantized row is the recipe's own quantize stage with only the flags changed, so
    a row named ``-rate2-mse`` measured rate 2 with least-MSE scales and nothing else."""
    import bench_tbasis

    from jointcomp.recipe import load_recipe_data

    recipe_stages = load_recipe_data(bench_tbasis.RECIPE)["stages"]
    recipe_quantize = recipe_stages[1]["quantize"]
    plain = bench_tbasis.quant_stages(bench_tbasis.parse_args([]), 16, 16)[1]["quantize"]
    assert "scaling" not in plain and "rate" not in plain
    assert plain["finetune"]["epochs"] == 18 and plain["bits"]["factors"] == 4
    assert plain["fold_bn"] == recipe_quantize["fold_bn"]
    args = bench_tbasis.parse_args(["--scaling", "mse", "--rate", "2", "--bits", "3"])
    asked = bench_tbasis.quant_stages(args, 16, 16)
    q = asked[1]["quantize"]
    assert (q["scaling"], q["rate"], q["bits"]["factors"]) == ("mse", 2.0, 3)
    assert asked[0]["share"]["basis"] == 16 and asked[2] == recipe_stages[2]
    assert q["finetune"] == plain["finetune"]
    args = bench_tbasis.parse_args(
        [
            "--qat-lr",
            "0.00025",
            "--qat-alpha",
            "0.9",
            "--fold-epochs",
            "1",
            "--fold-lr",
            "5e-05",
            "--calibration",
            "absmax",
        ]
    )
    tuned_stage = bench_tbasis.quant_stages(args, 16, 16)[1]["quantize"]
    assert tuned_stage["calibration"] == "absmax" and "calibration" not in plain
    assert (
        tuned_stage["fold_epochs"] == 1 and plain["fold_epochs"] == recipe_quantize["fold_epochs"]
    )
    assert tuned_stage["fold_lr"] == 5e-05 and "fold_lr" not in plain
    tuned = tuned_stage["finetune"]
    assert tuned["lr"] == 0.00025 and tuned["distill"] == {"alpha": 0.9, "temperature": 4.0}
    assert "distill" not in plain["finetune"]  # unset: the recipe's train.distill applies
    assert (
        bench_tbasis.quant_run_name(args, 16, 16)
        == "tbasis-b16-r16-q4-lr0.00025-kd0.9-fold1-foldlr5e-05-absmax"
    )
    rounded = bench_tbasis.parse_args(
        ["--fold-rounding", "qat", "--qat-epochs", "2", "--fold-bits", "8"]
    )
    folded = bench_tbasis.quant_stages(rounded, 16, 16)[1]["quantize"]
    assert folded["fold_rounding"] == "qat" and folded["bits"]["biases"] == 8
    assert folded["layers"]["*.out_scale"]["bits"] == 8
    assert plain["layers"]["*.out_scale"] == recipe_quantize["layers"]["*.out_scale"]
    assert plain["bits"]["biases"] == recipe_quantize["bits"]["biases"]
    assert bench_tbasis.quant_run_name(rounded, 16, 16) == "tbasis-b16-r16-q4-e2-fbits8-fround-qat"
    assert bench_tbasis.quant_run_name(bench_tbasis.parse_args([]), 16, 16) == "tbasis-b16-r16-q4"
    with pytest.raises(SystemExit):
        bench_tbasis.parse_args(["--scaling", "minmax"])
    # --method kmeans: codebooks instead of QAT's grids, in the stage and in the run's name
    codebooks = bench_tbasis.parse_args(["--method", "kmeans"])
    assert bench_tbasis.quant_stages(codebooks, 16, 16)[1]["quantize"]["method"] == "kmeans"
    assert plain["method"] == recipe_quantize["method"] == "qat"
    assert bench_tbasis.quant_run_name(codebooks, 16, 16) == "tbasis-b16-r16-q4-kmeans"
    # --codebooks / --coef-bits: per-table overrides inside QAT, named in the run
    tables = bench_tbasis.parse_args(["--codebooks", "coef,rank_scale", "--coef-bits", "5"])
    layers = bench_tbasis.quant_stages(tables, 16, 16)[1]["quantize"]["layers"]
    assert layers["*.coef"] == {"bits": 5, "method": "kmeans"}
    assert layers["*.rank_scale"] == {"method": "kmeans"}
    assert (
        bench_tbasis.quant_run_name(tables, 16, 16) == "tbasis-b16-r16-q4-cbits5-km-coef-rankscale"
    )
    with pytest.raises(SystemExit):
        bench_tbasis.quant_stages(bench_tbasis.parse_args(["--codebooks", "basis"]), 16, 16)
    # --row-scales: a scale per row of a T-Basis table (granularity channel), named in the run
    rows = bench_tbasis.parse_args(["--row-scales", "coef", "--coef-bits", "5"])
    row_layers = bench_tbasis.quant_stages(rows, 16, 16)[1]["quantize"]["layers"]
    assert row_layers["*.coef"] == {"bits": 5, "granularity": "channel"}
    assert "*.rank_scale" not in row_layers
    assert bench_tbasis.quant_run_name(rows, 16, 16) == "tbasis-b16-r16-q4-cbits5-rows-coef"
    with pytest.raises(SystemExit):
        bench_tbasis.quant_stages(bench_tbasis.parse_args(["--row-scales", "basis"]), 16, 16)
    # --bias-correction: the recipe's bias_correction, named in the run; off by default
    corrected = bench_tbasis.parse_args(["--bias-correction", "--fold-bits", "5"])
    assert bench_tbasis.quant_stages(corrected, 16, 16)[1]["quantize"]["bias_correction"] is True
    assert bench_tbasis.quant_run_name(corrected, 16, 16) == "tbasis-b16-r16-q4-fbits5-bcorr"
    assert (
        "bias_correction"
        not in bench_tbasis.quant_stages(bench_tbasis.parse_args([]), 16, 16)[1]["quantize"]
    )
    # --fold-offset: the folded output scales' grid spans their own range, named in the run
    offset = bench_tbasis.parse_args(["--fold-offset", "--fold-bits", "5"])
    scale_override = bench_tbasis.quant_stages(offset, 16, 16)[1]["quantize"]["layers"]
    assert scale_override["*.out_scale"] == {
        "bits": 5,
        "granularity": "tensor",
        "symmetric": False,
        "include_zero": False,
    }
    assert bench_tbasis.quant_run_name(offset, 16, 16) == "tbasis-b16-r16-q4-fbits5-foffset"
    # --bias-bits: the biases' bits alone, after --fold-bits
    split = bench_tbasis.parse_args(["--fold-bits", "4", "--bias-bits", "6"])
    split_q = bench_tbasis.quant_stages(split, 16, 16)[1]["quantize"]
    assert split_q["bits"]["biases"] == 6 and split_q["layers"]["*.out_scale"]["bits"] == 4
    assert bench_tbasis.quant_run_name(split, 16, 16) == "tbasis-b16-r16-q4-fbits4-bbits6"
    # --qat-teacher input: QAT distils from the float network it quantizes, alpha kept
    taught = bench_tbasis.parse_args(["--qat-teacher", "input", "--qat-alpha", "0.9"])
    taught_distill = bench_tbasis.quant_stages(taught, 16, 16)[1]["quantize"]["finetune"]["distill"]
    assert taught_distill == {"alpha": 0.9, "temperature": 4.0, "teacher": "input"}
    assert bench_tbasis.quant_run_name(taught, 16, 16) == "tbasis-b16-r16-q4-kd0.9-kd-input"
    as_recipe = bench_tbasis.parse_args(["--qat-teacher", "baseline"])
    assert bench_tbasis.quant_stages(as_recipe, 16, 16) == bench_tbasis.quant_stages(
        bench_tbasis.parse_args([]), 16, 16
    )
    # --device is the recipe's device; rows train on the CPU unless asked
    assert bench_tbasis.base_recipe(bench_tbasis.parse_args([]))["device"] == "cpu"
    on_gpu = bench_tbasis.parse_args(["--device", "cuda:1"])
    assert bench_tbasis.base_recipe(on_gpu)["device"] == "cuda:1"
