"""Unlabeled text: one example per line, tokenized with the tokenizer of a local model folder.

``root`` is a text file (one example per non-empty line) or a folder of ``.txt`` files (every
file below it, in sorted path order, one example per non-empty line). Each example is tokenized
by the model folder's own tokenizer (transformers' ``AutoTokenizer``, offline: never a hub
download, never remote code), padded and truncated to ``max_length``, so that a sample is a dict
of int64 tensors of shape ``[max_length]`` — ``input_ids``, ``attention_mask`` and
``token_type_ids`` where the tokenizer gives them — and torch's default collate stacks them into
the dict batch a transformer takes as keyword arguments. There are no labels.

Text has no official test split: ``test_split`` of the examples is held out (seeded with
``TEST_SEED``: the same examples whatever ``seed``), ``val_split`` of the rest is carved for
validation, and ``limit`` keeps the first N training examples. Only the examples a split keeps
are tokenized.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .bundle import TEST_SEED, DataBundle, carve, check_split_args

DEFAULT_MAX_LENGTH = 128
HF_EXTRA = "pip install 'jointcomp[hf]'"
# files of which a folder holds at least one when it has a tokenizer (transformers' names)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
_CHUNK = 4096  # examples tokenized at a time: bounds the int64 tensors held at once


class TokenizedText(Dataset):
    """Tokenized examples: ``self[i]`` is a dict of int64 tensors ``[max_length]``. The tensors
    are held as int32 (half the memory; token ids fit) and widened per sample; ``texts`` are
    the examples, in the same order."""

    def __init__(self, texts: list[str], encoded: dict[str, torch.Tensor]) -> None:
        if any(len(t) != len(texts) for t in encoded.values()):
            raise ValueError("every encoded tensor needs one row per text")
        self.texts = texts
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index].long() for k, v in self.encoded.items()}


def read_text_lines(root: str | Path) -> list[str]:
    """The non-empty lines (stripped) of a text file, or of every ``.txt`` file below a folder
    in sorted path order."""
    path = Path(root).expanduser()
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(path)
        )
        if not files:
            raise DataError(f"text: no .txt files in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(
            f"text: {path} does not exist; data.root is a text file (one example per line) or "
            "a folder of .txt files"
        )
    lines: list[str] = []
    for f in files:
        try:
            content = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"text: {f} is not UTF-8 text ({e.reason} at byte {e.start})") from e
        except OSError as e:
            raise DataError(f"text: cannot read {f}: {e.strerror or e}") from e
        lines.extend(s for s in (line.strip() for line in content.splitlines()) if s)
    if not lines:
        raise DataError(f"text: {path} holds no non-empty lines")
    return lines


def _tokenizer_folder(folder: Path) -> Path:
    """``folder``, or the Transformer module's folder of a sentence-transformers layout that
    keeps its tokenizer there (``modules.json`` naming e.g. ``0_Transformer``)."""
    if any((folder / f).is_file() for f in TOKENIZER_FILES):
        return folder
    modules = folder / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"tokenizer: cannot read {modules}: {e}") from e
        for entry in entries if isinstance(entries, list) else []:
            sub = entry.get("path") if isinstance(entry, dict) else None
            if (
                isinstance(sub, str)
                and str(entry.get("type", "")).endswith("Transformer")
                and any((folder / sub / f).is_file() for f in TOKENIZER_FILES)
            ):
                return folder / sub
    raise DataError(
        f"tokenizer: {folder} holds no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); "
        "data.tokenizer is the folder of the model whose tokenizer the text needs"
    )


def load_tokenizer(folder: str | Path) -> Any:
    """The tokenizer of a local model folder: ``AutoTokenizer.from_pretrained(folder,
    local_files_only=True)``, without remote code. A tokenizer without a padding token pads
    with its end-of-sequence token (masked out by ``attention_mask``)."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DataError(
            f"tokenizer: {path} is not a folder; data.tokenizer is the local folder of a model "
            "(its tokenizer files), never a hub name: nothing is downloaded"
        )
    path = _tokenizer_folder(path)
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise DataError(
            f"tokenizing text needs transformers, which is not installed: {HF_EXTRA}"
        ) from e
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
    except Exception as e:  # transformers raises OSError, ValueError, KeyError, ...
        raise DataError(f"tokenizer: cannot load the tokenizer of {path}: {e}") from e
    if getattr(tokenizer, "pad_token", None) is None:
        if getattr(tokenizer, "eos_token", None) is None:
            raise DataError(
                f"tokenizer of {path} has neither a padding nor an end-of-sequence token: "
                "samples cannot be padded to max_length"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_max_length(max_length: object) -> int:
    if max_length is None:
        return DEFAULT_MAX_LENGTH
    if isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral):
        raise DataError(f"max_length must be a positive int, got {max_length!r}")
    if max_length < 2:
        raise DataError(
            f"max_length must be at least 2 (room for special tokens), got {max_length}"
        )
    return int(max_length)


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """``texts`` padded/truncated to ``max_length``: int32 tensors ``[len(texts), max_length]``
    per key the tokenizer returns."""
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(texts), _CHUNK):
        enc = tokenizer(
            list(texts[start : start + _CHUNK]),
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="np",  # faster than "pt" here
        )
        for key, value in enc.items():
            value = np.asarray(value)
            if value.ndim != 2 or value.shape[1] != max_length:
                raise DataError(
                    f"tokenizer gave {key!r} of shape {value.shape}, not [N, {max_length}]: "
                    "it does not pad to max_length"
                )
            parts.setdefault(key, []).append(torch.from_numpy(value.astype(np.int32)))
    if "input_ids" not in parts:
        raise DataError(f"tokenizer gave no input_ids (keys: {sorted(parts)})")
    return {k: torch.cat(v) for k, v in parts.items()}


def text_bundle(
    name: str,
    read: Callable[[], list[str]],
    tokenizer: str | Path | None,
    max_length: int | None,
    val_split: float,
    seed: int,
    limit: int | None,
    test_split: float | None,
) -> DataBundle:
    """A bundle of ``read()``'s examples: ``test_split`` held out, ``val_split`` of the rest
    carved, ``limit`` on train; each split tokenized with the folder ``tokenizer``'s tokenizer."""
    val_split = check_split_args(val_split, limit, test_split)
    length = check_max_length(max_length)
    if tokenizer is None:
        raise DataError(
            f"{name} needs data.tokenizer: the local folder of the model whose tokenizer the "
            "text is tokenized with"
        )
    if test_split is None:
        raise DataError(
            f"{name} has no official test split: set data.test_split (e.g. 0.1) to hold out a "
            "fraction of its examples for the reported figures"
        )
    texts = read()
    tok = load_tokenizer(tokenizer)
    limit_model = getattr(tok, "model_max_length", None)
    if isinstance(limit_model, int) and length > limit_model:
        raise DataError(
            f"max_length {length} exceeds the tokenizer's model_max_length {limit_model} "
            f"({tokenizer}): the model has no positions beyond it"
        )
    rest, test_idx = carve(len(texts), test_split, TEST_SEED)
    train_pos, val_pos = carve(len(rest), val_split, seed)
    train_idx, val_idx = rest[train_pos], rest[val_pos]
    if limit is not None:
        train_idx = train_idx[:limit]

    def split(indices: Any) -> TokenizedText:
        chosen = [texts[int(i)] for i in indices]
        return TokenizedText(chosen, tokenize(tok, chosen, length))

    train, val, test = split(train_idx), split(val_idx), split(test_idx)
    info = {
        "examples": len(texts),
        "tokenizer": str(Path(tokenizer).expanduser()),
        "max_length": length,
        "keys": sorted(train.encoded),
    }
    return DataBundle(name, train, val, test, (length,), None, info)


def load_text_bundle(
    root: str | Path | None,
    tokenizer: str | Path | None,
    max_length: int | None,
    val_split: float,
    seed: int,
    limit: int | None,
    test_split: float | None,
) -> DataBundle:
    """A text file or folder of ``.txt`` files, one example per line, tokenized, unlabeled."""
    if root is None:
        raise DataError(
            "text needs data.root: a text file (one example per line) or a folder of .txt files"
        )
    return text_bundle(
        "text", lambda: read_text_lines(root), tokenizer, max_length, val_split, seed, limit,
        test_split,
    )  # fmt: skip
