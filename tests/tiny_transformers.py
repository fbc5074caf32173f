"""Tiny Hugging Face model folders for tests, built from configs (nothing is downloaded).

``write_tiny_bert(dir)`` writes a transformers folder (config.json, model.safetensors, a
WordPiece tokenizer.json made with the ``tokenizers`` library); ``write_tiny_sentence_transformer
(dir)`` writes a sentence-transformers folder around one (modules.json, 1_Pooling/config.json,
optional Normalize); ``tiny_batch(folder, texts)`` tokenizes text with the folder's tokenizer into
the dict batch a model takes. Weights are seeded, so two calls write the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_PROSE = (
    "the a an of to in is was and or not it this that with for on at by from as be are were "
    "model models small large data text word words sentence sentences vector vectors cat cats "
    "dog dogs sat mat ran fast slow red blue green tree trees house river water fire light "
    "dark day night sun moon star stars read write compress compressed file files bit bits "
    "byte bytes zero one two three four five good bad new old first last same other"
)
WORDS = _PROSE.split()
TEXTS = [
    "the cat sat on the mat",
    "a dog ran fast in the dark night",
    "compressed models write small files",
    "the sun and the moon are light",
    "two red trees by the river",
    "one sentence is not the same as a vector",
    "bits and bytes of the first file",
    "the blue house was old",
]


def tiny_vocab() -> list[str]:
    """Special tokens, the test words, and every letter alone and as a ``##`` continuation, so
    any lower-case ASCII text tokenizes without [UNK]."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = [*SPECIAL, *WORDS, *letters, *(f"##{c}" for c in letters)]
    return list(dict.fromkeys(vocab))


def write_tokenizer(folder: Path) -> Path:
    """A BERT-style WordPiece ``tokenizer.json`` (lower-casing, [CLS] … [SEP]) in ``folder``."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab = {token: i for i, token in enumerate(tiny_vocab())}
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece()
    path = folder / "tokenizer.json"
    tokenizer.save(str(path))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": True,
                "model_max_length": 64,
                "pad_token": "[PAD]",
                "unk_token": "[UNK]",
                "cls_token": "[CLS]",
                "sep_token": "[SEP]",
                "mask_token": "[MASK]",
            }
        )
    )
    return path


def tiny_bert_config(**overrides: Any) -> dict[str, Any]:
    """A 2-layer BERT config of hidden size 32 over :func:`tiny_vocab` (about 24 k parameters)."""
    config = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": len(tiny_vocab()),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
        "pad_token_id": 0,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    config.update(overrides)
    return config


def write_tiny_bert(
    folder: str | Path, architecture: str = "BertModel", seed: int = 0, **config: Any
) -> Path:
    """Write a tiny transformers folder of ``architecture`` (``BertModel``,
    ``BertForSequenceClassification``, ``BertForMaskedLM``, …): config.json, model.safetensors
    (seeded random weights) and a tokenizer. ``config`` overrides :func:`tiny_bert_config`.
    Returns the folder."""
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    settings = tiny_bert_config(**config)
    settings["architectures"] = [architecture]
    model_type = settings.pop("model_type")
    hf_config = transformers.AutoConfig.for_model(model_type, **settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, architecture)(hf_config)
        # the default init leaves LayerNorms at 1/0 and biases at 0; perturb every tensor so a
        # test notices any one that is lost or mixed up
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(folder)
    write_tokenizer(folder)
    return folder


def write_tiny_sentence_transformer(
    folder: str | Path,
    normalize: bool = True,
    pooling: str | list[str] = "mean",
    seed: int = 0,
    normalize_folder: bool = True,
) -> Path:
    """Write a tiny sentence-transformers folder: a :func:`write_tiny_bert` transformer at its
    root, ``modules.json`` (Transformer, Pooling, and Normalize when ``normalize``),
    ``sentence_bert_config.json`` and ``1_Pooling/config.json`` with ``pooling`` (``mean``,
    ``cls``, ``max``, ``mean_sqrt_len`` or a list of them). ``normalize_folder=False`` leaves out
    the (empty) ``2_Normalize`` folder, as some shipped folders do. Returns the folder."""
    folder = write_tiny_bert(folder, seed=seed)
    modes = [pooling] if isinstance(pooling, str) else list(pooling)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        if normalize_folder:
            (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 64, "do_lower_case": False})
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling_config = {
        "word_embedding_dimension": tiny_bert_config()["hidden_size"],
        "pooling_mode_cls_token": "cls" in modes,
        "pooling_mode_mean_tokens": "mean" in modes,
        "pooling_mode_max_tokens": "max" in modes,
        "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len" in modes,
    }
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config, indent=2))
    return folder


def tiny_batch(
    folder: str | Path, texts: list[str] | None = None, max_length: int = 64
) -> dict[str, torch.Tensor]:
    """``texts`` (default :data:`TEXTS`) tokenized with ``folder``'s tokenizer.json, padded to
    the longest: ``input_ids``, ``attention_mask`` and ``token_type_ids`` as int64 tensors."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(max_length)
    encodings = tokenizer.encode_batch(TEXTS if texts is None else texts)
    return {
        "input_ids": torch.tensor([e.ids for e in encodings]),
        "attention_mask": torch.tensor([e.attention_mask for e in encodings]),
        "token_type_ids": torch.tensor([e.type_ids for e in encodings]),
    }
