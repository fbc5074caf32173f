"""range_parts: range coding with one frequency table per equal contiguous part."""

from __future__ import annotations

import json

import constriction
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointcomp.codec import (
    OPTION_CODECS,
    CodecError,
    Infeasible,
    RangePartsCoder,
    decode,
    encode,
)
from jointcomp.codec.alphabet import prepare, write_alphabet
from jointcomp.codec.auto import AUTO_CANDIDATES
from jointcomp.codec.bitio import uvarint
from jointcomp.codec.choose import best_of
from jointcomp.codec.freqtable import make_table
from jointcomp.codec.registry import INNER_IDS
from jointcomp.codec.sidecode import ans_model

from .codec_util import check_decode as check_parts_decode


def scaled_rows(seed: int = 0, parts: int = 16, m: int = 2304, lo=0.5, hi=3.0) -> np.ndarray:
    """Row i is round(N(0, s_i)) clipped to [-7, 7], s_i spread over [lo, hi]."""
    rng = np.random.default_rng(seed)
    s = np.linspace(lo, hi, parts)[:, None]
    return np.clip(np.round(rng.normal(0, s, (parts, m))), -7, 7).astype(np.int8)


def roundtrip(x: np.ndarray, parts: int) -> object:
    enc = encode(x, "range_parts", parts=parts)
    assert enc.codec == "range_parts"
    params = json.loads(json.dumps(enc.params))
    y = decode("range_parts", enc.data, params, x.size, x.dtype)
    assert y.dtype == x.dtype and y.shape == (x.size,)
    np.testing.assert_array_equal(y, x.reshape(-1))
    return enc


def check_decode(data: bytes, n: int, dtype) -> np.ndarray | None:
    """Damaged range_parts input: CodecError (not via decode()'s last-resort wrapper) or n
    symbols."""
    return check_parts_decode("range_parts", data, {}, n, dtype)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, values",
    [
        ("int8", np.arange(-7, 8)),
        ("uint8", np.array([0, 3, 200, 255])),  # gaps alphabet
        ("int16", np.arange(-300, 300, 7)),
        ("uint32", np.array([0, 2**32 - 1, 12345])),
        ("int64", np.array([-(2**63), 0, 2**63 - 1])),  # full-span alphabet
        ("uint64", np.array([2**64 - 1, 2**64 - 5, 7], dtype=np.uint64)),
    ],
)
def test_roundtrip_dtypes_and_alphabets(dtype, values):
    rng = np.random.default_rng(1)
    parts, m = 8, 600
    # Part i draws from a skewed window of the alphabet, so most parts lack some symbols.
    idx = np.stack(
        [
            np.clip(rng.geometric(0.5, m) - 1 + i % values.size, 0, values.size - 1)
            for i in range(parts)
        ]
    )
    x = values.astype(dtype)[idx]
    enc = roundtrip(x, parts)
    assert enc.stats["parts"] == parts


def test_parts_lacking_symbols_and_a_single_symbol_part():
    x = scaled_rows(parts=4, m=500).copy()
    x[1] = 3  # one part holds a single symbol
    x[2, :] = np.where(x[2] > 0, 7, -7)  # another only the alphabet's two ends
    assert np.unique(x[1]).size == 1 and np.unique(x).size == 15
    enc = roundtrip(x, 4)
    # the single-symbol part costs almost nothing: ~0 model bits for its 500 symbols
    counts = np.array([[np.count_nonzero(row == v) for v in range(-7, 8)] for row in x])
    assert counts[1].max() == 500
    rest = roundtrip(np.delete(x, 1, axis=0), 3).stats["model_bits"]
    assert enc.stats["model_bits"] - rest < 1.0


def test_two_symbol_minimum_parts_and_constant_arrays():
    roundtrip(np.array([0, 5, 5, 0, 5, 5], dtype=np.int32), 3)  # n // parts == 2
    enc = roundtrip(np.full(64, -3, dtype=np.int16), 4)  # A == 1: alphabet section only
    assert enc.data == encode(np.full(64, -3, dtype=np.int16), "range").data


def test_non_native_byte_order_and_multidimensional_input():
    x = scaled_rows(parts=6, m=50).astype(">i2").reshape(6, 5, 10)
    enc = roundtrip(x, 6)
    np.testing.assert_array_equal(decode(enc.codec, enc.data, {}, x.size, "<i2"), x.ravel())


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    parts=st.integers(2, 12),
    m=st.integers(2, 300),
    alphabet=st.integers(2, 40),
    dtype=st.sampled_from(["int8", "uint16", "int32", "uint64"]),
)
def test_roundtrip_random(seed, parts, m, alphabet, dtype):
    rng = np.random.default_rng(seed)
    a = min(alphabet, m)
    scale = rng.uniform(0.2, a, (parts, 1))
    x = np.minimum(np.floor(rng.exponential(scale, (parts, m))), a - 1).astype(dtype)
    roundtrip(x, parts)


def test_precision_option_roundtrips_and_is_recorded():
    x = scaled_rows(parts=4, m=400)
    enc = RangePartsCoder(parts=4, precision=12).encode(x)
    np.testing.assert_array_equal(decode("range_parts", enc.data, {}, x.size, x.dtype), x.ravel())
    assert enc.data[enc.stats["alphabet_bytes"] + 1] == 12  # first table's precision byte


# --- layout and stats --------------------------------------------------------------------------


def test_layout_and_stats():
    x = scaled_rows(parts=16, m=2304)
    enc = encode(x, "range_parts", parts=16)
    a_bytes = enc.stats["alphabet_bytes"]
    assert enc.data[a_bytes] == 16  # uvarint parts right after the alphabet section
    assert enc.side_bytes == a_bytes + enc.stats["table_bytes"]
    assert (len(enc.data) - enc.side_bytes) % 4 == 0  # whole u32 words after the tables
    # model_bits is the cross-entropy under per-part tables: close to the per-part entropy
    h = 0.0
    for row in x:
        p = np.unique(row, return_counts=True)[1] / row.size
        h += -row.size * float((p * np.log2(p)).sum())
    assert h <= enc.stats["model_bits"] < h * 1.002
    assert len(enc.data) - enc.side_bytes < enc.stats["model_bits"] / 8 + 12


def test_zero_counts_get_frequency_one():
    freqs, _ = make_table(np.array([0, 50, 0, 10, 0]), 16)
    assert freqs.sum() == 1 << 16
    assert freqs[[0, 2, 4]].tolist() == [1, 1, 1]
    with pytest.raises(ValueError):
        make_table(np.zeros(4, dtype=np.int64), 16)


# --- auto ---------------------------------------------------------------------------------------


def test_auto_picks_range_parts_for_differing_parts():
    x = scaled_rows(parts=16, m=2304)
    enc = encode(x, "auto", range_parts={"parts": 16})
    sizes = enc.stats["auto_sizes"]
    assert enc.codec == "range_parts"
    assert sizes["range_parts"] < 0.96 * sizes["range"]
    np.testing.assert_array_equal(
        decode(enc.codec, enc.data, enc.params, x.size, x.dtype), x.ravel()
    )


def test_auto_does_not_pick_range_parts_for_iid_data():
    rng = np.random.default_rng(2)
    x = np.clip(np.round(rng.normal(0, 1.7, (16, 2304))), -7, 7).astype(np.int8)
    enc = encode(x, "auto", range_parts={"parts": 16})
    sizes = enc.stats["auto_sizes"]
    assert enc.codec != "range_parts"
    assert sizes["range_parts"] > sizes["range"]  # 15 extra tables do not pay


def test_auto_skips_range_parts_without_the_option():
    assert "range_parts" in AUTO_CANDIDATES
    x = scaled_rows(parts=16, m=2304)
    for arr in (x, np.zeros(0, dtype=np.int8), np.full(10, 4)):
        sizes = encode(arr, "auto").stats["auto_sizes"]
        assert "range_parts" not in sizes and sizes
    # an option that does not fit the array is skipped too (n % 7 != 0)
    sizes = encode(x, "auto", range_parts={"parts": 7}).stats["auto_sizes"]
    assert "range_parts" not in sizes and "range" in sizes
    best, sizes = best_of(prepare(x.ravel()), ["range_parts", "range"])
    assert best.codec == "range" and set(sizes) == {"range"}


def test_registration():
    assert OPTION_CODECS == ("range_parts",)
    assert "range_parts" not in INNER_IDS  # sparse's nested ids stay unchanged


# --- infeasible and bad options ----------------------------------------------------------------


@pytest.mark.parametrize(
    "x, parts",
    [
        (np.arange(100) % 5, 1),  # one part is plain range
        (np.arange(100) % 5, 3),  # 100 % 3 != 0
        (np.arange(100) % 5, 100),  # one symbol per part
        (np.arange(100) % 5, 200),
        (np.zeros(0, dtype=np.int8), 2),
        (np.full(10, 7), 1),  # constant arrays too: parts is checked first
        (np.arange(64) % 32, 4),  # 32 symbols > 16 per part
    ],
)
def test_infeasible(x, parts):
    with pytest.raises(Infeasible):
        encode(x, "range_parts", parts=parts)


def test_alphabet_beyond_precision_is_infeasible():
    x = np.arange(4096) % 1024
    with pytest.raises(Infeasible):
        RangePartsCoder(parts=2, precision=10).encode(x)
    roundtrip(x, 2)


@pytest.mark.parametrize(
    "kwargs", [{"parts": 0}, {"parts": -2}, {"parts": 2.0}, {"parts": True}, {"precision": 25}]
)
def test_bad_options(kwargs):
    with pytest.raises(ValueError):
        RangePartsCoder(**kwargs)


# --- untrusted payloads ------------------------------------------------------------------------

X = scaled_rows(seed=3, parts=8, m=300)
ENC = encode(X, "range_parts", parts=8)


def test_truncations_and_flips():
    data = ENC.data
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            decode("range_parts", data[:cut], {}, X.size, X.dtype)
    rng = np.random.default_rng(4)
    rejected = 0
    for i in range(400):
        buf = bytearray(data)
        if i < ENC.side_bytes:
            buf[i] ^= 0xFF  # every side byte once
        else:
            for _ in range(int(rng.integers(1, 4))):
                j = int(rng.integers(0, len(buf)))
                buf[j] ^= 1 << int(rng.integers(0, 8))
        rejected += check_decode(bytes(buf), X.size, X.dtype) is None
    assert rejected > 200


def test_trailing_garbage_and_wrong_n():
    for extra in (b"\x00", b"\x01\x02\x03\x04", b"\xff" * 9):
        with pytest.raises(CodecError):
            decode("range_parts", ENC.data + extra, {}, X.size, X.dtype)
    for n in (X.size - 1, X.size + 1, X.size - 8, 0, 2 * X.size):
        with pytest.raises(CodecError):
            decode("range_parts", ENC.data, {}, n, X.dtype)
    with pytest.raises(CodecError):
        decode("range_parts", ENC.data, {"parts": 8}, X.size, X.dtype)


@pytest.mark.parametrize(
    "head",
    [
        uvarint(0),
        uvarint(1),
        uvarint(3),  # does not divide n
        uvarint(4),  # divides n, but the tables and words no longer line up
        uvarint(16),
        uvarint(X.size // 2),
        uvarint(X.size),
        uvarint(2**40),
        b"\x88\x00",  # non-canonical 8
        b"\xff" * 11,  # overlong varint
    ],
)
def test_wrong_parts_varint(head):
    at = ENC.stats["alphabet_bytes"]
    assert ENC.data[at : at + 1] == uvarint(8)
    data = ENC.data[:at] + head + ENC.data[at + 1 :]
    with pytest.raises(CodecError):
        decode("range_parts", data, {}, X.size, X.dtype)
    assert check_decode(data, X.size, X.dtype) is None


def forge(x: np.ndarray, parts: int) -> bytes:
    """A range_parts payload for any parts, bypassing the encoder's checks."""
    prep = prepare(x.ravel())
    dense = prep.dense.reshape(parts, -1).astype(np.int32)
    out = [write_alphabet(prep), uvarint(parts)]
    coder = constriction.stream.queue.RangeEncoder()
    for row in dense:
        freqs, table = make_table(np.bincount(row, minlength=prep.alphabet_size), 24)
        out.append(table)
        coder.encode(row, ans_model(freqs))
    return b"".join(out) + coder.get_compressed().astype("<u4").tobytes()


def test_forged_payloads_the_encoder_never_writes_are_rejected():
    x = np.array([0, 5, 5, 0, 5, 5, 3, 3], dtype=np.int32)
    good = forge(x[:6], 3)
    assert good == encode(x[:6], "range_parts", parts=3).data  # forge writes the real layout
    for arr, parts in ((x, 1), (x, 8), (x[:6], 6), (x, 4)):  # last: 3 symbols > 2 per part
        with pytest.raises(CodecError):
            decode("range_parts", forge(arr, parts), {}, arr.size, arr.dtype)


def test_tables_swapped_between_parts_are_rejected():
    # Same tables in another order: the stream decodes under the wrong models, and the
    # re-encoding check (or the alphabet) rejects it.
    at = ENC.stats["alphabet_bytes"] + 1
    tables = [make_table(np.bincount(row + 7, minlength=15), 24)[1] for row in X]
    assert ENC.data[at : at + sum(map(len, tables))] == b"".join(tables)
    swapped = ENC.data[:at] + b"".join(tables[::-1]) + ENC.data[at + sum(map(len, tables)) :]
    y = check_decode(swapped, X.size, X.dtype)
    assert y is None or not np.array_equal(y, X.ravel())


@settings(max_examples=80, deadline=None)
@given(
    data=st.binary(max_size=300),
    n=st.integers(0, 5000),
    dtype=st.sampled_from(["int8", "uint64", "int32"]),
)
def test_random_bytes(data, n, dtype):
    check_decode(data, n, dtype)


@settings(max_examples=60, deadline=None)
@given(prefix=st.binary(max_size=40))
def test_random_body_after_a_valid_alphabet(prefix):
    # Fuzz the body (parts, tables, words) behind a valid alphabet section.
    check_decode(ENC.data[: ENC.stats["alphabet_bytes"]] + prefix, X.size, X.dtype)


def test_hostile_headers_do_not_allocate():
    huge = b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f"
    for data in (huge, b"\x05" + huge, b"\x05\x00\x00\x02" + huge, b"\x05\x00\x00\x02\x02" + huge):
        check_decode(data, 5, "int64")
    check_decode(huge * 4, 2**40, "int64")
    # n = 2**40 in 2**39 parts of a 2-symbol alphabet: fails on the missing tables at once
    n = 2**40
    check_decode(uvarint(n) + b"\x00\x00\x02" + uvarint(n // 2) + b"\x01", n, "int64")
