"""Sentence-transformers folders as one module: transformer, pooling and optional L2
normalization, mapping a tokenized batch to sentence embeddings.

``sentence-transformers:DIR`` reads the folder's ``modules.json`` (a Transformer, a Pooling and
optionally a Normalize module; anything else is refused), loads the transformer with
:func:`hf.load_folder` and the pooling settings from its ``config.json``. The portable form a
.jcz file names is ``sentence-embedder:ARCH`` with the transformer's config and the pooling
settings, which rebuilds the module without the folder. The pooling follows
sentence-transformers' own (``Pooling._forward_padded``) for the modes it implements here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import short
from ..errors import ModelError
from . import hf

# sentence-transformers' pooling modes, in the order it concatenates them
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_MODULE_TYPES = ("Transformer", "Pooling", "Normalize")
_ARGUMENTS = ("config", "pooling", "normalize", "max_seq_length")


def _check_pooling(pooling: Any, where: str) -> tuple[str, ...]:
    modes = (pooling,) if isinstance(pooling, str) else pooling
    if (
        not isinstance(modes, (list, tuple))
        or not modes
        or len(modes) > len(POOLING_MODES)
        or not all(isinstance(m, str) and m in POOLING_MODES for m in modes)
    ):
        raise ModelError(
            f"{where}: pooling {short(pooling)} must be one or more of {', '.join(POOLING_MODES)}"
        )
    return tuple(modes)


class SentenceEmbedder(nn.Module):
    """A transformer, pooled over tokens (``pooling`` modes, concatenated in order) and
    optionally L2-normalized: ``model(input_ids=..., attention_mask=..., token_type_ids=...)``
    or ``model(batch_dict)`` gives a ``[N, dim]`` tensor of sentence embeddings.
    ``max_seq_length`` is the folder's, for tokenizers (this module does not truncate)."""

    def __init__(
        self,
        transformer: nn.Module,
        pooling: str | Sequence[str] = "mean",
        normalize: bool = False,
        max_seq_length: int | None = None,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.pooling = _check_pooling(pooling, "SentenceEmbedder")
        self.normalize = bool(normalize)
        self.max_seq_length = max_seq_length

    def forward(
        self,
        input_ids: torch.Tensor | Mapping[str, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **extra: torch.Tensor,
    ) -> torch.Tensor:
        if isinstance(input_ids, Mapping):  # model(batch) as well as model(**batch)
            return self.forward(**input_ids)
        inputs = {"input_ids": input_ids, **extra}
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs["attention_mask"] = attention_mask
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        out = self.transformer(**inputs)
        tokens = out[0] if isinstance(out, (tuple, list)) else out.last_hidden_state
        vectors = pool(tokens, attention_mask, self.pooling)
        return F.normalize(vectors, p=2, dim=1) if self.normalize else vectors

    def extra_repr(self) -> str:
        return f"pooling={self.pooling}, normalize={self.normalize}"


def pool(tokens: torch.Tensor, attention_mask: torch.Tensor, modes: Sequence[str]) -> torch.Tensor:
    """Token embeddings ``[N, T, D]`` pooled over the tokens ``attention_mask`` keeps, one
    ``[N, D]`` block per mode, concatenated (sentence-transformers' ``Pooling``)."""
    mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
    out: list[torch.Tensor] = []
    for mode in modes:
        if mode == "cls":  # the first kept token (index 0 unless left-padded)
            first = attention_mask.to(torch.int).argmax(dim=1)
            index = first.view(-1, 1, 1).expand(-1, 1, tokens.shape[-1])
            out.append(torch.gather(tokens, 1, index).squeeze(1))
        elif mode == "max":
            out.append(tokens.masked_fill(mask == 0, float("-inf")).max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total = (tokens * mask).sum(dim=1)
            count = torch.clamp(mask.sum(dim=1), min=1e-9)
            out.append(total / (count if mode == "mean" else torch.sqrt(count)))
        elif mode == "weightedmean":
            weights = torch.arange(1, tokens.shape[1] + 1, dtype=tokens.dtype, device=tokens.device)
            pad = attention_mask.to(torch.int32).argmax(dim=1)
            weighted = mask * (weights.view(1, -1, 1) - pad.view(-1, 1, 1))
            total = (tokens * weighted).sum(dim=1)
            out.append(total / torch.clamp(weighted.sum(dim=1), min=1e-9))
        elif mode == "lasttoken":
            length = tokens.shape[1]
            values, indices = attention_mask.flip(1).max(1)
            indices = torch.where(values == 0, length - 1, indices)
            index = (length - indices - 1).view(-1, 1, 1).expand(-1, 1, tokens.shape[-1])
            out.append(torch.gather(tokens * mask, 1, index).squeeze(1))
        else:
            raise ModelError(f"unknown pooling mode {short(mode)}")
    return torch.cat(out, dim=-1)


def build_from_config(architecture: str, kwargs: dict[str, Any]) -> SentenceEmbedder:
    """``sentence-embedder:ARCH``: a :class:`SentenceEmbedder` around ``transformers:ARCH``
    built from ``kwargs['config']``, with ``pooling``, ``normalize`` and ``max_seq_length``."""
    label = f"sentence-embedder:{architecture}"
    unknown = sorted(set(kwargs) - set(_ARGUMENTS))
    if unknown:
        raise ModelError(
            f"{label} got unknown argument(s) {', '.join(unknown)}; it accepts: "
            f"{', '.join(_ARGUMENTS)}"
        )
    pooling = _check_pooling(kwargs.get("pooling", "mean"), label)
    normalize = kwargs.get("normalize", False)
    length = kwargs.get("max_seq_length")
    if not isinstance(normalize, bool) or not (
        length is None or (type(length) is int and 0 < length <= hf.MAX_CONFIG_INT)
    ):
        raise ModelError(f"{label}: normalize must be true/false and max_seq_length an integer")
    transformer = hf.build_from_config(architecture, {"config": kwargs.get("config")})
    return SentenceEmbedder(transformer, pooling, normalize, length)


def read_folder(folder: str | Path, label: str) -> tuple[Path, tuple[str, ...], bool, int | None]:
    """A sentence-transformers folder's transformer folder, pooling modes, whether it
    normalizes, and its ``max_seq_length``."""
    path = Path(folder).expanduser()
    if not (path / "modules.json").is_file():
        raise ModelError(
            f"{label}: {path} is not a sentence-transformers folder (no modules.json); "
            "for a plain transformers folder use hf:DIR"
        )
    modules = hf.read_json(path / "modules.json", "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelError(f"{label}: modules.json must be a list of modules")
    kinds = [str(m.get("type", "")).rpartition(".")[2] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        raise ModelError(
            f"{label}: modules.json holds {', '.join(kinds) or 'nothing'}; supported: "
            "Transformer, Pooling and optionally Normalize, in that order"
        )
    transformer = (path / str(modules[0].get("path") or "")).resolve()
    pooling_dir = path / str(modules[1].get("path") or "")
    settings = hf.read_json(pooling_dir / "config.json", "the pooling config")
    if not isinstance(settings, dict):
        raise ModelError(f"{label}: {pooling_dir / 'config.json'} must be an object")
    if "pooling_mode" in settings:
        modes = _check_pooling(settings["pooling_mode"], f"{label} pooling")
    else:
        modes = tuple(mode for key, mode in _LEGACY_KEYS.items() if settings.get(key))
        modes = modes or ("mean",)  # sentence-transformers' default
    length = None
    bert_config = transformer / "sentence_bert_config.json"
    if bert_config.is_file():
        value = hf.read_json(bert_config, "sentence_bert_config.json")
        length = value.get("max_seq_length") if isinstance(value, dict) else None
        length = length if type(length) is int and 0 < length <= hf.MAX_CONFIG_INT else None
    return transformer, modes, kinds[2:] == ["Normalize"], length


def load_folder(folder: str | Path, kwargs: dict[str, Any]) -> SentenceEmbedder:
    """``sentence-transformers:DIR``: the folder's model as one :class:`SentenceEmbedder`
    with the folder's weights (float32, eval mode)."""
    label = f"sentence-transformers:{folder}"
    if kwargs:
        raise ModelError(f"{label} takes no arguments (the folder fixes the model)")
    transformer_dir, modes, normalize, length = read_folder(folder, label)
    transformer = hf.load_folder(transformer_dir, {"architecture": "AutoModel"})
    return SentenceEmbedder(transformer, modes, normalize, length).eval()


def portable_builder(folder: str | Path, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The builder and keyword arguments a file stores for ``sentence-transformers:DIR``."""
    label = f"sentence-transformers:{folder}"
    if kwargs:
        raise ModelError(f"{label} takes no arguments (the folder fixes the model)")
    transformer_dir, modes, normalize, length = read_folder(folder, label)
    # sentence-transformers loads the transformer with AutoModel, whatever the config names
    builder, arguments = hf.portable_builder(transformer_dir, {"architecture": "AutoModel"})
    architecture = builder.partition(":")[2]
    arguments.update(pooling=list(modes), normalize=normalize, max_seq_length=length)
    return f"sentence-embedder:{architecture}", arguments
