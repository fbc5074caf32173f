"""Training under torchrun: two CPU processes (gloo), DistributedDataParallel, rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import tiny_recipe


def test_two_process_torchrun_finetune(tmp_path: Path) -> None:
    recipe = tiny_recipe(
        tmp_path,
        stages=[
            {"prune": {"ratio": 0.3, "finetune": {"epochs": 1}}},
            {"encode": {}},
        ],
    )
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JOINTCOMP_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "jointcomp",
            "run",
            str(path),
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["world_size"] == 2
    assert report["final"]["bytes"] == (out / "model.jcz").stat().st_size
    # only rank 0 writes: exactly one file set, no stray temporaries
    assert not list(out.glob(".*.tmp"))
    assert proc.stdout.count("reports ") == 1  # one summary: rank 1 printed nothing
