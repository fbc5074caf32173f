"""Pick the smallest encoding among candidate coders, and nest encodings inside a payload."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from .alphabet import Prepared
from .base import Encoded, Infeasible
from .bitio import Reader, uvarint, zigzag
from .coder import Coder
from .raw import RAW_SCHEMA
from .registry import DENSE_CODERS, INNER_IDS, INNER_NAMES


def best_of(
    prep: Prepared,
    candidates: Iterable[str],
    coders: Mapping[str, type[Coder]] = DENSE_CODERS,
    options: Mapping[str, dict] | None = None,
) -> tuple[Encoded, dict[str, int]]:
    """Encode with every feasible candidate; return the smallest (earliest on ties) and all sizes.

    Size is len(data): side information lives inside data; params hold a few scalars only.
    """
    options = options or {}
    best: Encoded | None = None
    sizes: dict[str, int] = {}
    for name in candidates:
        coder = coders[name](**options.get(name, {}))
        try:
            enc = coder.encode_prepared(prep)
        except Infeasible:
            continue  # e.g. more symbols than Tunstall codewords
        sizes[name] = len(enc.data)
        if best is None or len(enc.data) < len(best.data):
            best = enc
    if best is None:
        raise ValueError(f"none of {list(candidates)} can encode this array")
    return best, sizes


def pack_inner(enc: Encoded) -> bytes:
    """[u8 codec id][raw only: zigzag varint min, u8 bits][uvarint len][data]."""
    head = bytes([INNER_IDS[enc.codec]])
    if enc.codec == "raw":
        head += uvarint(zigzag(enc.params["min"])) + bytes([enc.params["bits"]])
    return head + uvarint(len(enc.data)) + enc.data


def read_inner(r: Reader, n: int, dtype: np.dtype, what: str) -> np.ndarray:
    cid = r.u8(f"{what} codec id")
    if cid not in INNER_NAMES:
        raise r.fail(f"unknown {what} codec id {cid}")
    name = INNER_NAMES[cid]
    params: dict = {}
    if name == "raw":
        params = {"min": r.svarint(f"{what} raw minimum"), "bits": r.u8(f"{what} raw bits")}
        lo, hi = RAW_SCHEMA["min"]
        if not lo <= params["min"] <= hi:
            raise r.fail(f"{what} raw minimum out of range")
    size = r.uvarint(f"{what} length", hi=r.remaining)
    data = r.take(size, what)
    return DENSE_CODERS[name]().decode(data, params, n, dtype)
