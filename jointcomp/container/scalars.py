"""Packed scalars: every 0-d tensor stored plain — the scale and zero point of each
per-tensor quantized tensor — sits in one table entry per dtype at the end of the table,
``{"n": [names…], "s": [], "d": …, "c": "plain", "b": count × itemsize}``, instead of one entry
each: a T-Basis file holds ~70 of them, whose entries cost more header bytes than their values.
A reader expands them back into ordinary entries before anything else looks at the table."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import FormatError
from .tensors import DTYPES, PLAIN

MAX_NAME = 1024


def _is_scalar(entry: dict[str, Any]) -> bool:
    return entry["s"] == [] and entry["c"] == PLAIN and "p" not in entry


def pack_scalars(
    entries: list[dict[str, Any]], payloads: list[bytes]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The table with its plain scalars moved into one entry per (dtype, storage dtype) at the
    end, and the payloads in the new order. Entries are copied, not changed."""
    rest: list[tuple[dict[str, Any], bytes]] = []
    groups: dict[tuple[str, str | None], list[tuple[dict[str, Any], bytes]]] = {}
    for entry, payload in zip(entries, payloads, strict=True):
        if _is_scalar(entry):
            groups.setdefault((entry["d"], entry.get("st")), []).append((entry, payload))
        else:
            rest.append((dict(entry), payload))
    for (code, store), members in groups.items():
        packed: dict[str, Any] = {"n": [e["n"] for e, _ in members], "s": [], "d": code}
        if store is not None:
            packed["st"] = store
        packed.update(c=PLAIN, b=sum(len(p) for _, p in members))
        rest.append((packed, b"".join(p for _, p in members)))
    return [e for e, _ in rest], [p for _, p in rest]


def expand_scalars(entries: list[Any]) -> list[Any]:
    """The table with every packed-scalar entry replaced by one plain entry per name (each of
    one element's bytes, in order). Raises FormatError for a malformed packed entry; other
    entries pass through unchecked (``check_entry`` validates them next)."""
    out: list[Any] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("n"), list):
            out.append(entry)
            continue
        names = entry["n"]
        where = f"tensor table entry {i} (packed scalars)"
        if not names or not all(isinstance(n, str) and 0 < len(n) <= MAX_NAME for n in names):
            raise FormatError(f"{where}: names must be a non-empty list of tensor names")
        code, store = entry.get("d"), entry.get("st", entry.get("d"))
        if entry.get("s") != [] or entry.get("c") != PLAIN or "p" in entry:
            raise FormatError(f"{where}: must be plain 0-d tensors")
        if (
            not isinstance(code, str)
            or not isinstance(store, str)
            or code not in DTYPES
            or (store not in DTYPES)
        ):
            raise FormatError(f"{where}: unknown dtype {code!r} / {store!r}")
        size = np.dtype(DTYPES[store][1]).itemsize
        if entry.get("b") != size * len(names):
            raise FormatError(
                f"{where}: {len(names)} scalars of {store} need {size * len(names)} bytes, "
                f"the entry says {entry.get('b')!r}"
            )
        for name in names:
            one = {"n": name, "s": [], "d": code, "c": PLAIN, "b": size}
            if "st" in entry:
                one["st"] = entry["st"]
            out.append(one)
    return out
