"""tools/reproduce.py and its helpers: the table blocks of docs/RESULTS.md are replaced exactly,
nothing else moves; tables come out of tools' output; the anchor pick honours the accuracy
tolerance."""

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

RESULTS = """# x

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
    new = replace_block(RESULTS, "codecs", "| a |\n|---|\n| 9 |\n")
    assert "| old | table |" not in new and "| a |\n|---|\n| 9 |" in new
    before, after = RESULTS.split("<!-- table:codecs -->"), new.split("<!-- table:codecs -->")
    assert before[0] == after[0]
    assert (
        before[1].split("<!-- /table:codecs -->")[1] == after[1].split("<!-- /table:codecs -->")[1]
    )
    assert replace_block(new, "codecs", "| old | table |\n|---|---|\n| 1 | 2 |") == RESULTS


def test_replace_block_fills_an_empty_block_and_is_idempotent() -> None:
    once = replace_block(RESULTS, "anchors", "T")
    assert "<!-- table:anchors -->\nT\n<!-- /table:anchors -->\ntail" in once
    assert replace_block(once, "anchors", "T") == once


def test_replace_block_refuses_missing_duplicated_or_reversed_markers() -> None:
    with pytest.raises(KeyError):
        replace_block(RESULTS, "layers", "T")
    with pytest.raises(ValueError, match="duplicated"):
        replace_block(RESULTS + "<!-- table:codecs -->", "codecs", "T")
    with pytest.raises(ValueError, match="out of order"):
        replace_block("<!-- /table:x -->\n<!-- table:x -->", "x", "T")
    with pytest.raises(ValueError, match="invalid table name"):
        replace_block(RESULTS, "a b", "T")


def test_block_names() -> None:
    assert block_names(RESULTS) == ["codecs", "anchors"]
    assert block_names("<!-- table:open --> never closed") == []


def test_last_markdown_table_picks_the_last_real_table() -> None:
    out = "log\n| a | b |\n|---|---|\n| 1 | 2 |\n\nmore log\n|x|\n| h |\n|:--|\n| 3 |\ndone\n"
    assert last_markdown_table(out) == "| h |\n|:--|\n| 3 |"
    assert last_markdown_table("| not a table |\nno separator") is None
    bare = "rows so far\na | b\n--- | ---\n1 | 2\n"  # no outer pipes
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


def test_results_file_holds_every_table_and_only_those() -> None:
    """docs/RESULTS.md, reproduce.py's default target, has one block per table it knows."""
    assert TOOLS.parent / "docs" / "RESULTS.md" == reproduce.RESULTS
    text = reproduce.RESULTS.read_text(encoding="utf-8")
    assert sorted(block_names(text)) == sorted(reproduce.NAMES)
    for name in reproduce.NAMES:
        assert text.count(f"<!-- table:{name} -->") == 1
        assert text.count(f"<!-- /table:{name} -->") == 1


def test_main_rewrites_only_the_chosen_block(tmp_path, monkeypatch, capsys) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS)
    tables = (
        _fake_table("codecs", "print('log'); print('| n |'); print('|---|'); print('| 42 |')"),
        _fake_table("anchors", "raise SystemExit(3)"),
    )
    monkeypatch.setattr(reproduce, "TABLES", tables)
    rc = reproduce.main(["--results", str(results)])
    text = results.read_text()
    assert rc == 1  # anchors failed and was skipped
    assert (
        "| n |\n|---|\n| 42 |\n\n<sub>Reproduce: `python tools/reproduce.py --only codecs`" in text
    )
    assert "<!-- table:anchors -->\n<!-- /table:anchors -->" in text  # untouched
    assert text.split("<!-- table:codecs -->")[0] == RESULTS.split("<!-- table:codecs -->")[0]
    assert "skipped" in capsys.readouterr().err


def test_main_skips_a_table_whose_markers_the_file_lacks(tmp_path, monkeypatch, capsys) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS)
    tables = (_fake_table("layers", "print('| n |'); print('|---|'); print('| 7 |')"),)
    monkeypatch.setattr(reproduce, "TABLES", tables)
    assert reproduce.main(["--results", str(results)]) == 1
    assert results.read_text() == RESULTS
    captured = capsys.readouterr()
    assert "| 7 |" in captured.out and "no <!-- table:layers --> block" in captured.err


def test_quick_prints_and_leaves_the_default_file_alone(monkeypatch, capsys) -> None:
    before = reproduce.RESULTS.read_text(encoding="utf-8")
    tables = (_fake_table("codecs", "print('| q |'); print('|---|'); print('| 1 |')"),)
    monkeypatch.setattr(reproduce, "TABLES", tables)
    assert reproduce.main(["--quick"]) == 0
    assert "| q |\n|---|\n| 1 |" in capsys.readouterr().out
    assert reproduce.RESULTS.read_text(encoding="utf-8") == before


def test_dry_run_lists_every_table_and_runs_nothing(capsys) -> None:
    assert reproduce.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert {line.split(":")[0] for line in out.splitlines()} == set(reproduce.NAMES)
    assert "jointcomp run recipes/deep-compression-lenet5.yaml --force" in out
    assert f"jointcomp sweep {reproduce.TBASIS_FLOAT} --zip --vary" in out
    assert "python tools/tbasis_table.py runs/tbasis-study/tbasis" in out
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


STUDIES = TOOLS.parent / "recipes" / "studies"


def test_study_recipes_validate_and_say_what_they_are() -> None:
    from jointcomp.recipe import load_recipe

    paths = sorted(STUDIES.glob("*.yaml"))
    assert {p.name for p in paths} >= {
        "resnet32-fashion-tbasis-float.yaml",
        "resnet32-fashion-tt.yaml",
    }
    for path in paths:
        assert path.read_text(encoding="utf-8").startswith("# Study: "), path.name
        load_recipe(path)


def test_tbasis_study_rows_share_the_quantized_rows_baseline_and_share_stage() -> None:
    """The float B16 R16 point and the quantized row (the bundled recipe at the study's
    protocol) train the same baseline and run the same share stage, so the table compares the
    quantized file with the very network it quantized; the TT rows use the same baseline."""
    from jointcomp.baseline import baseline_key
    from jointcomp.recipe import load_recipe

    quantized = load_recipe(TOOLS.parent / reproduce.TBASIS_RECIPE, reproduce.TBASIS_PROTOCOL)
    point = load_recipe(
        TOOLS.parent / reproduce.TBASIS_FLOAT,
        ["stages.0.share.basis=16", "stages.0.share.rank=16"],
    )
    tt = load_recipe(TOOLS.parent / reproduce.TBASIS_TT)
    kwargs = {"in_channels": 1, "num_classes": 10}
    assert baseline_key(point, kwargs) == baseline_key(quantized, kwargs)
    assert baseline_key(tt, kwargs) == baseline_key(quantized, kwargs)
    assert point.stages[0].to_entry() == quantized.stages[0].to_entry()
    assert [c.stage for c in quantized.stages] == ["share", "quantize", "fold", "encode"]
    assert quantized.stages[1].qat.finetune.epochs == 18
    assert point.stages[-1].float_storage == tt.stages[-1].float_storage == "f32"


def _run(folder: Path, stages: list[dict], report_stages: list[dict], final: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "recipe.json").write_text(json.dumps({"stages": stages}))
    report = {
        "baseline": {"params": 1000, "accuracy": 0.9},
        "stages": report_stages,
        "final": {"header_bytes": 50, **final},
        "layers": [
            {"type": "TBasis", "bytes": 300},
            {"type": "TBasisCoefficients", "bytes": 40},
            {"type": "Conv2d", "bytes": 10},
        ],
    }
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def _share(params: int, basis: int, fit: float) -> dict:
    summary = {"basis_params": basis}
    return {"name": "share", "params": params, "record": {"metric_fit": fit, "summary": summary}}


def test_tbasis_table_from_sweeps_and_runs(tmp_path: Path, capsys) -> None:
    """Rows come from each run's recipe.json and report.json; a TT row follows the T-Basis
    row nearest in parameters, quantized rows come last, the paper's figure beside its B/R."""
    import tbasis_table

    final = {"accuracy": 0.8, "bytes": 500, "compression_ratio": 8.0}
    sweep = tmp_path / "tbasis"
    points = []
    for b, params in ((16, 500), (8, 100)):
        run = sweep / "points" / f"b{b}"
        stages = [{"share": {"basis": b, "rank": b}}, {"encode": {}}]
        _run(run, stages, [_share(params, params // 5, 0.5)], final)
        points.append({"run": str(tmp_path / "gone" / run.name)})  # moved: found under points/
    (sweep / "sweep.json").write_text(json.dumps({"points": points}))
    _run(
        tmp_path / "tt",
        [{"decompose": {"format": "tt", "rank": 5}}],
        [{"name": "decompose", "params": 520, "record": {}}],
        {**final, "accuracy": 0.7},
    )
    q = [_share(500, 100, 0.5), {"name": "quantize", "params": 500, "record": {}}]
    _run(tmp_path / "q", [{"share": {"basis": 16, "rank": 16}}], q, {**final, "bytes": 400})
    args = [str(sweep / "sweep.json"), str(tmp_path / "q"), str(tmp_path / "tt" / "report.json")]
    assert tbasis_table.main(args) == 0
    out = capsys.readouterr().out
    assert "tbasis+q 16/16: 400 B = basis 300 + coefficient tables 40 + header 50 + rest 10" in out
    table = last_markdown_table(out)
    assert table is not None
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert [r[0] for r in rows] == ["tbasis", "tt", "tbasis", "tbasis+q"]
    assert rows[0][1:] == [
        "16/16", "500", "50.00", "40.00", "50.00", "80.00", "500", "8.0", "90.24% at 9.5%"
    ]  # fmt: skip
    assert rows[1][1:] == ["r5", "520", "52.00", "", "", "70.00", "500", "8.0", ""]
    assert rows[2][1] == "8/8" and rows[2][-1] == "81.35% at 2.1%"
    assert rows[3][1] == "16/16" and rows[3][-1] == ""  # the paper's figures are float rows'


def test_a_command_two_tables_share_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recipe both the recipes and the anchors tables run is run once per invocation."""
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(reproduce, "run_command", lambda cmd: calls.append(cmd) or "| a |\n|---|")
    shared = ("jointcomp", "run", "recipes/x.yaml", "--force")
    first = reproduce.Table("one", (), (shared, ("t1",)), ())
    second = reproduce.Table("two", (), (shared, ("t2",)), ())
    ran: set = set()
    reproduce.measure(first, False, ran=ran)
    reproduce.measure(second, False, ran=ran)
    assert calls == [shared, ("t1",), ("t2",)]
