"""Shared modules a reader infers.

A registered type may name children that each of its layers shares with the previous layer of
such a type (``jc_shared_children`` on the class: a T-Basis layer's basis and coefficient
table, which every layer of one network holds). A header's ``"shared"`` then lists only
the sharing that rule does not give, and ``"own"`` the children that are a layer's own module
although the rule would share them; on the T-Basis ResNet-32 this drops 62 entries (33 header
bytes). ``compact`` is the writer's half, ``expand`` the reader's: expand(compact(x)) == x.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..registry import MODULE_TYPES


def _shared_children(edits: list[list[Any]]) -> Iterator[tuple[str, str]]:
    """(child name, child path) of every declared shared child, in edit order."""
    for path, type_name, _ in edits:
        entry = MODULE_TYPES.get(type_name)
        if entry is None or entry.parametrization:
            continue
        for child in getattr(entry.cls, "jc_shared_children", ()):
            yield child, f"{path}.{child}" if path else child


def compact(edits: list[list[Any]], shared: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The complete ``shared`` map (alias path → first path) as (the entries the rule does not
    imply, the declared children that are their layer's own module against the rule)."""
    explicit = dict(shared)
    own: list[str] = []
    last: dict[str, str] = {}  # child name -> the first path of the previous layer's child
    for child, path in _shared_children(edits):
        actual = shared.get(path)
        implied = last.get(child)
        if implied is not None:
            if actual == implied:
                del explicit[path]
            elif actual is None:
                own.append(path)
        last[child] = actual or path
    return explicit, own


def expand(edits: list[list[Any]], explicit: dict[str, str], own: list[str]) -> dict[str, str]:
    """The complete ``shared`` map of a header's ``shared`` and ``own``."""
    shared = dict(explicit)
    mine = set(own)
    last: dict[str, str] = {}
    for child, path in _shared_children(edits):
        implied = last.get(child)
        if implied is not None and path not in shared and path not in mine:
            shared[path] = implied
        last[child] = shared.get(path, path)
    return shared
