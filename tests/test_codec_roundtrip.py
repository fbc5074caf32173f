"""decode(encode(x)) == x, dtype included, for every coder over many kinds of integer arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jointcomp.codec import CODECS, decode, encode

DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
SHAPES = ["uniform", "laplace", "geometric", "constant", "two_extremes", "sparse", "wide"]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_array(seed: int, dtype: str, shape: str, n: int, alphabet: int) -> np.ndarray:
    """A random array of the given kind, always inside the dtype's range."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)
    if shape == "constant":
        v = int(rng.integers(lo, hi, endpoint=True, dtype=np.int64 if lo < 0 else np.uint64))
        return np.full(n, v, dtype=dtype)
    if shape == "two_extremes":  # one symbol in a huge range (the whole dtype span)
        return rng.choice(np.array([lo, hi], dtype=dtype), size=n, p=[0.9, 0.1])
    if shape == "sparse":
        vals = np.clip(np.round(rng.laplace(0, 3, n)), max(lo, -100), min(hi, 100))
        return np.where(rng.random(n) < 0.1, vals, 0).astype(dtype)
    if shape == "wide":  # large alphabet near the top of the range
        a = min(alphabet * 40, hi - max(lo, 0))
        base = hi - a
        return (base + rng.integers(0, a + 1, n, dtype=np.uint64).astype(object)).astype(dtype)
    span = min(alphabet, hi - lo)
    if shape == "uniform":
        off = rng.integers(0, span + 1, n, dtype=np.uint64)
    elif shape == "laplace":
        off = np.clip(np.round(np.abs(rng.laplace(0, max(span, 2) / 8, n))), 0, span)
    else:
        off = np.minimum(rng.geometric(0.3, n) - 1, span)
    centre = 0 if lo == 0 else max(lo, min(-(span // 2), hi - span))
    return (np.asarray(off, dtype=np.uint64).astype(object) + centre).astype(dtype)


def roundtrip(x: np.ndarray, codec: str, **options) -> None:
    try:
        enc = encode(x, codec, **options)
    except ValueError:
        # Only Tunstall may decline, and only for alphabets beyond 2**k codewords.
        assert codec == "tunstall" and np.unique(x).size > 2 ** options.get("k", 12)
        return
    assert enc.codec in CODECS[1:]
    if codec != "auto":
        assert enc.codec == codec
    params = json.loads(json.dumps(enc.params))  # params survive a JSON header
    y = decode(enc.codec, enc.data, params, x.size, x.dtype)
    assert y.dtype == x.dtype
    assert y.shape == (x.size,)
    np.testing.assert_array_equal(y, x.reshape(-1))


@FAST
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(DTYPES),
    shape=st.sampled_from(SHAPES),
    n=st.integers(0, 3000),
    alphabet=st.integers(1, 70_000),
    codec=st.sampled_from(CODECS),
)
def test_roundtrip_every_codec(seed, dtype, shape, n, alphabet, codec):
    roundtrip(make_array(seed, dtype, shape, n, alphabet), codec)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(2, 16), bs=st.integers(1, 300))
def test_tunstall_options(seed, k, bs):
    rng = np.random.default_rng(seed)
    x = np.minimum(rng.geometric(0.4, 1500) - 1, 2**k - 1).astype(np.int16)
    roundtrip(x, "tunstall", k=k, block_size=bs)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), max_length=st.integers(1, 24), bs=st.integers(1, 500))
def test_huffman_options(seed, max_length, bs):
    rng = np.random.default_rng(seed)
    x = np.minimum(rng.geometric(0.05, 2000), 2**max_length).astype(np.int32)
    roundtrip(x, "huffman", max_length=max_length, block_size=bs)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_edge_arrays(codec, dtype):
    info = np.iinfo(dtype)
    for x in (
        np.zeros(0, dtype=dtype),
        np.full(1, info.min, dtype=dtype),
        np.full(1000, info.max, dtype=dtype),
        np.array([info.min, info.max, info.min], dtype=dtype),
        np.arange(300).astype(dtype),
    ):
        roundtrip(x, codec)


def test_alphabet_of_65536_and_more():
    rng = np.random.default_rng(1)
    x = rng.integers(-40_000, 40_000, 200_000).astype(np.int32)  # ~80k distinct symbols
    assert np.unique(x).size > 65_536
    for codec in ("auto", "raw", "huffman", "ans", "range", "sparse"):
        roundtrip(x, codec)
    full16 = np.arange(65536, dtype=np.uint16)
    for codec in CODECS:
        roundtrip(rng.permutation(full16), codec, **({"k": 16} if codec == "tunstall" else {}))


@pytest.mark.parametrize("codec", CODECS)
def test_non_native_byte_order(codec):
    x = np.arange(-50, 250, dtype=">i2")
    roundtrip(x, codec)
    enc = encode(x, codec)
    np.testing.assert_array_equal(decode(enc.codec, enc.data, enc.params, x.size, "<i2"), x)


def test_multidimensional_input_is_flattened_in_c_order():
    x = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    enc = encode(x.T, "huffman")  # a non-contiguous view
    y = decode(enc.codec, enc.data, enc.params, x.size, "int16")
    np.testing.assert_array_equal(y.reshape(4, 3, 2), x.T)
