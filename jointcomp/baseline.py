"""The uncompressed starting point: trained once per (model, data, train settings) and cached,
or loaded from a user's .safetensors file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .container import write_atomic
from .data import DataBundle, load_data
from .errors import JointcompError, RecipeError
from .models import build_model, data_kwargs
from .recipe import UNLABELED_DATASETS, WEIGHTED_BUILDERS, Recipe
from .tasks import Task, make_task
from .training import fit, is_main_process

CACHE_VERSION = 2  # 2: every train key hashed (no keys left out while unset)


DATA_EXTRAS = ("tokenizer", "max_length", "image_size", "mean", "std")


def model_folder(builder: str) -> str | None:
    """The local folder of a builder that reads one (``hf:DIR``, ``sentence-transformers:DIR``),
    else None."""
    if builder.startswith(WEIGHTED_BUILDERS):
        return builder.partition(":")[2]
    return None


def data_extras(recipe: Recipe) -> dict[str, Any]:
    """The data keys only some datasets read, as ``load_data`` takes them: those the recipe
    sets, and text's tokenizer defaulting to the model's own folder."""
    spec = recipe.data
    extras = {k: getattr(spec, k) for k in DATA_EXTRAS if getattr(spec, k) is not None}
    folder = model_folder(recipe.model.builder)
    if "tokenizer" not in extras and folder and spec.dataset.strip().lower() in UNLABELED_DATASETS:
        extras["tokenizer"] = folder
    return extras


def recipe_data(recipe: Recipe) -> tuple[DataBundle, dict[str, Any]]:
    """The recipe's data and the keyword arguments of its model builder: those the data imply
    (input shape — the recipe's ``input_shape`` when given — and class count, unless the data
    are unlabeled), then the recipe's own, which win. RecipeError when the task needs labels
    the data do not have."""
    spec = recipe.data
    data = load_data(
        spec.dataset,
        spec.root,
        spec.val_split,
        spec.seed,
        spec.limit,
        test_split=spec.test_split,
        **data_extras(recipe),
    )
    if not data.labeled and recipe.task.kind == "classify":
        raise RecipeError(
            f"task: classify needs labels and data.dataset {spec.dataset} has none; use "
            "`task: distill` (the compressed model's outputs against the original's)"
        )
    shape = tuple(recipe.model.input_shape or data.input_shape)
    implied = data_kwargs(recipe.model.builder, shape, data.num_classes)
    if data.num_classes is None:
        implied.pop("num_classes", None)  # unlabeled: the builder's own (or the recipe's)
    kwargs = {**implied, **recipe.model.kwargs}
    return data, kwargs


def cache_dir() -> Path:
    """Where baselines are cached: $JOINTCOMP_CACHE, else ~/.cache/jointcomp."""
    root = os.environ.get("JOINTCOMP_CACHE") or Path.home() / ".cache" / "jointcomp"
    return Path(root) / "baselines"


def baseline_key(recipe: Recipe, kwargs: dict[str, Any]) -> str:
    """A hash of everything that determines the trained baseline's weights."""
    data = recipe.data.model_dump()
    data["root"] = str(Path(data["root"]).resolve()) if data["root"] else None
    data.pop("eval_batch_size")
    for key in DATA_EXTRAS:  # unset: the key stays out, so earlier runs' caches still match
        if data.get(key) is None:
            data.pop(key, None)
    train = recipe.train.model_dump()
    train.pop("distill")  # distillation only applies to fine-tuning compressed models
    spec = {
        "v": CACHE_VERSION,
        "builder": recipe.model.builder,
        "kwargs": kwargs,
        "data": data,
        "train": train,
        "seed": recipe.seed,
        "torch": torch.__version__.split("+")[0],
    }
    if recipe.task.kind != "classify":  # another loss trains other weights
        spec["task"] = recipe.task.model_dump()
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def baseline_at_hand(recipe: Recipe, kwargs: dict[str, Any]) -> bool:
    """Whether :func:`get_baseline` gives the baseline without training: its weights file, its
    model folder, or a cached training run."""
    if recipe.model.weights != "train" or model_folder(recipe.model.builder) is not None:
        return True
    return (cache_dir() / f"{baseline_key(recipe, kwargs)}.safetensors").is_file()


def _load_state(model: torch.nn.Module, path: Path) -> None:
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise JointcompError(f"{path}: cannot read weights ({exc})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise JointcompError(
            f"{path}: weights do not fit the model (missing: {missing[:5]}, "
            f"unexpected: {unexpected[:5]})"
        )


def get_baseline(
    recipe: Recipe,
    data: Any,
    kwargs: dict[str, Any],
    *,
    device: torch.device,
    progress: Any = None,
    log: Any = print,
    task: Task | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The baseline model (eval mode) and where it came from: the weights file, the model
    folder (``hf:DIR``: the model as given), the cache, or trained here (classification)."""
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model.builder, kwargs, trust=True)
    weights = recipe.model.weights
    if weights != "train":
        path = Path(weights)
        if not path.is_file():
            raise JointcompError(f"model.weights: {path} does not exist")
        _load_state(model, path)
        return model.to(device).eval(), {"source": str(path)}
    task = task or make_task(recipe.task)
    folder = model_folder(recipe.model.builder)
    if task.needs_reference or folder is not None:
        # a task measured against the original model has no baseline to train: the model as
        # given is the original (a model folder brings its weights)
        if folder is None:
            raise RecipeError(
                f"model.weights: task {task.name} compresses the model as given: name its "
                ".safetensors file (or an hf:/sentence-transformers: model folder)"
            )
        return model.to(device).eval(), {"source": folder}
    key = baseline_key(recipe, kwargs)
    path = cache_dir() / f"{key}.safetensors"
    if path.is_file():
        _load_state(model, path)
        log(f"baseline: cached ({path})")
        return model.to(device).eval(), {"source": "cache", "key": key, "path": str(path)}
    log(f"baseline: training {recipe.model.builder} for {recipe.train.epochs} epoch(s)")
    result = fit(
        model,
        data.train,
        recipe.train.model_copy(update={"distill": None}),
        batch_size=recipe.data.batch_size,
        seed=recipe.seed,
        device=device,
        progress=progress,
        description="baseline",
        task=task,
    )
    model.eval()
    if is_main_process():
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        write_atomic(path, save(state, metadata={"key": key, "builder": recipe.model.builder}))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return model, {
        "source": "trained",
        "key": key,
        "path": str(path),
        "train_seconds": round(result.seconds, 2),
    }
