"""Documentation that is generated from code stays in step with it."""

from __future__ import annotations

from pathlib import Path

from jointcomp.recipe_docs import render

ROOT = Path(__file__).resolve().parent.parent


def test_recipes_reference_is_current() -> None:
    current = (ROOT / "docs" / "RECIPES.md").read_text(encoding="utf-8")
    assert current == render(), (
        "docs/RECIPES.md is out of date: python -m jointcomp.recipe_docs > docs/RECIPES.md"
    )


def test_every_stage_and_key_is_documented() -> None:
    from jointcomp.stages import STAGES

    text = render()
    for name, stage in STAGES.items():
        assert f"## `{name}`" in text
        for key in stage.Params.model_fields:
            assert f"| `{key}` |" in text, f"{name}.{key} missing"
