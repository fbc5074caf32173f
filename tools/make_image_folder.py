"""Write Fashion-MNIST (Debian's dataset-fashion-mnist) as an image folder in ImageFolder layout
— ``DIR/<class>/<n>.png``, one sub-folder per class — so the image-folder path of jointcomp can be
tried on real images offline, as a user's own folder would be:

    apt-get install -y dataset-fashion-mnist
    python tools/make_image_folder.py data/fashion-folder --per-class 500
    jointcomp run recipes/lenet5-image-folder.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from jointcomp.data.idx import read_idx_split

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)  # fmt: skip


def write_folder(out: Path, per_class: int, root: Path = DEBIAN, seed: int = 0) -> int:
    """The first ``per_class`` training images of each class (a seeded shuffle of each class's
    images) as PNGs under ``out/<class>/``; returns how many were written. Refuses a folder
    that already holds files, so nothing of yours is overwritten."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; choose a new folder")
    images, labels = read_idx_split("fashion-mnist", root, "train")
    rng = np.random.default_rng(seed)
    written = 0
    for label, name in enumerate(CLASSES):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        chosen = rng.permutation(np.flatnonzero(labels == label))[:per_class]
        for i, index in enumerate(chosen):
            Image.fromarray(images[index, 0]).save(folder / f"{i:05d}.png")
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the folder to create")
    ap.add_argument("--per-class", type=int, default=500, help="images per class")
    ap.add_argument("--root", type=Path, default=DEBIAN, help="the Fashion-MNIST IDX files")
    args = ap.parse_args(argv)
    n = write_folder(args.out, args.per_class, args.root)
    print(f"wrote {n} images in {len(CLASSES)} class folders under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
