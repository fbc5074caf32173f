"""Training-image augmentation: what each transform does to a batch, seeded reproducibility, the
recipe keys, and that it enters the baseline cache key and the resume fingerprints."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from jointcomp.baseline import baseline_key
from jointcomp.errors import DataError, RecipeError
from jointcomp.pipeline import _run_fingerprint, _stage_fingerprint
from jointcomp.recipe import validate_recipe
from jointcomp.training import AugmentSpec, FinetuneSpec, TrainSpec, fit
from jointcomp.training.augment import Augmenter, flip_batch, shift_batch

from .conftest import tiny_recipe


def _shifted(x: torch.Tensor, dy: int, dx: int, s: int) -> torch.Tensor:
    padded = torch.nn.functional.pad(x[None], (s, s, s, s), mode="replicate")[0]
    h, w = x.shape[-2:]
    return padded[:, s + dy : s + dy + h, s + dx : s + dx + w]


def test_shift_moves_each_image_by_its_own_offset_with_replicated_edges() -> None:
    x = torch.randn(40, 2, 7, 9)
    out = shift_batch(x, 2, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    seen = set()
    for img, src in zip(out, x):
        offsets = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(img, _shifted(src, dy, dx, 2))
        ]
        assert offsets, "an output image is not a translate of its input within ±2 pixels"
        seen.add(offsets[0])
    assert len(seen) > 5  # offsets are drawn per sample, not once per batch


def test_flip_mirrors_about_half_the_images() -> None:
    x = torch.randn(200, 1, 5, 6)
    out = flip_batch(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, s.flip(-1)) for o, s in zip(out, x)]
    kept = [torch.equal(o, s) for o, s in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 60 < sum(flipped) < 140


def test_augmenter_is_reproducible_from_its_seed() -> None:
    spec = AugmentSpec(shift=3, flip=True)
    x = torch.randn(16, 1, 12, 12)
    a, b, c = Augmenter(spec, 5), Augmenter(spec, 5), Augmenter(spec, 6)
    assert torch.equal(a(x), b(x))
    assert not torch.equal(Augmenter(spec, 5)(x), c(x))


def _images(n: int = 96) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
    )


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))


def test_fit_with_augment_is_deterministic_and_trains_on_changed_images() -> None:
    spec = TrainSpec(epochs=2, lr=0.01, augment=AugmentSpec(shift=2, flip=True))
    runs = []
    for _ in range(2):
        model = _net()
        fit(model, _images(), spec, batch_size=32, seed=1)
        runs.append(model.state_dict())
    plain = _net()
    fit(plain, _images(), TrainSpec(epochs=2, lr=0.01), batch_size=32, seed=1)
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key])
    assert not torch.equal(runs[0]["3.weight"], plain.state_dict()["3.weight"])


def test_fit_refuses_augment_on_samples_that_are_not_images() -> None:
    data = TensorDataset(torch.randn(10, 6), torch.zeros(10, dtype=torch.long))
    spec = TrainSpec(epochs=1, augment=AugmentSpec(shift=1))
    with pytest.raises(DataError, match=r"images shaped \(C, H, W\).*\(6,\)"):
        fit(nn.Linear(6, 2), data, spec, batch_size=5, seed=0)


def test_finetune_augment_false_turns_off_the_train_setting() -> None:
    base = TrainSpec(augment=AugmentSpec(shift=2))
    assert FinetuneSpec(augment=False).merged(base).augment is None
    assert FinetuneSpec().merged(base).augment == AugmentSpec(shift=2)
    on = FinetuneSpec(augment={"flip": True}).merged(TrainSpec())
    assert on.augment == AugmentSpec(flip=True)


def test_recipe_rejects_a_bad_augment_key(tmp_path) -> None:
    raw = tiny_recipe(tmp_path)
    raw["train"]["augment"] = {"rotate": 10}
    with pytest.raises(RecipeError, match="rotate"):
        validate_recipe(raw)


def test_augment_changes_the_cache_key_and_fingerprints(tmp_path) -> None:
    stages = [{"prune": {"ratio": 0.5, "finetune": {"epochs": 1}}}]
    plain = validate_recipe(tiny_recipe(tmp_path, stages=stages))
    again = validate_recipe(tiny_recipe(tmp_path, stages=stages))
    assert baseline_key(plain, {}) == baseline_key(again, {})
    assert _run_fingerprint(plain) == _run_fingerprint(again)
    assert _stage_fingerprint(plain.stages[0]) == _stage_fingerprint(again.stages[0])

    augmented_raw = tiny_recipe(tmp_path, stages=stages)
    augmented_raw["train"]["augment"] = {"shift": 2}
    augmented = validate_recipe(augmented_raw)
    assert baseline_key(plain, {}) != baseline_key(augmented, {})
    assert _run_fingerprint(plain) != _run_fingerprint(augmented)

    tuned_raw = tiny_recipe(
        tmp_path,
        stages=[{"prune": {"ratio": 0.5, "finetune": {"epochs": 1, "augment": {"flip": True}}}}],
    )
    tuned = validate_recipe(tuned_raw)
    assert _stage_fingerprint(plain.stages[0]) != _stage_fingerprint(tuned.stages[0])
