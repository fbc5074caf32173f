"""Decoding untrusted bytes: CodecError (or, if the damage still decodes, n symbols of the right
dtype) -- never another exception, never a hang, never the last-resort wrapper."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointcomp.codec import CODECS, CodecError, decode, encode

from .codec_util import check_decode

CONCRETE = CODECS[1:]


def _sources() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "laplace": np.clip(np.round(rng.laplace(0, 2, 4000)), -8, 7).astype(np.int8),
        "sparse": ((rng.random(4000) < 0.05) * rng.integers(-90, 90, 4000)).astype(np.int16),
        "extremes": rng.choice(np.array([-(2**63), 2**63 - 1, 0], dtype=np.int64), 600),
        "wide": rng.integers(0, 3000, 3000).astype(np.uint16),
        "binary": rng.integers(0, 2, 300).astype(np.int32),
    }


SOURCES = _sources()
PAYLOADS = {
    (name, codec): (x, encode(x, codec))
    for name, x in SOURCES.items()
    for codec in CONCRETE
    if not (codec == "tunstall" and np.unique(x).size > 4096)
}


@pytest.mark.parametrize("key", sorted(PAYLOADS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_truncations_and_flips(key):
    x, enc = PAYLOADS[key]
    data = enc.data
    rng = np.random.default_rng(zlib.crc32(repr(key).encode()))  # hash() changes per process
    for cut in sorted(set(rng.integers(0, len(data), 40).tolist()) | {0, len(data) - 1}):
        if 0 <= cut < len(data):
            check_decode(enc.codec, data[:cut], enc.params, x.size, x.dtype)
    for _ in range(150):
        buf = bytearray(data)
        if not buf:
            break
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(0, len(buf)))
            buf[i] ^= 1 << int(rng.integers(0, 8))
        check_decode(enc.codec, bytes(buf), enc.params, x.size, x.dtype)


@pytest.mark.parametrize("key", sorted(PAYLOADS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_trailing_garbage_and_wrong_n_are_rejected(key):
    x, enc = PAYLOADS[key]
    for extra in (b"\x00", b"\x01\x02\x03\x04", b"\xff" * 9):
        with pytest.raises(CodecError):
            decode(enc.codec, enc.data + extra, enc.params, x.size, x.dtype)
    if enc.codec != "raw":  # raw stores no count: a shorter n can fit the same bytes
        for n in (x.size - 1, x.size + 1, 0, 2 * x.size):
            with pytest.raises(CodecError):
                decode(enc.codec, enc.data, enc.params, n, x.dtype)
    else:
        with pytest.raises(CodecError):
            decode(enc.codec, enc.data, enc.params, x.size + 64, x.dtype)


@pytest.mark.parametrize("codec", CONCRETE)
@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=300),
    n=st.integers(0, 5000),
    dtype=st.sampled_from(["int8", "uint64", "int32"]),
)
def test_random_bytes(codec, data, n, dtype):
    params = {"min": 0, "bits": 3} if codec == "raw" else {}
    check_decode(codec, data, params, n, dtype)


@pytest.mark.parametrize("codec", CONCRETE)
def test_hostile_headers_do_not_allocate(codec):
    """Varints claiming huge counts or spans must fail before any large allocation."""
    huge = b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f"
    params = {"min": 0, "bits": 64} if codec == "raw" else {}
    for data in (huge, b"\x05" + huge, b"\x05\x01" + huge, b"\x05\x00\x00" + huge * 3):
        check_decode(codec, data, params, 5, "int64")
    check_decode(codec, huge * 4, params, 2**40, "int64")


def test_bad_params_and_codec_names():
    x = SOURCES["laplace"]
    raw = encode(x, "raw")
    for params in (
        None,
        [],
        {"min": -8},
        {"min": -8, "bits": 4, "extra": 1},
        {"min": -8, "bits": 65},
        {"min": "0", "bits": 4},
        {"min": -8, "bits": True},
        {"min": -(2**70), "bits": 4},
        {"min": 120, "bits": 4},  # values would overflow int8
    ):
        with pytest.raises(CodecError):
            decode("raw", raw.data, params, x.size, x.dtype)
    enc = encode(x, "huffman")
    with pytest.raises(CodecError):
        decode("huffman", enc.data, {"k": 1}, x.size, x.dtype)
    for name in ("auto", "zip", None, 3):
        with pytest.raises(CodecError):
            decode(name, enc.data, {}, x.size, x.dtype)
    for dtype in ("float32", "bool", "nonsense", object):
        with pytest.raises(CodecError):
            decode("huffman", enc.data, {}, x.size, dtype)
    for n in (-1, 1.5, "10", True):
        with pytest.raises(CodecError):
            decode("huffman", enc.data, {}, n, x.dtype)
    with pytest.raises(CodecError):
        decode("huffman", "not bytes", {}, x.size, x.dtype)


def test_values_outside_the_requested_dtype_are_rejected():
    x = np.array([0, 300, 5, 300], dtype=np.int16)
    for codec in CONCRETE:
        enc = encode(x, codec)
        with pytest.raises(CodecError):
            decode(enc.codec, enc.data, enc.params, x.size, "int8")
