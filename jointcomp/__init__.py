"""jointcomp: joint neural-network compression into one bit-exact file.

A function per technique, each usable on any ``nn.Module`` (``prune``, ``decompose``,
``share``, ``fold``, ``quantize``, ``regularize``), ``compress`` to chain them, ``save`` /
``load`` for the file, and ``run`` for a YAML recipe::

    import jointcomp
    model, record = jointcomp.compress(model, [{"prune": {"ratio": 0.5}},
                                               {"quantize": {"ptq": {}}}], data=batches)
    jointcomp.save(model, "model.jcz", builder="torchvision:resnet18")
    model = jointcomp.load("model.jcz")                    # bit-exact, eval mode
    fast = jointcomp.load("model.jcz", runtime="fast", example=x)  # int8, timed; not exact
    result = jointcomp.run("recipes/quickstart.yaml")      # a whole recipe, with reports

Names are imported on first use, so ``import jointcomp`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import DataError, FormatError, JointcompError, ModelError, RecipeError
from .version import __version__

if TYPE_CHECKING:
    from .api import (
        compress,
        decompose,
        fold,
        load,
        open_file,
        prune,
        quantize,
        regularize,
        save,
        share,
    )
    from .batches import Batches, as_batches
    from .config import Scope
    from .context import Context, Step
    from .pipeline import RunResult
    from .recipe import Recipe
    from .runtime import to_fast
    from .stages import (
        DecomposeConfig,
        EncodeConfig,
        FoldConfig,
        PruneConfig,
        QuantizeConfig,
        RegularizeConfig,
        ShareConfig,
    )
    from .training import FinetuneSpec, Trainer, TrainSpec

_LAZY = {
    **{
        name: "jointcomp.api"
        for name in (
            "compress",
            "decompose",
            "fold",
            "load",
            "open_file",
            "prune",
            "quantize",
            "regularize",
            "save",
            "share",
        )
    },
    **{
        name: "jointcomp.stages"
        for name in (
            "DecomposeConfig",
            "EncodeConfig",
            "FoldConfig",
            "PruneConfig",
            "QuantizeConfig",
            "RegularizeConfig",
            "ShareConfig",
        )
    },
    "Batches": "jointcomp.batches",
    "as_batches": "jointcomp.batches",
    "Scope": "jointcomp.config",
    "Context": "jointcomp.context",
    "Step": "jointcomp.context",
    "Recipe": "jointcomp.recipe",
    "RunResult": "jointcomp.pipeline",
    "to_fast": "jointcomp.runtime",
    "FinetuneSpec": "jointcomp.training",
    "Trainer": "jointcomp.training",
    "TrainSpec": "jointcomp.training",
}
_SUBMODULES = (
    "models",
    "data",
    "codec",
    "tensor",
    "nn",
    "quant",
    "container",
    "stages",
    "runtime",
)


def run(
    recipe: Any,
    *,
    overrides: tuple[str, ...] = (),
    resume: bool = False,
    force: bool = False,
    show_progress: bool = True,
) -> RunResult:
    """Run a recipe (a path or a validated Recipe) end to end: baseline, stages, the file, the
    audit reports. Returns where it wrote them, the report and the model decoded from the
    file."""
    from .pipeline import run as _run
    from .recipe import Recipe, load_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    return _run(recipe, resume=resume, force=force, show_progress=show_progress)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"jointcomp.{name}")
    raise AttributeError(f"module 'jointcomp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "Batches",
    "Context",
    "DataError",
    "DecomposeConfig",
    "EncodeConfig",
    "FinetuneSpec",
    "FoldConfig",
    "FormatError",
    "JointcompError",
    "ModelError",
    "PruneConfig",
    "QuantizeConfig",
    "Recipe",
    "RecipeError",
    "RegularizeConfig",
    "RunResult",
    "Scope",
    "ShareConfig",
    "Step",
    "TrainSpec",
    "Trainer",
    "__version__",
    "as_batches",
    "compress",
    "decompose",
    "fold",
    "load",
    "open_file",
    "prune",
    "quantize",
    "regularize",
    "run",
    "save",
    "share",
    "to_fast",
]
