"""jointcomp: joint neural-network compression into one bit-exact file.

Public API::

    import jointcomp
    result = jointcomp.run("recipes/quickstart.yaml")      # or a Recipe object
    model = jointcomp.load("runs/quickstart/model.jcz")    # a runnable nn.Module (eval mode)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import DataError, FormatError, JointcompError, ModelError, RecipeError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .container import Artifact
    from .pipeline import RunResult
    from .recipe import Recipe


def load(path: str, *, trust: bool = False) -> Any:
    """The module stored in a .jcz file, rebuilt bit-exactly, in eval mode.

    Raises FormatError for a corrupted, truncated or malformed file, and for a file whose model
    builder is not on the allow-list unless ``trust=True``.
    """
    from .container import load as _load

    return _load(path, trust=trust)


def open_file(path: str, *, trust: bool = False) -> Artifact:
    """The module of a .jcz file together with its header (tensor table, structure, sizes)."""
    from .container import open_artifact

    return open_artifact(path, trust=trust)


def run(
    recipe: str | Recipe,
    *,
    overrides: tuple[str, ...] = (),
    resume: bool = False,
    force: bool = False,
    show_progress: bool = True,
) -> RunResult:
    """Run a recipe (a path or a validated Recipe) end to end."""
    from .pipeline import run as _run
    from .recipe import Recipe, load_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    return _run(recipe, resume=resume, force=force, show_progress=show_progress)


def __getattr__(name: str) -> Any:
    if name == "Recipe":
        from .recipe import Recipe

        return Recipe
    raise AttributeError(f"module 'jointcomp' has no attribute {name!r}")


__all__ = [
    "DataError",
    "FormatError",
    "JointcompError",
    "ModelError",
    "Recipe",
    "RecipeError",
    "__version__",
    "load",
    "open_file",
    "run",
]
