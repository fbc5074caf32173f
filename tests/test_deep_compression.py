"""The Deep Compression recipes: they share their baselines with the joint recipes (identical
model/data/train, so one cached baseline serves both) and their stage chain — unstructured
pruning → k-means codebooks → Huffman-only sparse coding — writes a file that decodes exactly."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from jointcomp.codec import SparseCoder, decode
from jointcomp.codec.bitio import Reader
from jointcomp.codec.registry import INNER_IDS
from jointcomp.container.artifact import read_header
from jointcomp.pipeline import run
from jointcomp.recipe import load_recipe, validate_recipe

from .conftest import assert_file_holds, assert_learned, tiny_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
PAIRS = [
    ("deep-compression-lenet5", "lenet5-fashion-joint"),
    ("deep-compression-lenet300", "lenet300-fashion-joint"),
]


@pytest.mark.parametrize(("dc", "joint"), PAIRS)
def test_same_baseline_as_the_joint_recipe(dc: str, joint: str) -> None:
    a, b = load_recipe(RECIPES / f"{dc}.yaml"), load_recipe(RECIPES / f"{joint}.yaml")
    for section in ("model", "data", "train", "seed"):
        assert getattr(a, section) == getattr(b, section), section
    assert [s.stage for s in a.stages] == ["prune", "quantize", "encode"]
    assert a.stages[0].structured is False and a.stages[1].method == "kmeans"


def _inner_codec(r: Reader) -> int:
    cid = r.u8("codec id")
    r.take(r.uvarint("length"), "payload")
    return cid


def test_deep_compression_chain_writes_huffman_coded_indices(tmp_path: Path, encoded) -> None:
    stages = yaml.safe_load((RECIPES / "deep-compression-lenet300.yaml").read_text())["stages"]
    stages[0]["prune"].update(overrides={}, ratio=0.9, iterative_steps=2, finetune={"epochs": 1})
    stages[1]["quantize"]["kmeans"].update(finetune={"epochs": 1}, iters=20)
    raw = tiny_recipe(tmp_path, stages, model={"builder": "zoo:lenet300", "weights": "train"})
    result = run(validate_recipe(raw), show_progress=False)

    frame, _, entries, _ = read_header(result.model_path.read_bytes())
    offsets = dict(
        zip([e["n"] for e in entries], itertools.accumulate([0] + [e["b"] for e in entries]))
    )
    indices = [e for e in entries if e["n"].endswith(".indices")]
    assert len(indices) == 3 and all(e["c"] == "sparse" for e in indices)
    for e in indices:  # positions (zero runs) and values (codebook indices): Huffman, nothing else
        start = offsets[e["n"]]
        r = Reader(bytes(frame.payload[start : start + e["b"]]), "sparse")
        n, nnz, method = r.uvarint("n"), r.uvarint("nnz"), r.u8("method")
        assert 0 < nnz < n and method == 0
        assert _inner_codec(r) == INNER_IDS["huffman"] == _inner_codec(r)
    (before,) = encoded
    assert_file_holds(before, torch.randn(4, 1, 8, 8), result.model_path)
    assert result.report["final"]["nonzero_params"] < 0.2 * result.report["baseline"]["params"]
    # lenet300 after 2 epochs on digits: ~95% test top-1; 90% pruned, 6-bit codebooks: ~82%
    assert_learned(result.report, baseline_floor=0.85, final_floor=0.7, max_drop=0.2)


def test_sparse_coder_without_bitmask_always_codes_gaps() -> None:
    rng = np.random.default_rng(0)
    x = np.where(rng.random(5000) < 0.3, rng.integers(1, 8, 5000), 0).astype(np.uint8)
    free, gaps_only = SparseCoder().encode(x), SparseCoder(bitmask=False).encode(x)
    assert free.stats["positions_method"] == "bitmask"  # dense enough for the mask to win
    assert gaps_only.stats["positions_method"] == "gaps"
    assert np.array_equal(decode("sparse", gaps_only.data, gaps_only.params, x.size, x.dtype), x)
