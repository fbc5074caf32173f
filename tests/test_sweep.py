"""``jointcomp sweep``: a grid of runs, resumable, collected into one table with a Pareto front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from jointcomp.audit.plots import pareto_front
from jointcomp.errors import RecipeError
from jointcomp.sweep import grid, parse_axis, run_sweep

from .conftest import tiny_recipe


def test_parse_axis_and_grid() -> None:
    a = parse_axis("stages.0.prune.ratio=0.2,0.5")
    b = parse_axis("stages.1.encode.codec=ans,huffman")
    c = parse_axis("audit.batch_sizes=[1,2],[4]")
    assert a.values == (0.2, 0.5) and c.values == ([1, 2], [4])
    assert grid([a, b]) == [
        {"stages.0.prune.ratio": 0.2, "stages.1.encode.codec": "ans"},
        {"stages.0.prune.ratio": 0.2, "stages.1.encode.codec": "huffman"},
        {"stages.0.prune.ratio": 0.5, "stages.1.encode.codec": "ans"},
        {"stages.0.prune.ratio": 0.5, "stages.1.encode.codec": "huffman"},
    ]
    with pytest.raises(RecipeError, match="expected KEY.PATH=v1,v2"):
        parse_axis("stages.0.prune.ratio")


def test_pareto_front() -> None:
    pts = [(100, 0.9), (50, 0.8), (60, 0.7), (200, 0.95), (50, 0.85)]
    assert sorted(pareto_front(pts)) == [0, 3, 4]


def test_sweep_runs_grid_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            tiny_recipe(
                tmp_path,
                stages=[{"prune": {"ratio": 0.2, "finetune": {"epochs": 0}}}, {"encode": {}}],
            )
        )
    )
    axis = parse_axis("stages.0.prune.ratio=0.2,0.6")
    out = tmp_path / "sweep"
    summary = run_sweep(str(path), [axis], output=str(out), show_progress=False)
    rows = summary["points"]
    assert [r["overrides"]["stages.0.prune.ratio"] for r in rows] == [0.2, 0.6]
    assert rows[1]["bytes"] < rows[0]["bytes"]
    assert all(Path(r["run"], "model.jcz").is_file() for r in rows)
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["points"] == json.loads(json.dumps(rows, default=str))
    assert (out / "sweep.html").read_text().count("data:image/png;base64,") == 1
    # a second run refuses to clobber; --resume reuses finished points without retraining
    with pytest.raises(RecipeError, match="already exists"):
        run_sweep(str(path), [axis], output=str(out), show_progress=False)
    stamp = Path(rows[0]["run"], "model.jcz").stat().st_mtime_ns
    again = run_sweep(str(path), [axis], output=str(out), resume=True, show_progress=False)
    assert Path(rows[0]["run"], "model.jcz").stat().st_mtime_ns == stamp
    assert [r["bytes"] for r in again["points"]] == [r["bytes"] for r in rows]


def test_sweep_validates_every_point_first(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tmp_path)))
    with pytest.raises(RecipeError, match="stages.0.prune.ratio"):
        run_sweep(
            str(path),
            [parse_axis("stages.0.prune.ratio=0.3,1.7")],
            output=str(tmp_path / "s"),
            show_progress=False,
        )
    assert not (tmp_path / "s").exists()
