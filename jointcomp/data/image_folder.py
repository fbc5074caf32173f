"""A folder of images: labeled in ``ImageFolder`` layout, or unlabeled when flat.

``root/<class>/**/<image>``: one sub-folder per class (classes in sorted name order, class *i*
the *i*-th), samples ``(image, label)``. ``root/<image>``: a flat folder, samples the images
alone (no labels). Images are read with PIL (``.png``, ``.jpg``/``.jpeg``, ``.bmp``, ``.gif``,
``.ppm``/``.pgm``, ``.tif``/``.tiff``, ``.webp``); hidden files and folders are skipped.

Every image is resized so that it covers ``image_size`` (its shorter side scaled to fit, aspect
kept, bilinear), then center-cropped to it; without ``image_size`` all images must have one size.
Images are grey (1 channel) when every one of them is, else RGB (3; alpha dropped). A sample is
``(x / 255 - mean) / std`` per channel, float32 ``[C, H, W]``: with the ``mean``/``std`` given, or
those of every image outside the test split (seed-independent, so every run of a recipe feeds its
model the same inputs); ``bundle.info`` records them. Images are held in memory as uint8 and
normalized as they are read.

There is no official test split: ``test_split`` of the images is held out (the same ones whatever
``seed``), then ``val_split`` of the rest carved, and ``limit`` keeps the first N training images.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .bundle import TEST_SEED, DataBundle, carve, check_split_args

IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".ppm",
    ".pgm",
    ".pbm",
    ".tif",
    ".tiff",
    ".webp",
)
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class ImageTensors(Dataset):
    """uint8 images ``[N, C, H, W]`` (and int64 labels, or None: unlabeled) normalized as they
    are read: ``self[i]`` is ``(x, label)`` or ``x``, float32."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be uint8 [N, C, H, W]")
        if labels is not None and len(labels) != len(images):
            raise ValueError("one label per image")
        self.images = images
        self.labels = labels
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Any:
        x = (self.images[index].float() / 255.0 - self.mean) / self.std
        return x if self.labels is None else (x, self.labels[index])


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()


def _images_below(folder: Path) -> list[Path]:
    """Images anywhere below ``folder`` (hidden files and folders skipped), in sorted order."""
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if _is_image(p):
            found.append(p)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def scan_image_folder(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """The images of ``root``, their labels and the class names (both None when flat)."""
    if not root.is_dir():
        raise DataError(
            f"image-folder: data.root {root} is not a folder (one sub-folder of images per "
            "class, or a flat folder of images)"
        )
    top = sorted((p for p in root.iterdir() if _is_image(p)), key=lambda p: p.name)
    subdirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    per_class = [(d.name, _images_below(d)) for d in subdirs]
    with_images = [(name, imgs) for name, imgs in per_class if imgs]
    if top and with_images:
        raise DataError(
            f"image-folder: {root} holds images both at its top ({top[0].name}, ...) and in "
            f"sub-folders ({with_images[0][0]}/, ...): use one sub-folder per class (labeled) "
            "or a flat folder (unlabeled)"
        )
    if top:
        return top, None, None
    if not with_images:
        raise DataError(
            f"image-folder: no images in {root} (extensions: {', '.join(IMAGE_EXTENSIONS)})"
        )
    empty = [name for name, imgs in per_class if not imgs]
    if empty:
        raise DataError(
            f"image-folder: class folder(s) {', '.join(empty)} of {root} hold no images; "
            "remove them or add images (class numbers follow the sorted folder names)"
        )
    if len(per_class) < 2:
        raise DataError(
            f"image-folder: {root} has one class folder ({per_class[0][0]}/): a labeled folder "
            "needs two classes or more; for unlabeled images put them in one flat folder"
        )
    paths, labels = [], []
    for label, (_, imgs) in enumerate(per_class):
        paths.extend(imgs)
        labels.extend([label] * len(imgs))
    return paths, labels, [name for name, _ in per_class]


def _check_size(image_size: object) -> tuple[int, int] | None:
    if image_size is None:
        return None
    values = list(image_size) if isinstance(image_size, (list, tuple)) else [image_size] * 2
    if len(values) != 2 or any(
        isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in values
    ):
        raise DataError(f"image_size must be a positive int or [height, width], got {image_size!r}")
    return int(values[0]), int(values[1])


def _check_stats(name: str, value: object, channels: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values or any(
        isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) for v in values
    ):
        raise DataError(f"{name} must be a number or one per channel, got {value!r}")
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise DataError(
            f"{name} has {len(values)} values but the images have {channels} channel(s)"
        )
    if name == "std" and any(v <= 0 for v in values):
        raise DataError(f"std must be positive, got {value!r}")
    return tuple(float(v) for v in values)


def _open(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"image-folder: cannot read image {path}: {e}") from e


def _to_mode(img: Any, mode: str) -> Any:
    from PIL import Image

    if mode == "L" and img.mode.startswith("I;16"):  # 16-bit grey: keep the high byte
        return Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8))
    if img.mode == "LA" and mode == "L":
        return img.getchannel("L")
    return img.convert(mode)


def _fit(img: Any, size: tuple[int, int]) -> Any:
    """``img`` scaled (aspect kept) to cover ``size`` (height, width), center-cropped to it."""
    from PIL import Image

    h, w = size
    if img.size == (w, h):
        return img
    scale = max(h / img.height, w / img.width)
    rw, rh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
    img = img.resize((rw, rh), Image.Resampling.BILINEAR)
    left, top = (rw - w) // 2, (rh - h) // 2
    return img.crop((left, top, left + w, top + h))


def read_images(paths: list[Path], image_size: tuple[int, int] | None) -> np.ndarray:
    """The images as uint8 ``[N, C, H, W]``: grey when all are, else RGB; fitted to
    ``image_size`` or, without it, all of one size."""
    modes, sizes = [], []
    for p in paths:  # headers only: the mode and size of each
        with _open(p) as img:
            modes.append(img.mode)
            sizes.append(img.size)
    mode = "L" if all(m in _GREY_MODES for m in modes) else "RGB"
    if image_size is None:
        distinct = sorted(set(sizes))
        if len(distinct) > 1:
            raise DataError(
                f"image-folder: the images have {len(distinct)} sizes (e.g. "
                f"{distinct[0][0]}x{distinct[0][1]} and {distinct[-1][0]}x{distinct[-1][1]}, "
                "width x height): set data.image_size to resize them"
            )
        image_size = (sizes[0][1], sizes[0][0])
    channels = 1 if mode == "L" else 3
    out = np.empty((len(paths), channels, *image_size), dtype=np.uint8)
    for i, p in enumerate(paths):
        with _open(p) as img:
            try:
                img.load()
            except OSError as e:  # truncated or corrupt pixel data
                raise DataError(f"image-folder: cannot decode image {p}: {e}") from e
            arr = np.asarray(_fit(_to_mode(img, mode), image_size), dtype=np.uint8)
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return out


def channel_stats(
    images: np.ndarray, indices: np.ndarray | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``images[indices] / 255`` (uint8 ``[N, C, H, W]``), summed a
    chunk at a time in float64; a constant channel's std is 1."""
    idx = np.arange(len(images)) if indices is None else np.sort(indices)
    total = np.zeros(images.shape[1])
    squares = np.zeros(images.shape[1])
    for start in range(0, len(idx), 256):
        x = images[idx[start : start + 256]].astype(np.float64) / 255.0
        total += x.sum(axis=(0, 2, 3))
        squares += (x * x).sum(axis=(0, 2, 3))
    count = len(idx) * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    std = np.where(std > 1e-6, std, 1.0)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def load_image_folder_bundle(
    root: str | Path | None,
    image_size: int | Sequence[int] | None,
    mean: float | Sequence[float] | None,
    std: float | Sequence[float] | None,
    val_split: float,
    seed: int,
    limit: int | None,
    test_split: float | None,
) -> DataBundle:
    """An image folder as normalized ``[C, H, W]`` images, labeled or not (see module doc)."""
    val_split = check_split_args(val_split, limit, test_split)
    size = _check_size(image_size)
    if (mean is None) != (std is None):
        raise DataError("give both mean and std, or neither (then they are computed)")
    if root is None:
        raise DataError(
            "image-folder needs data.root: a folder with one sub-folder of images per class, "
            "or a flat folder of images"
        )
    if test_split is None:
        raise DataError(
            "image-folder has no official test split: set data.test_split (e.g. 0.2) to hold "
            "out a fraction of its images for the reported figures"
        )
    folder = Path(root).expanduser()
    paths, labels, classes = scan_image_folder(folder)
    images = read_images(paths, size)
    channels = images.shape[1]
    given_mean, given_std = _check_stats("mean", mean, channels), _check_stats("std", std, channels)
    y = None if labels is None else torch.tensor(labels, dtype=torch.int64)
    rest, test_idx = carve(len(images), test_split, TEST_SEED)
    if given_mean is None or given_std is None:
        m, s = channel_stats(images, rest)
    else:
        m, s = given_mean, given_std
    train_pos, val_pos = carve(len(rest), val_split, seed)
    train_idx, val_idx = rest[train_pos], rest[val_pos]
    if limit is not None:
        train_idx = train_idx[:limit]
    pixels = torch.from_numpy(images)

    def split(idx: np.ndarray) -> ImageTensors:
        index = torch.from_numpy(idx.astype(np.int64))
        return ImageTensors(pixels[index], None if y is None else y[index], m, s)

    info: dict[str, Any] = {
        "images": len(images),
        "mean": list(m),
        "std": list(s),
        "normalization": "given" if mean is not None else "computed",
    }
    if classes is not None:
        info["classes"] = classes
    return DataBundle(
        "image-folder",
        split(train_idx),
        split(val_idx),
        split(test_idx),
        tuple(int(v) for v in images.shape[1:]),
        None if classes is None else len(classes),
        info,
    )
