"""Rates that only a working coder reaches: these fail for a broken model, table or parser."""

from __future__ import annotations

import constriction
import numpy as np
import pytest

from jointcomp.codec import decode, encode, entropy_bits
from jointcomp.codec.freqtable import make_table
from jointcomp.codec.huffman import package_merge
from jointcomp.codec.sidecode import ans_model

N = 200_000


def laplace(bits: int, n: int = N, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    half = 2 ** (bits - 1)
    x = np.round(rng.laplace(0, half / 4, n))
    return np.clip(x, -half, half - 1).astype(np.int16)


def sparse(zero_fraction: float, n: int = N, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vals = np.clip(np.round(rng.laplace(0, 6, n)), -31, 31)
    vals[vals == 0] = 1
    return np.where(rng.random(n) < zero_fraction, 0, vals).astype(np.int8)


@pytest.mark.parametrize("codec", ["ans", "range"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_ans_range_within_one_percent_of_entropy_plus_table(codec, bits):
    x = laplace(bits)
    enc = encode(x, codec)
    bound = N * entropy_bits(x) / 8 + enc.side_bytes
    assert len(enc.data) <= 1.01 * bound
    assert len(enc.data) - enc.side_bytes >= 0.999 * N * entropy_bits(x) / 8  # no free lunch
    assert enc.side_bytes < 0.02 * len(enc.data)


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
def test_huffman_within_one_bit_of_entropy(bits):
    x = laplace(bits)
    enc = encode(x, "huffman")
    rate = (len(enc.data) - enc.side_bytes) * 8 / N
    h = entropy_bits(x)
    assert h - 1e-9 <= rate <= h + 1.0
    # Exactly the optimal prefix code: payload bits = optimal Huffman cost, up to byte padding.
    _, counts = np.unique(x, return_counts=True)
    assert 0 <= (len(enc.data) - enc.side_bytes) * 8 - _huffman_cost(counts) < 8


@pytest.mark.parametrize("bits,slack", [(2, 1.15), (4, 1.10), (6, 1.12)])
def test_tunstall_rate(bits, slack):
    x = laplace(bits)
    enc = encode(x, "tunstall")
    rate = (len(enc.data) - enc.side_bytes) * 8 / N
    assert entropy_bits(x) <= rate <= slack * entropy_bits(x)
    assert enc.stats["mean_word_len"] > 12 / (slack * entropy_bits(x)) - 1e-9
    wider = encode(x, "tunstall", k=16)  # a bigger dictionary never parses worse here
    assert len(wider.data) <= len(enc.data)


def test_sparse_coder_and_its_stats():
    x = sparse(0.99)
    enc = encode(x, "sparse")
    h_bytes = N * entropy_bits(x) / 8
    assert len(enc.data) <= 1.05 * h_bytes + 64
    st = enc.stats
    assert st["nnz"] == np.count_nonzero(x)
    assert st["positions_method"] in ("gaps", "bitmask")
    pos_bytes = min(st["positions_gap_bytes"], st["positions_bitmask_bytes"])
    # Gap/bitmask coding beats a fixed 4/5/8-bit CSR index on 99% zeros.
    for b in (4, 5, 8):
        assert st[f"csr{b}_index_bytes"] > pos_bytes
    assert st["csr4_fillers"] > st["csr8_fillers"] >= 0
    gaps = np.diff(np.flatnonzero(x), prepend=-1) - 1
    assert st["csr4_fillers"] == int(np.sum(gaps // 16))


def test_auto_picks_the_smallest_and_free_constants():
    for x in (laplace(4), sparse(0.9), laplace(8, 5000)):
        enc = encode(x, "auto")
        sizes = enc.stats["auto_sizes"]
        assert len(enc.data) == min(sizes.values())
        assert sizes[enc.codec] == len(enc.data)
    const = encode(np.full((30, 40), -123456789, dtype=np.int64))
    assert const.codec == "raw" and const.data == b"" and const.params["min"] == -123456789
    empty = encode(np.zeros((0, 5), dtype=np.uint8))
    assert empty.data == b""
    y = decode(const.codec, const.data, const.params, 1200, "int64")
    assert (y == -123456789).all() and y.size == 1200


def test_entropy_bits_values():
    assert entropy_bits(np.array([0, 1] * 50)) == pytest.approx(1.0)
    assert entropy_bits(np.full(10, 3)) == 0.0
    assert entropy_bits(np.zeros(0, dtype=np.int8)) == 0.0
    assert entropy_bits(np.arange(256, dtype=np.uint8)) == pytest.approx(8.0)


def test_constriction_model_is_deterministic():
    """Two models built from the same integer table code identically (decoder rebuilds it)."""
    x = laplace(6, 50_000)
    _, counts = np.unique(x, return_counts=True)
    freqs, _ = make_table(counts, 24)
    dense = np.unique(x, return_inverse=True)[1].astype(np.int32).reshape(-1)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(dense, ans_model(freqs))
    words = coder.get_compressed()
    again = constriction.stream.stack.AnsCoder()
    again.encode_reverse(dense, ans_model(freqs.copy()))
    assert np.array_equal(words, again.get_compressed())
    back = constriction.stream.stack.AnsCoder(words).decode(ans_model(freqs.copy()), dense.size)
    assert np.array_equal(back, dense)


def _huffman_cost(counts: np.ndarray) -> int:
    """Optimal (unlimited) Huffman cost sum(count * length) by repeated merging."""
    import heapq

    heap = [int(c) for c in counts]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


@pytest.mark.parametrize("seed", range(20))
def test_package_merge_is_optimal_and_limited(seed):
    rng = np.random.default_rng(seed)
    counts = rng.geometric(0.05, int(rng.integers(2, 60))) ** 3
    lengths = package_merge(counts, 30)
    assert int((counts * lengths).sum()) == _huffman_cost(counts)
    limit = max(int(np.ceil(np.log2(counts.size))), 1) + int(rng.integers(0, 3))
    limited = package_merge(counts, limit)
    assert limited.max() <= limit
    assert sum(2.0**-limited) == pytest.approx(1.0)
    assert (counts * limited).sum() >= (counts * lengths).sum()
