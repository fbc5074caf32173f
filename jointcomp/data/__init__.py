"""Dataset loaders: digits, MNIST / Fashion-MNIST (IDX), CIFAR-10 (binary), or a user's own
``package.module:callable``. Every loader returns a :class:`DataBundle`."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .bundle import DataBundle, check_split_args
from .cifar10 import CIFAR10_MEAN, CIFAR10_STD, load_cifar10_bundle
from .custom import load_custom_bundle
from .digits import DIGITS_MEAN, DIGITS_STD, load_digits_bundle
from .idx import FASHION_MNIST_MEAN, FASHION_MNIST_STD, MNIST_MEAN, MNIST_STD, load_idx_bundle

# Accepted spellings of the built-in names.
_ALIASES = {
    "digits": "digits",
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
}

# (scale, mean, std) per built-in dataset: a sample is (raw / scale - mean) / std per channel.
# Inference on new inputs must apply the same.
NORMALIZATION: dict[str, tuple[float, tuple[float, ...], tuple[float, ...]]] = {
    "digits": (16.0, DIGITS_MEAN, DIGITS_STD),
    "mnist": (255.0, MNIST_MEAN, MNIST_STD),
    "fashion-mnist": (255.0, FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    "cifar10": (255.0, CIFAR10_MEAN, CIFAR10_STD),
}


def list_datasets() -> list[str]:
    """The built-in dataset names (a ``package.module:callable`` is also accepted, with trust)."""
    return sorted(set(_ALIASES.values()))


def load_data(
    dataset: str,
    root: str | Path | None = None,
    val_split: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    trust: bool = True,
    test_split: float | None = None,
) -> DataBundle:
    """Load ``dataset`` into a :class:`DataBundle` of normalized float32 tensors in three
    roles: train, val and test.

    The test split is the dataset's official one, or, with ``test_split``, a seeded fraction
    held out of its data (digits has none: it needs ``test_split``); ``val_split`` is the
    fraction of the remaining training data carved for validation with a permutation seeded by
    ``seed``; ``limit`` keeps the first N training samples after the carves. ``root`` is the
    folder of the files (Fashion-MNIST defaults to Debian's package folder; MNIST and CIFAR-10
    need it; digits ignores it). Errors are :class:`DataError` with the paths tried.
    """
    if not isinstance(dataset, str) or not dataset.strip():
        raise DataError(f"dataset must be a name or 'package.module:callable', got {dataset!r}")
    check_split_args(val_split, limit, test_split)  # fail before any file is read
    if ":" in dataset:
        return load_custom_bundle(
            dataset.strip(),
            None if root is None else str(root),
            val_split,
            seed,
            limit,
            trust,
            test_split,
        )
    name = _ALIASES.get(dataset.strip().lower().replace("_", "-"))
    if name == "digits":
        return load_digits_bundle(val_split, seed, limit, test_split)
    if name in ("mnist", "fashion-mnist"):
        return load_idx_bundle(name, root, val_split, seed, limit, test_split)
    if name == "cifar10":
        return load_cifar10_bundle(root, val_split, seed, limit, test_split)
    raise DataError(
        f"unknown dataset {dataset!r}; built-in: {', '.join(list_datasets())}, or "
        "'package.module:callable' for your own (needs trust)"
    )


__all__ = ["NORMALIZATION", "DataBundle", "list_datasets", "load_data"]
