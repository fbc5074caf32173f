"""Canonical, length-limited Huffman coding with a table-driven, block-parallel decoder.

Body layout (after the alphabet section):
  u8 length-table mode (0: lengths, 1: zigzag deltas of lengths) + small-int sequence (sidecode)
  uvarint block size; one uvarint bit length per block; the MSB-first bitstream, zero-padded.
Lengths come from package-merge (optimal under the max_length limit). Blocks are decoded in
lockstep: one numpy step decodes one symbol of every block through a 2**Lmax lookup table.
"""

from __future__ import annotations

import numpy as np

from .alphabet import Alphabet, Prepared
from .bitio import Reader, pack_fields, padding_is_zero, uvarint, uvarints, window_view
from .coder import DenseCoder, default_block_size, max_block_size, read_blocks
from .sidecode import decode_small, encode_small

MAX_CODE_LEN = 30
_TABLE_MIN = 1 << 16  # a full lookup table is always allowed up to this size...
_TABLE_PER_SYMBOL = 4  # ...or up to this many entries per alphabet symbol


def package_merge(counts: np.ndarray, max_len: int) -> np.ndarray:
    """Optimal code lengths under a length limit (Larmore-Hirschberg package-merge)."""
    counts = np.asarray(counts, dtype=np.int64)
    a = counts.size
    if a == 1:
        return np.ones(1, dtype=np.int64)
    if a > (1 << max_len):
        raise ValueError(f"{a} symbols need codes longer than {max_len} bits")
    order = np.argsort(counts, kind="stable")
    leaves = counts[order]
    flags = []  # per level, is_leaf of each item of the merged list (level max_len first)
    items = leaves
    flags.append(np.ones(a, dtype=bool))
    for _ in range(max_len - 1):
        k = items.size // 2
        packages = items[0 : 2 * k : 2] + items[1 : 2 * k : 2]
        merged = np.concatenate([leaves, packages])
        idx = np.argsort(merged, kind="stable")  # ties: leaves first
        items = merged[idx]
        flags.append(idx < a)
    # Walk from the top level (length 1) down, taking 2a-2 items at the top.
    take = 2 * a - 2
    lengths_sorted = np.zeros(a, dtype=np.int64)
    for level_flags in reversed(flags):
        nleaf = int(level_flags[:take].sum())
        lengths_sorted[:nleaf] += 1
        take = 2 * (take - nleaf)
    lengths = np.empty(a, dtype=np.int64)
    lengths[order] = lengths_sorted
    return lengths


def canonical(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical order (by length, then symbol), sorted lengths, left-justified code starts."""
    lmax = int(lengths.max())
    order = np.lexsort((np.arange(lengths.size), lengths))
    ls = lengths[order]
    span = np.left_shift(np.int64(1), lmax - ls)
    starts = np.cumsum(span) - span
    return order, ls, starts


def _kraft_ok(lengths: np.ndarray) -> bool:
    lmax = int(lengths.max())
    return int(np.left_shift(np.int64(1), lmax - lengths).sum()) == (1 << lmax)


class HuffmanCoder(DenseCoder):
    name = "huffman"

    def __init__(self, max_length: int = 15, block_size: int | None = None) -> None:
        if not 1 <= max_length <= MAX_CODE_LEN:
            raise ValueError(f"max_length must be in [1, {MAX_CODE_LEN}]")
        self.max_length = max_length
        self.block_size = block_size

    def encode_body(self, prep: Prepared) -> tuple[bytes, int, dict]:
        a, n = prep.alphabet_size, prep.n
        need = (a - 1).bit_length()  # ceil(log2 a): shorter limits cannot hold a codes
        limit = self.max_length if need <= self.max_length else min(need + 1, MAX_CODE_LEN)
        lengths = package_merge(prep.counts, limit)
        order, ls, starts = canonical(lengths)
        lmax = int(ls[-1])
        codes = np.empty(a, dtype=np.int64)
        codes[order] = starts >> (lmax - ls)
        table = _write_lengths(lengths)
        bs = min(self.block_size or default_block_size(n), n, max_block_size(n))
        sym_len = lengths[prep.dense]
        block_bits = np.add.reduceat(sym_len, np.arange(0, n, bs))
        side = table + uvarint(bs) + uvarints(block_bits)
        stream = pack_fields(codes[prep.dense], sym_len)
        stats = {"max_code_len": lmax, "blocks": int(block_bits.size), "table_bytes": len(table)}
        return side + stream, len(side), stats

    def decode_body(self, r: Reader, n: int, alpha: Alphabet) -> np.ndarray:
        a = alpha.size
        lengths = _read_lengths(r, a)
        order, ls, starts = canonical(lengths)
        lmax = int(ls[-1])
        bs, nblocks = read_blocks(r, n, "huffman", max_block_size(n))
        block_bits = r.uvarints(nblocks, "huffman block bit lengths").astype(np.int64)
        block_syms = np.full(nblocks, bs, dtype=np.int64)
        block_syms[-1] = n - bs * (nblocks - 1)
        if np.any(block_bits < block_syms) or np.any(block_bits > block_syms * lmax):
            raise r.fail("huffman block bit length impossible for its symbol count")
        total_bits = int(block_bits.sum())
        stream = r.take((total_bits + 7) // 8, "huffman bitstream")
        if not padding_is_zero(stream, total_bits):
            raise r.fail("huffman padding bits not zero")
        if (1 << lmax) <= max(_TABLE_MIN, _TABLE_PER_SYMBOL * a):
            tab_sym = np.repeat(order.astype(np.int32), np.left_shift(1, lmax - ls))
            tab_len = np.repeat(ls.astype(np.uint64), np.left_shift(1, lmax - ls))
        else:
            tab_sym = tab_len = None
        starts_bits = np.cumsum(block_bits) - block_bits
        canon = (order.astype(np.int32), ls.astype(np.uint64), starts.astype(np.uint64))
        dense, consumed = _decode_lanes(
            stream, starts_bits, bs, int(block_syms[-1]), lmax, tab_sym, tab_len, canon
        )
        if np.any(consumed != block_bits):
            raise r.fail("huffman block does not end where its bit length says")
        return alpha.take(dense[:n])


def _write_lengths(lengths: np.ndarray) -> bytes:
    raw = encode_small(lengths)
    d = np.diff(lengths, prepend=0)
    delta = encode_small(np.where(d >= 0, 2 * d, -2 * d - 1))
    return bytes([0]) + raw if len(raw) <= len(delta) else bytes([1]) + delta


def _read_lengths(r: Reader, a: int) -> np.ndarray:
    mode = r.u8("huffman length mode")
    if mode not in (0, 1):
        raise r.fail(f"unknown huffman length mode {mode}")
    vals = decode_small(r, a, "huffman code lengths")
    lengths = np.cumsum(np.where(vals % 2 == 0, vals >> 1, -((vals + 1) >> 1))) if mode else vals
    if lengths.min() < 1 or lengths.max() > MAX_CODE_LEN:
        raise r.fail(f"huffman code length outside [1, {MAX_CODE_LEN}]")
    if not _kraft_ok(lengths):
        raise r.fail("huffman code lengths violate the Kraft equality")
    return lengths


def _decode_lanes(stream, starts_bits, bs, last_len, lmax, tab_sym, tab_len, canon):
    """Decode all blocks in lockstep; returns (dense symbols, bits consumed per block)."""
    nblocks = starts_bits.size
    windows = window_view(stream).astype(np.uint64)
    pos = starts_bits.astype(np.uint64)
    out = np.empty((bs, nblocks), dtype=np.int32)
    shift = np.uint64(64 - lmax)
    seven, three = np.uint64(7), np.uint64(3)
    lanes = nblocks
    p, wbuf, sbuf = pos, np.empty(lanes, np.uint64), np.empty(lanes, np.uint64)
    order, ls, starts = canon
    for i in range(bs):
        if i == last_len and lanes == nblocks and last_len < bs:
            lanes -= 1  # the last block is short: stop advancing it
            p, wbuf, sbuf = pos[:lanes], wbuf[:lanes], sbuf[:lanes]
        np.right_shift(p, three, out=sbuf)
        np.take(windows, sbuf, mode="clip", out=wbuf)
        np.bitwise_and(p, seven, out=sbuf)
        np.left_shift(wbuf, sbuf, out=wbuf)
        np.right_shift(wbuf, shift, out=wbuf)
        if tab_sym is not None:
            np.take(tab_sym, wbuf, out=out[i, :lanes])
            np.take(tab_len, wbuf, out=sbuf)
        else:
            k = np.searchsorted(starts, wbuf, side="right") - 1
            out[i, :lanes] = order[k]
            np.take(ls, k, out=sbuf)
        np.add(p, sbuf, out=p)
    consumed = pos.astype(np.int64) - starts_bits
    return out.T.reshape(-1), consumed
