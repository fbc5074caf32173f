"""Shared fixtures. Tests run with one torch thread: the CI machine has two cores and pytest-xdist
runs two workers, and oversubscribed OpenMP threads slow training by an order of magnitude."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Baselines cache into a per-process folder, never the user's ~/.cache — set at import so that
# module- and session-scoped fixtures see it too.
_CACHE = tempfile.mkdtemp(prefix="jointcomp-test-cache-")
os.environ["JOINTCOMP_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)

import torch  # noqa: E402  (after OMP_NUM_THREADS is set)

torch.set_num_threads(1)

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION_ROOT / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)


def tiny_recipe(tmp_path: Path, stages: list | None = None, **overrides: object) -> dict:
    """A recipe that runs in seconds: small_cnn on digits, one training epoch."""
    recipe = {
        "name": "tiny",
        "seed": 0,
        "threads": 1,
        "model": {"builder": "zoo:small_cnn", "weights": "train"},
        "data": {"dataset": "digits", "val_split": 0.2, "batch_size": 64},
        "train": {"epochs": 2, "lr": 0.003, "distill": {"temperature": 4.0, "alpha": 0.5}},
        "stages": stages
        if stages is not None
        else [{"prune": {"ratio": 0.5, "finetune": {"epochs": 1}}}, {"encode": {"codec": "auto"}}],
        "output": str(tmp_path / "run"),
        "audit": {"batch_sizes": [1], "min_run_time": 0.02},
    }
    recipe.update(overrides)
    return recipe
