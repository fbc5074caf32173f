"""Dataset loaders: digits, MNIST / Fashion-MNIST (IDX), CIFAR-10 (binary), unlabeled text
(a file or folder, tokenized with a local model folder's tokenizer), WordNet's glosses (English
text offline), an image folder (labeled or not), or a user's own ``package.module:callable``.
Every loader returns a :class:`DataBundle`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from .bundle import DataBundle, check_split_args
from .cifar10 import CIFAR10_MEAN, CIFAR10_STD, load_cifar10_bundle
from .custom import load_custom_bundle
from .digits import DIGITS_MEAN, DIGITS_STD, load_digits_bundle
from .idx import FASHION_MNIST_MEAN, FASHION_MNIST_STD, MNIST_MEAN, MNIST_STD, load_idx_bundle
from .image_folder import load_image_folder_bundle
from .text import load_text_bundle
from .wordnet import load_wordnet_bundle

# Accepted spellings of the built-in names.
_ALIASES = {
    "digits": "digits",
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
    "text": "text",
    "wordnet": "wordnet",
    "image-folder": "image-folder",
    "imagefolder": "image-folder",
}

# The keyword arguments only some datasets read (a user's loader gets those its signature names).
_TEXT_KEYS = ("tokenizer", "max_length")
_IMAGE_KEYS = ("image_size", "mean", "std")
_USES = {"text": _TEXT_KEYS, "wordnet": _TEXT_KEYS, "image-folder": _IMAGE_KEYS}

# (scale, mean, std) per built-in image dataset of fixed statistics: a sample is
# (raw / scale - mean) / std per channel. Inference on new inputs must apply the same (an image
# folder's, given or computed, are in its bundle's ``info``).
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
    *,
    tokenizer: str | Path | None = None,
    max_length: int | None = None,
    image_size: int | Sequence[int] | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> DataBundle:
    """Load ``dataset`` into a :class:`DataBundle` in three roles: train, val and test.

    The test split is the dataset's official one, or, with ``test_split``, a seeded fraction
    held out of its data (digits, text, wordnet and image folders have none: they need
    ``test_split``); ``val_split`` is the fraction of the remaining training data carved for
    validation with a permutation seeded by ``seed``; ``limit`` keeps the first N training
    samples after the carves. ``root`` is the folder of the files (Fashion-MNIST and wordnet
    default to Debian's package folders; MNIST, CIFAR-10 and image folders need it; text: a file
    or a folder of ``.txt`` files; digits ignores it). Errors are :class:`DataError` with the
    paths tried.

    Images are normalized float32 tensors with integer labels. ``text`` and ``wordnet`` are
    unlabeled (``num_classes`` None): each sample a dict of int64 tensors of ``max_length``
    (default 128) tokens — ``input_ids``, ``attention_mask``, ``token_type_ids`` where the
    tokenizer gives them — tokenized with the tokenizer of the local model folder
    ``tokenizer`` (needs ``pip install 'jointcomp[hf]'``). ``image-folder`` is labeled in
    ``ImageFolder`` layout (a sub-folder per class) and unlabeled when flat; images are fitted
    to ``image_size`` (an int or ``[height, width]``) and normalized with ``mean``/``std``
    (per channel, of ``x / 255``), computed from the non-test images when not given.
    """
    if not isinstance(dataset, str) or not dataset.strip():
        raise DataError(f"dataset must be a name or 'package.module:callable', got {dataset!r}")
    check_split_args(val_split, limit, test_split)  # fail before any file is read
    extras = {
        "tokenizer": tokenizer,
        "max_length": max_length,
        "image_size": image_size,
        "mean": mean,
        "std": std,
    }
    given = {k: v for k, v in extras.items() if v is not None}
    if ":" in dataset:
        return load_custom_bundle(
            dataset.strip(),
            None if root is None else str(root),
            val_split,
            seed,
            limit,
            trust,
            test_split,
            extras=given,
        )
    name = _ALIASES.get(dataset.strip().lower().replace("_", "-"))
    if name is None:
        raise DataError(
            f"unknown dataset {dataset!r}; built-in: {', '.join(list_datasets())}, or "
            "'package.module:callable' for your own (needs trust)"
        )
    unused = [k for k in given if k not in _USES.get(name, ())]
    if unused:
        raise DataError(
            f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to dataset "
            f"{name!r} (tokenizer, max_length: text and wordnet; image_size, mean, std: "
            "image-folder)"
        )
    if name == "digits":
        return load_digits_bundle(val_split, seed, limit, test_split)
    if name in ("mnist", "fashion-mnist"):
        return load_idx_bundle(name, root, val_split, seed, limit, test_split)
    if name == "cifar10":
        return load_cifar10_bundle(root, val_split, seed, limit, test_split)
    if name == "text":
        return load_text_bundle(root, tokenizer, max_length, val_split, seed, limit, test_split)
    if name == "wordnet":
        return load_wordnet_bundle(root, tokenizer, max_length, val_split, seed, limit, test_split)
    return load_image_folder_bundle(root, image_size, mean, std, val_split, seed, limit, test_split)


__all__ = ["NORMALIZATION", "DataBundle", "list_datasets", "load_data"]
