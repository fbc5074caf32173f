"""Every example a user reads runs: the README's Python blocks (in order, in one namespace, in a
scratch folder) and every docstring example of the package."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _modules_with_examples() -> list[str]:
    found = []
    for path in sorted((ROOT / "jointcomp").rglob("*.py")):
        if ">>> " in path.read_text(encoding="utf-8"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = PYTHON_BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)


def test_the_public_api_has_examples():
    import jointcomp.api as api

    for name in ("prune", "decompose", "share", "fold", "quantize", "regularize", "compress"):
        assert ">>> " in (getattr(api, name).__doc__ or ""), f"jointcomp.{name} has no example"


@pytest.mark.parametrize("module", _modules_with_examples())
def test_docstring_examples_run(module):
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(importlib.import_module(module), optionflags=flags)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} example(s) of {module} failed (run it for details)"
