"""scikit-learn's digits: 1,797 real 8×8 handwritten digits (0–16 grey levels), shipped with
scikit-learn, so the quickstart needs no files."""

from __future__ import annotations

import numpy as np

from .bundle import DataBundle, array_bundle

# Mean and std of all 1,797 images after x / 16: fixed constants, so that normalization does
# not depend on the split or the seed.
DIGITS_MEAN = (0.3053,)
DIGITS_STD = (0.3760,)


def load_digits_bundle(
    val_split: float, seed: int, limit: int | None, test_split: float | None = None
) -> DataBundle:
    """Digits as ``(1, 8, 8)`` images, 10 classes. The set has no official test split:
    ``test_split`` holds out a fraction of it (None raises a DataError saying so)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images = x.reshape(-1, 1, 8, 8).astype(np.uint8)  # grey levels are integers 0..16
    return array_bundle(
        "digits",
        images,
        y,
        scale=16.0,
        mean=DIGITS_MEAN,
        std=DIGITS_STD,
        num_classes=10,
        val_split=val_split,
        seed=seed,
        limit=limit,
        load_test=None,
        test_split=test_split,
    )
