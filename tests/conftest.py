"""Shared fixtures. Tests run with one torch thread: the CI machine has two cores and pytest-xdist
runs two workers, and oversubscribed OpenMP threads slow training by an order of magnitude."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION_ROOT / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Baselines cache into a per-session folder, never the user's ~/.cache."""
    monkeypatch.setenv("JOINTCOMP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


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
