"""Hugging Face transformers models: a user's local folder (``hf:DIR``) and its portable form
(``transformers:ARCH`` with the config as plain JSON), which a .jcz file names.

``hf:DIR`` reads the folder's ``config.json``, picks the class its ``architectures`` names (or
the model type's base ``AutoModel`` class) and loads the folder's safetensors weights with
``from_pretrained`` — local files only, never a hub download, never ``trust_remote_code``.
``transformers:ARCH`` builds the same class from a config dict with fresh weights, so a file of
the model rebuilds it without the folder and without running anyone's code: the class must be
one an allow-listed Auto class maps the config's built-in ``model_type`` to, and configs that
name custom code (``auto_map``), quantized loading, pretrained backbones, or sizes beyond the
bounds below are refused before anything is built.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..config import short
from ..errors import JointcompError, ModelError

EXTRA = "pip install 'jointcomp[hf]'"
# Auto classes whose model types and architectures may be built (transformers' own name
# tables; an architecture is allowed for the model types these map to it)
AUTO_CLASSES: dict[str, str] = {
    "AutoModel": "MODEL_MAPPING_NAMES",
    "AutoModelForSequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForTokenClassification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForQuestionAnswering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "AutoModelForMultipleChoice": "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES",
    "AutoModelForMaskedLM": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "AutoModelForCausalLM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForSeq2SeqLM": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForPreTraining": "MODEL_FOR_PRETRAINING_MAPPING_NAMES",
    "AutoModelForNextSentencePrediction": "MODEL_FOR_NEXT_SENTENCE_PREDICTION_MAPPING_NAMES",
    "AutoModelForTextEncoding": "MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES",
    "AutoModelForImageClassification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
}
# config keys that would run or fetch something: custom code, quantized loading
REFUSED_KEYS = ("auto_map", "custom_pipelines", "trust_remote_code", "quantization_config")
# config flags that would load pretrained weights (a backbone) while building
PRETRAINED_FLAGS = ("use_pretrained_backbone",)
# integers in a config (pure-Python structures such as per-layer lists grow with them before
# any tensor is made); counts of layers, heads, blocks and experts bounded tighter, as building
# even on the meta device takes time per layer (the largest models have about 128 layers)
MAX_CONFIG_INT = 1 << 31
MAX_COUNT = 1 << 8
_COUNT_WORDS = ("layers", "heads", "blocks", "experts", "depth")
MAX_CONFIG_BYTES = 1 << 20  # a folder's config.json
# class names a file keeps (more, e.g. ImageNet-21k's, would crowd the header: only the count)
MAX_LABEL_NAMES = 1000
# weight files that are pickles: never unpickled here
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5")


def require_transformers(what: str) -> ModuleType:
    """The transformers module, or a ModelError naming the extra that installs it."""
    try:
        import transformers
    except ImportError as e:
        raise ModelError(
            f"{what} needs the Hugging Face transformers library, an optional extra: {EXTRA}"
        ) from e
    return transformers


@lru_cache(maxsize=1)
def _architectures() -> dict[tuple[str, str], str]:
    """(model type, architecture) → the Auto class that maps one to the other."""
    from transformers.models.auto import modeling_auto

    out: dict[tuple[str, str], str] = {}
    for auto, table in AUTO_CLASSES.items():
        for model_type, names in getattr(modeling_auto, table, {}).items():
            for name in (names,) if isinstance(names, str) else names:
                out.setdefault((model_type, name), auto)
    return out


def auto_architecture(auto: str, model_type: str) -> str:
    """The class the Auto class ``auto`` (e.g. ``AutoModel``) builds for ``model_type`` (the
    first, where it maps several)."""
    from transformers.models.auto import modeling_auto

    names = getattr(modeling_auto, AUTO_CLASSES[auto], {}).get(model_type)
    if names is None:
        raise ModelError(f"{auto} has no class for model type {short(model_type)}")
    return names if isinstance(names, str) else names[0]


def auto_class(model_type: str, architecture: str) -> str:
    """The allow-listed Auto class that builds ``architecture`` for ``model_type``; a
    ModelError naming the allowed ones otherwise."""
    found = _architectures().get((model_type, architecture))
    if found is None:
        allowed = sorted(a for (t, a) in _architectures() if t == model_type)
        raise ModelError(
            f"transformers architecture {short(architecture)} is not allowed for model type "
            f"{short(model_type)}; allowed: {', '.join(allowed) or '(none)'} (the classes "
            f"{', '.join(AUTO_CLASSES)} build)"
        )
    return found


def check_config(config: Any, where: str = "config", depth: int = 0) -> None:
    """Refuse a config (a plain dict, nested configs included) that names custom code,
    quantized loading or pretrained backbones, or holds integers beyond the bounds."""
    if isinstance(config, dict):
        for key, value in config.items():
            if key in REFUSED_KEYS:
                raise ModelError(
                    f"{where} has {key!r}: models that need custom code or quantized loading "
                    "are not supported (trust_remote_code is never used)"
                )
            if "implementation" in str(key) and isinstance(value, str) and "/" in value:
                raise ModelError(
                    f"{where}: {key}={short(value)} names a kernel on the Hugging Face hub, "
                    "which is never fetched"
                )
            if key in PRETRAINED_FLAGS and value:
                raise ModelError(
                    f"{where}: {key}={short(value)} would load pretrained weights while "
                    "building; set it to false (weights come from the folder or the file)"
                )
            if isinstance(value, int) and not isinstance(value, bool):
                bound = MAX_COUNT if any(w in str(key) for w in _COUNT_WORDS) else MAX_CONFIG_INT
                if abs(value) > bound:
                    raise ModelError(
                        f"{where}: {key}={value:,} is out of bounds (at most {bound:,})"
                    )
            check_config(value, f"{where}.{key}", depth + 1)
    elif isinstance(config, list):
        for value in config:
            check_config(value, where, depth + 1)


def config_from_dict(config: dict[str, Any], where: str = "config") -> Any:
    """A transformers config object from a plain dict of a built-in ``model_type``, checked
    by :func:`check_config` first."""
    transformers = require_transformers(where)
    if not isinstance(config, dict):
        raise ModelError(f"{where} must be a mapping (a transformers config as JSON)")
    check_config(config, where)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in transformers.CONFIG_MAPPING:
        raise ModelError(
            f"{where}: model_type {short(model_type)} is not one of transformers' built-in "
            "model types"
        )
    settings = {k: v for k, v in config.items() if k != "model_type"}
    try:
        built = transformers.CONFIG_MAPPING[model_type].from_dict(settings)
    except Exception as e:
        raise ModelError(
            f"{where}: transformers rejects it: {type(e).__name__}: {short(str(e), 300)}"
        ) from e
    _no_pretrained(built, transformers.PretrainedConfig)
    return built


def _no_pretrained(config: Any, config_type: type, depth: int = 0) -> None:
    """Turn off loading pretrained backbones where a config class defaults to it (DETR's
    ``use_pretrained_backbone``), in sub-configs too: weights come from the folder or the file."""
    for flag in PRETRAINED_FLAGS:
        if getattr(config, flag, False):
            setattr(config, flag, False)
    if depth < 4:
        for value in list(vars(config).values()):
            if isinstance(value, config_type):
                _no_pretrained(value, config_type, depth + 1)


def portable_config(config: Any) -> dict[str, Any]:
    """A config object as the plain JSON dict a file stores (where it came from dropped)."""
    data = json.loads(config.to_json_string(use_diff=False))
    for key in ("_name_or_path", "transformers_version", "architectures", "_commit_hash"):
        data.pop(key, None)
    labels = data.pop("id2label", None)
    names = data.pop("label2id", None)
    if isinstance(labels, dict):
        default = all(labels.get(str(i)) == f"LABEL_{i}" for i in range(len(labels)))
        if default or len(labels) > MAX_LABEL_NAMES:
            data["num_labels"] = len(labels)  # the class count fixes the model; names don't
        else:
            data.update(id2label=labels, label2id=names)
    data["model_type"] = config.model_type
    return data


def _class(transformers: ModuleType, config: Any, architecture: str) -> type[nn.Module]:
    auto_class(config.model_type, architecture)
    cls = getattr(transformers, architecture, None)
    if cls is None:
        raise ModelError(f"transformers {transformers.__version__} has no class {architecture}")
    return cls


def build_from_config(architecture: str, kwargs: dict[str, Any]) -> nn.Module:
    """``transformers:ARCH``: the class built from ``kwargs['config']`` with fresh weights
    (float32; no file is read)."""
    label = f"transformers:{architecture}"
    transformers = require_transformers(label)
    unknown = sorted(set(kwargs) - {"config"})
    if unknown or "config" not in kwargs:
        raise ModelError(f"{label} takes one argument, config (a transformers config as JSON)")
    config = config_from_dict(kwargs["config"], f"{label} config")
    cls = _class(transformers, config, architecture)
    try:
        return cls(config).float()
    except JointcompError:
        raise  # e.g. over a file's budget
    except Exception as e:
        raise ModelError(
            f"{label} cannot build from its config: {type(e).__name__}: {short(str(e), 300)}"
        ) from e


def read_json(path: Path, what: str) -> Any:
    """A small JSON file of a model folder, or a ModelError naming it."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelError(f"{path}: {what} is larger than {MAX_CONFIG_BYTES:,} bytes")
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: cannot read {what}: {e}") from None


def _folder(folder: str | Path, label: str) -> Path:
    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise ModelError(
            f"{label}: {path} is not a local model folder with a config.json (models are "
            "never downloaded: save or unpack the folder first)"
        )
    return path


def folder_config(folder: str | Path, kwargs: dict[str, Any], label: str) -> tuple[Any, str]:
    """The config object and architecture of the transformers folder ``folder``:
    ``kwargs['architecture']`` if given (a class name, or an Auto class name such as
    ``AutoModel`` for the class it builds for the model type), else the one the config's
    ``architectures`` names, else the model type's ``AutoModel`` class."""
    require_transformers(label)
    unknown = sorted(set(kwargs) - {"architecture"})
    if unknown:
        raise ModelError(
            f"{label} got unknown argument(s) {', '.join(unknown)}; it accepts: architecture"
        )
    path = _folder(folder, label)
    data = read_json(path / "config.json", "config.json")
    config = config_from_dict(data, f"{path / 'config.json'}")
    named = data.get("architectures") or [None]
    architecture = kwargs.get("architecture") or named[0] or "AutoModel"
    if architecture in AUTO_CLASSES:  # the class that Auto class builds for this model type
        architecture = auto_architecture(architecture, config.model_type)
    if not isinstance(architecture, str):
        raise ModelError(f"{label}: architecture must be a class name, got {short(architecture)}")
    auto_class(config.model_type, architecture)
    return config, architecture


def portable_builder(folder: str | Path, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The builder and keyword arguments a file stores for ``hf:DIR``: ``transformers:ARCH``
    and the folder's config."""
    config, architecture = folder_config(folder, kwargs, f"hf:{folder}")
    return f"transformers:{architecture}", {"config": portable_config(config)}


@contextmanager
def _quiet(transformers: ModuleType) -> Any:
    """No progress bars while loading (they would cut into jointcomp's own output)."""
    logging = transformers.utils.logging
    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


def load_folder(folder: str | Path, kwargs: dict[str, Any]) -> nn.Module:
    """``hf:DIR``: the folder's model with its own weights (float32, eval mode), loaded from
    its safetensors files only; every weight of the model must be in them."""
    label = f"hf:{folder}"
    transformers = require_transformers(label)
    config, architecture = folder_config(folder, kwargs, label)
    path = _folder(folder, label)
    if not any(path.glob("*.safetensors")):
        pickles = [name for name in PICKLE_WEIGHTS if (path / name).exists()]
        found = (
            f" (it has {', '.join(pickles)}, a pickle jointcomp does not load)" if pickles else ""
        )
        raise ModelError(
            f"{label}: no model.safetensors in {path}{found}; convert the weights to "
            "safetensors, e.g. with transformers: model.save_pretrained(folder, "
            "safe_serialization=True)"
        )
    cls = _class(transformers, config, architecture)
    try:
        with _quiet(transformers):
            model, info = cls.from_pretrained(
                str(path),
                config=config,
                local_files_only=True,
                use_safetensors=True,
                trust_remote_code=False,
                dtype=torch.float32,
                output_loading_info=True,
            )
    except Exception as e:
        raise ModelError(
            f"{label}: cannot load {architecture}: {type(e).__name__}: {short(str(e), 300)}"
        ) from e
    missing = sorted(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise ModelError(
            f"{label}: the folder's weights do not fill {architecture} (missing: "
            f"{short(missing[:5])}, mismatched: {short(mismatched[:5])}); name the "
            "architecture they hold with kwargs {architecture: ...}"
        )
    # where it was loaded from is no part of the model: a file rebuilds it without the folder
    for module in model.modules():  # the model and the models inside it (BertModel in …For…)
        if isinstance(module, transformers.PreTrainedModel):
            module.name_or_path = ""
            module.config._name_or_path = ""
    return model.float().eval()
