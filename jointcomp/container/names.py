"""Implicit names, shapes, dtypes and lengths in the tensor table.

A reader rebuilds the module's structure from the manifest before it reads a tensor, so it
already knows every stored tensor's name, shape and dtype, in state-dict order. The table
leaves out what that order implies: an entry without ``"n"`` is the tensor after the previous
entry's, an integer ``"n": k`` skips k tensors (the all-zero ones the writer omitted), and
``"s"`` / ``"d"`` are left out where they equal the rebuilt tensor's. A packed-scalar entry's
name list becomes a list of such skips, counted from the previous scalar of that list. A string
name is valid anywhere: the writer falls back to it for a tensor out of order. ``"b"`` is left
out where the entry implies its payload length (``implied_length``: plain tensors and raw
bit-packed ones).

On a ResNet-32 T-Basis file, spelling every name, shape and dtype out would take the table from
259 to 677 DEFLATEd header bytes, and every length from 245 to 286.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..codec.raw import raw_payload_bytes
from ..errors import FormatError
from .tensors import CODE_OF, DTYPES, PLAIN

MAX_SKIP = 1 << 31


def needs_structure(entries: list[Any]) -> bool:
    """Whether a table leaves anything for the rebuilt structure to fill in."""
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name = entry.get("n")
        if isinstance(name, list):
            if any(not isinstance(n, str) for n in name):
                return True
        elif not isinstance(name, str) or "s" not in entry or "d" not in entry:
            return True
        if entry.get("c") == "raw" and "p" not in entry:  # the quantizer's range implies p
            return True
    return False


def implied_length(entry: dict[str, Any]) -> int | None:
    """The payload length of a table entry (names and shape resolved) that its other fields
    fix — count × itemsize for plain tensors (a packed-scalar entry counts its
    names), ⌈count × bits / 8⌉ for raw bit packing — or None (other coders' lengths are data;
    a malformed entry is left for ``check_entry`` to name)."""
    shape, names, store = entry.get("s"), entry.get("n"), entry.get("st", entry.get("d"))
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        return None
    count = len(names) if isinstance(names, list) else math.prod(shape)
    if entry.get("c") == PLAIN and isinstance(store, str) and store in DTYPES:
        return count * np.dtype(DTYPES[store][1]).itemsize
    bits = entry.get("p", {}).get("bits") if isinstance(entry.get("p"), dict) else None
    if entry.get("c") == "raw" and isinstance(bits, int) and not isinstance(bits, bool):
        return raw_payload_bytes(count, bits) if 0 <= bits <= 64 else None
    return None


def fill_lengths(entries: list[Any]) -> list[Any]:
    """The reader's side of ``implied_length`` (names and shapes resolved): every left-out
    payload length filled in. Raises FormatError where none is implied."""
    out: list[Any] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and "b" not in entry:
            length = implied_length(entry)
            if length is None:
                raise FormatError(f"tensor table entry {i} states no payload length")
            entry = {**entry, "b": length}
        out.append(entry)
    return out


def compact_table(
    entries: list[dict[str, Any]],
    expected: dict[str, torch.Tensor],
    grids: dict[str, dict[str, int]] | None = None,
) -> list[dict]:
    """The writer's side: ``entries`` (after scalar packing) with every name, shape and dtype
    that ``expected`` (stored name → rebuilt tensor, in order) implies left out, every
    payload length the entry implies, and the raw parameters equal to the quantizer range
    ``grids`` gives the tensor (``grid_params``). Copies."""
    index = {name: i for i, name in enumerate(expected)}
    out: list[dict[str, Any]] = []
    prev = -1
    for entry in entries:
        if implied_length(entry) == entry["b"]:
            entry = {k: v for k, v in entry.items() if k != "b"}
        entry = dict(entry)
        name = entry["n"]
        if entry.get("c") == "raw" and grids and entry.get("p") == grids.get(name):
            del entry["p"]
        if isinstance(name, list):
            skips = _skips([index.get(n) for n in name])
            if skips is not None:
                entry["n"] = skips
            out.append(entry)
            continue
        i = index.get(name)
        if i is not None and i > prev:
            if i == prev + 1:
                del entry["n"]
            else:
                entry["n"] = i - prev - 1
            built = expected[name]
            if entry["s"] == list(built.shape):
                del entry["s"]
            if entry["d"] == CODE_OF.get(built.dtype):
                del entry["d"]
        if i is not None:
            prev = i
        out.append(entry)
    return out


def _skips(positions: list[int | None]) -> list[int] | None:
    """Gaps between increasing positions (from -1), or None if they are not increasing."""
    skips, prev = [], -1
    for i in positions:
        if i is None or i <= prev:
            return None
        skips.append(i - prev - 1)
        prev = i
    return skips


def resolve_table(entries: list[Any], expected: dict[str, torch.Tensor]) -> list[Any]:
    """The reader's side: every implied name, shape and dtype filled back in from ``expected``.
    Raises FormatError for a skip that is not a small non-negative integer or that runs past
    the model's tensors. Entries are copied; anything else is left to ``check_entry``."""
    names = list(expected)
    index = {name: i for i, name in enumerate(names)}
    out: list[Any] = []
    prev = -1
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            out.append(entry)
            continue
        entry = dict(entry)
        where = f"tensor table entry {i}"
        name = entry.get("n", 0)
        if isinstance(name, list):
            entry["n"] = _resolve_list(name, names, where)
            out.append(entry)
            continue
        if isinstance(name, str):
            prev = index.get(name, prev)
            out.append(entry)
            continue
        prev = _step(prev, name, names, where)
        built = expected[names[prev]]
        entry["n"] = names[prev]
        entry.setdefault("s", list(built.shape))
        if "d" not in entry and built.dtype in CODE_OF:
            entry["d"] = CODE_OF[built.dtype]
        out.append(entry)
    return out


def _resolve_list(items: list[Any], names: list[str], where: str) -> list[Any]:
    out, prev = [], -1
    for item in items:
        if isinstance(item, str):
            out.append(item)
            continue
        prev = _step(prev, item, names, where)
        out.append(names[prev])
    return out


def _step(prev: int, skip: Any, names: list[str], where: str) -> int:
    if not isinstance(skip, int) or isinstance(skip, bool) or not 0 <= skip < MAX_SKIP:
        raise FormatError(f"{where}: invalid name {skip!r} (a string or a skip count)")
    i = prev + 1 + skip
    if i >= len(names):
        raise FormatError(
            f"{where}: its implied name runs past the model's {len(names)} stored tensors"
        )
    return i
