"""Shared helpers of the codec tests."""

from __future__ import annotations

import time

import numpy as np

from jointcomp.codec import CodecError, decode


def check_decode(codec: str, data: bytes, params: dict, n: int, dtype) -> np.ndarray | None:
    """Decode damaged input; only CodecError may escape, and not via the safety net."""
    t0 = time.perf_counter()
    try:
        y = decode(codec, data, params, n, dtype)
    except CodecError as exc:
        # decode() wraps stray exceptions as a last resort; reaching it is a bug in a coder.
        assert "malformed payload (" not in str(exc), f"unchecked failure: {exc}"
        return None
    finally:
        assert time.perf_counter() - t0 < 5.0, "decoding damaged input took too long"
    assert y.shape == (n,) and y.dtype == np.dtype(dtype)
    return y
