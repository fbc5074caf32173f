"""Dependencies point down: jointcomp's modules import each other without cycles — at module level
and inside functions alike — the libraries at the bottom (tensor/, codec/) import nothing else of
jointcomp, and no stage imports another stage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jointcomp"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _targets(module: str, node: ast.AST) -> list[str]:
    """The jointcomp modules an import statement names (``from x import y``: y when y is a
    module, else x)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    out = []
    for alias in node.names:
        name = f"{base}.{alias.name}"
        out.append(name if name in MODULES else base)
    return [t for t in out if t in MODULES]


def _graph() -> dict[str, set[str]]:
    """module → the jointcomp modules it imports anywhere in its file, plus the packages that
    importing those runs first (a submodule's parents), except the importer's own parents."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(module, node):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    if name in MODULES and name != module and not module.startswith(name + "."):
                        edges[module].add(name)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("library", ["jointcomp.tensor", "jointcomp.codec"])
def test_bottom_libraries_import_nothing_else(library):
    edges = _graph()
    for module, targets in edges.items():
        if module == library or module.startswith(library + "."):
            outside = {t for t in targets if not t.startswith(library)}
            outside -= {"jointcomp", "jointcomp.errors"}
            assert not outside, f"{module} imports {sorted(outside)}"


def test_no_stage_imports_another_stage():
    from jointcomp.stages import STAGES

    stage_modules = {STAGES[name].config.__module__ for name in STAGES}
    edges = _graph()
    for module in stage_modules:
        others = (edges[module] & stage_modules) - {module}
        assert not others, f"{module} imports the stage(s) {sorted(others)}"


def test_lower_layers_do_not_import_upper_ones():
    upper = {"jointcomp.pipeline", "jointcomp.cli", "jointcomp.recipe", "jointcomp.api"}
    lower = ("jointcomp.nn", "jointcomp.quant", "jointcomp.container", "jointcomp.training")
    for module, targets in _graph().items():
        if module.startswith(lower):
            assert not (targets & upper), f"{module} imports {sorted(targets & upper)}"
            stages = {t for t in targets if t.startswith("jointcomp.stages")}
            assert not stages, f"{module} imports {sorted(stages)}"
