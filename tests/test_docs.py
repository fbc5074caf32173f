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
        for key in stage.config.model_fields:
            assert f"| `{key}` |" in text, f"{name}.{key} missing"


def test_every_nested_config_has_its_section_and_links_resolve() -> None:
    """The models inside a stage's config (overrides, budgets, methods, rounding) each get a
    section with all their keys, and every type link in the tables points at a heading."""
    import re

    from pydantic import BaseModel

    from jointcomp.recipe_docs import _nested_models
    from jointcomp.stages import STAGES

    text = render()
    headings = {
        m.group(1).strip("`").lower() for m in re.finditer(r"^#{2,3} (.+)$", text, flags=re.M)
    }
    for stage in STAGES.values():
        for field in stage.config.model_fields.values():
            for sub in _nested_models(field.annotation):
                assert issubclass(sub, BaseModel)
                assert sub.__name__.lower() in headings, f"{stage.name}: {sub.__name__}"
                section = text.split(f" {sub.__name__}\n", 1)[1].split("\n#", 1)[0]
                for key in sub.model_fields:
                    assert f"| `{key}` |" in section, f"{sub.__name__}.{key} missing"
    links = set(re.findall(r"\]\(#([a-z0-9_-]+)\)", text))
    assert links and links <= headings, sorted(links - headings)
    for nested in ("LayerPrune", "LayerDecompose", "LayerQuant", "QATConfig", "FoldRounding"):
        assert f"### {nested}" in text
