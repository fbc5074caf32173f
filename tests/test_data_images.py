"""Image folders from tiny PNGs written here: ImageFolder layout (labeled) or flat (unlabeled),
fitted to one size, normalized with given or computed mean/std, in three disjoint roles."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from jointcomp.batches import as_batches
from jointcomp.data import load_data
from jointcomp.data.image_folder import ImageTensors, _fit, channel_stats
from jointcomp.errors import DataError

RNG_SEED = 0


def write_png(path: Path, rng: np.random.Generator, size=(6, 5), mode="RGB") -> np.ndarray:
    """A random ``mode`` image of ``size`` (width, height) at ``path``; its pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(path)
    return pixels


def labeled_folder(root: Path, per_class=(6, 5, 4)) -> Path:
    rng = np.random.default_rng(RNG_SEED)
    for c, n in zip(("cat", "dog", "emu"), per_class):
        for i in range(n):
            write_png(root / c / f"{i}.png", rng)
    return root


def flat_folder(root: Path, n=10, mode="RGB") -> Path:
    rng = np.random.default_rng(RNG_SEED)
    for i in range(n):
        write_png(root / f"img{i:02d}.png", rng, mode=mode)
    return root


def pixels_of(ds: ImageTensors) -> Counter:
    return Counter(
        (ds.images[i].numpy().tobytes(), None if ds.labels is None else int(ds.labels[i]))
        for i in range(len(ds))
    )


def test_labeled_folder_three_disjoint_splits_with_labels_from_folders(tmp_path):
    root = labeled_folder(tmp_path / "imgs")
    (root / "README.txt").write_text("not an image")
    (root / "cat" / ".hidden.png").write_bytes(b"not read")
    b = load_data("image-folder", root=root, test_split=0.2, val_split=0.25)
    assert (b.name, b.num_classes, b.input_shape, b.labeled) == ("image-folder", 3, (3, 5, 6), True)
    assert b.info["classes"] == ["cat", "dog", "emu"] and b.info["images"] == 15
    assert (len(b.train), len(b.val), len(b.test)) == (9, 3, 3)
    parts = [pixels_of(d) for d in (b.train, b.val, b.test)]
    assert not (set(parts[0]) & set(parts[1]) or set(parts[0]) & set(parts[2]))
    assert not set(parts[1]) & set(parts[2])
    # every image once, with its folder's label
    expected: Counter = Counter()
    for label, c in enumerate(("cat", "dog", "emu")):
        for p in sorted((root / c).glob("[0-9].png")):
            arr = np.asarray(Image.open(p)).transpose(2, 0, 1)
            expected[(arr.tobytes(), label)] += 1
    assert parts[0] + parts[1] + parts[2] == expected

    x, y = b.train[0]
    assert x.dtype == torch.float32 and x.shape == (3, 5, 6) and y.dtype == torch.int64
    xb, yb = next(iter(DataLoader(b.train, batch_size=4)))
    assert xb.shape == (4, 3, 5, 6) and yb.shape == (4,)
    calib = as_batches(b.train, batch_size=4).calibration(1)[0]
    assert calib[0].shape == (4, 3, 5, 6)

    again = load_data("image-folder", root=root, test_split=0.2, val_split=0.25)
    assert pixels_of(again.val) == parts[1] and torch.equal(again.train[0][0], x)
    other = load_data("image-folder", root=root, test_split=0.2, val_split=0.25, seed=5)
    assert pixels_of(other.test) == parts[2]  # the held-out images never move
    assert other.info["mean"] == b.info["mean"]  # stats of every non-test image: seed-free
    short = load_data("image-folder", root=root, test_split=0.2, val_split=0.25, limit=4)
    assert len(short.train) == 4 and torch.equal(short.train.images, b.train.images[:4])


def test_computed_and_given_normalization(tmp_path):
    root = labeled_folder(tmp_path / "imgs")
    b = load_data("image-folder", root=root, test_split=0.2)
    seen = torch.cat([b.train.images, b.val.images]).double() / 255
    mean, std = seen.mean(dim=(0, 2, 3)), seen.std(dim=(0, 2, 3), unbiased=False)
    assert np.allclose(b.info["mean"], mean.numpy(), atol=1e-6)
    assert np.allclose(b.info["std"], std.numpy(), atol=1e-6)
    assert b.info["normalization"] == "computed"
    train = torch.stack([b.train[i][0] for i in range(len(b.train))]).double()
    every = torch.cat([train, torch.stack([b.val[i][0] for i in range(len(b.val))]).double()])
    assert torch.allclose(every.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-4)

    g = load_data("image-folder", root=root, test_split=0.2, mean=0.5, std=[0.5, 0.25, 0.5])
    assert g.info["mean"] == [0.5] * 3 and g.info["normalization"] == "given"
    raw = g.train.images[0].double() / 255
    want = (raw - 0.5) / torch.tensor([0.5, 0.25, 0.5], dtype=torch.float64).reshape(3, 1, 1)
    assert torch.allclose(g.train[0][0].double(), want, atol=1e-6)


def test_flat_folder_is_unlabeled(tmp_path):
    root = flat_folder(tmp_path / "flat")
    b = load_data("image-folder", root=root, test_split=0.2)
    assert (b.num_classes, b.labeled, b.input_shape) == (None, False, (3, 5, 6))
    assert "classes" not in b.info
    x = b.train[0]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 5, 6)
    batch = next(iter(DataLoader(b.train, batch_size=3)))
    assert isinstance(batch, torch.Tensor) and batch.shape == (3, 3, 5, 6)
    assert as_batches(b.val).example().shape == (1, 3, 5, 6)
    assert sum((pixels_of(d) for d in (b.train, b.val, b.test)), Counter()).total() == 10


def test_grey_images_stay_one_channel_and_mixed_modes_become_rgb(tmp_path):
    grey = flat_folder(tmp_path / "grey", n=6, mode="L")
    b = load_data("image-folder", root=grey, test_split=0.2)
    assert b.input_shape == (1, 5, 6) and len(b.info["mean"]) == 1
    rng = np.random.default_rng(1)
    write_png(grey / "zz_rgba.png", rng, mode="RGBA")
    mixed = load_data("image-folder", root=grey, test_split=0.2)
    assert mixed.input_shape == (3, 5, 6)


def test_image_size_fits_every_image_aspect_kept_center_cropped(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "sizes"
    write_png(root / "a" / "wide.png", rng, size=(40, 20))
    write_png(root / "a" / "tall.png", rng, size=(9, 30))
    write_png(root / "b" / "small.png", rng, size=(4, 4))
    write_png(root / "b" / "other.png", rng, size=(16, 16))
    with pytest.raises(DataError, match=r"4 sizes.*set data.image_size"):
        load_data("image-folder", root=root, test_split=0.25)
    b = load_data("image-folder", root=root, test_split=0.25, image_size=8)
    assert b.input_shape == (3, 8, 8)
    r = load_data("image-folder", root=root, test_split=0.25, image_size=[6, 10])
    assert r.input_shape == (3, 6, 10)

    # a 40x20 image: black quarters left and right, white middle: fitted to 20x20 it is the
    # white middle (scaled by 1, cropped), not a squeezed copy of the whole
    stripes = np.zeros((20, 40), dtype=np.uint8)
    stripes[:, 10:30] = 255
    out = np.asarray(_fit(Image.fromarray(stripes), (20, 20)))
    assert out.shape == (20, 20) and (out == 255).all()
    assert np.asarray(_fit(Image.fromarray(stripes), (10, 10))).shape == (10, 10)


def test_channel_stats_of_a_constant_channel():
    images = np.full((2, 1, 3, 3), 51, dtype=np.uint8)
    assert channel_stats(images) == ((0.2,), (1.0,))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({}, r"no official test split: set data.test_split"),
        ({"test_split": 0.2, "image_size": 0}, r"image_size must be a positive int"),
        ({"test_split": 0.2, "image_size": [4, 4, 4]}, r"image_size must be"),
        ({"test_split": 0.2, "mean": 0.5}, r"give both mean and std"),
        ({"test_split": 0.2, "mean": [0.5, 0.5], "std": 0.5}, r"mean has 2 values.*3 channel"),
        ({"test_split": 0.2, "mean": 0.5, "std": 0}, r"std must be positive"),
        ({"test_split": 0.2, "tokenizer": "x"}, r"tokenizer does not apply to dataset"),
    ],
)
def test_argument_errors(tmp_path, kwargs, pattern):
    root = labeled_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match=pattern):
        load_data("image-folder", root=root, **kwargs)


def test_folder_errors(tmp_path):
    def load(root):
        return load_data("imagefolder", root=root, test_split=0.2)

    with pytest.raises(DataError, match=r"image-folder needs data.root"):
        load(None)
    with pytest.raises(DataError, match=r"is not a folder"):
        load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no images in"):
        load(tmp_path / "empty")

    rng = np.random.default_rng(3)
    mixed = labeled_folder(tmp_path / "mixed")
    write_png(mixed / "loose.png", rng)
    with pytest.raises(DataError, match=r"both at its top.*and in sub-folders"):
        load(mixed)

    hollow = labeled_folder(tmp_path / "hollow")
    (hollow / "zebra").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) zebra .*hold no images"):
        load(hollow)

    one = tmp_path / "one"
    for i in range(4):
        write_png(one / "only" / f"{i}.png", rng)
    with pytest.raises(DataError, match=r"one class folder \(only/\)"):
        load(one)

    broken = labeled_folder(tmp_path / "broken")
    (broken / "cat" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot read image .*bad.png"):
        load(broken)
