"""Tunstall (variable-to-fixed) coding with a vectorized decoder.

The dictionary (tunstall_tree.py) is rebuilt identically by both sides from the stored
frequency table: up to 2**k words of at most `max_word` symbols. Every single symbol is a word;
a node with only some of its children is itself a word (greedy longest-match parsing).

Body layout (after the alphabet section):
  frequency table; u8 k; u8 max_word; uvarint block size;
  one uvarint word count per block; all codewords, k bits each, MSB first, zero-padded.
Each block of `block size` symbols is parsed from the root on its own. A block's last word may
run past the block's end (the tree cannot stop inside a complete node): the symbol count tells
the decoder where to cut, so no escape code is needed.
"""

from __future__ import annotations

import numpy as np

from .alphabet import Alphabet, Prepared
from .base import Infeasible
from .bitio import Reader, pack_uniform, padding_is_zero, unpack_small, uvarint, uvarints
from .coder import DenseCoder, default_block_size, read_blocks
from .freqtable import MAX_PRECISION, make_table, read_table
from .tunstall_tree import Tree, build_tree, ranked, tail_words, word_strings

MAX_K = 16


class TunstallCoder(DenseCoder):
    name = "tunstall"

    def __init__(
        self,
        k: int = 12,
        block_size: int | None = None,
        max_word: int = 255,
        precision: int = MAX_PRECISION,
    ) -> None:
        if not 2 <= k <= MAX_K:
            raise ValueError(f"k must be in [2, {MAX_K}]")
        if not 1 <= max_word <= 255:
            raise ValueError("max_word must be in [1, 255]")
        self.k, self.block_size, self.max_word, self.precision = k, block_size, max_word, precision

    def encode_body(self, prep: Prepared) -> tuple[bytes, int, dict]:
        a, n = prep.alphabet_size, prep.n
        if a > (1 << self.k):
            raise Infeasible(f"tunstall: {a} symbols do not fit {self.k}-bit codewords")
        freqs, table = make_table(prep.counts, self.precision)
        rank_sym, qs = ranked(freqs, self.precision)
        try:
            tree = build_tree(qs, self.k, self.max_word)
        except ValueError as exc:  # dictionary too large for the decoder's bound
            raise Infeasible(f"tunstall: {exc}") from exc
        sym_rank = np.empty(a, dtype=np.int64)
        sym_rank[rank_sym] = np.arange(a)
        bs = min(self.block_size or default_block_size(n), n)
        counts, cws = _parse(sym_rank[prep.dense], tree, bs)
        side = table + bytes([self.k, self.max_word]) + uvarint(bs) + uvarints(counts)
        body = pack_uniform(cws, self.k)
        stats = {
            "k": self.k,
            "words": int(tree.words.size),
            "blocks": int(counts.size),
            "mean_word_len": n / max(int(cws.size), 1),
        }
        return side + body, len(side), stats

    def decode_body(self, r: Reader, n: int, alpha: Alphabet) -> np.ndarray:
        a = alpha.size
        freqs, precision = read_table(r, a)
        k, max_word = r.u8("tunstall k"), r.u8("tunstall max word")
        if not 2 <= k <= MAX_K or a > (1 << k) or max_word < 1:
            raise r.fail(f"tunstall k={k} / max word {max_word} invalid for {a} symbols")
        bs, nblocks = read_blocks(r, n, "tunstall")
        counts = r.uvarints(nblocks, "tunstall word counts").astype(np.int64)
        block_syms = np.full(nblocks, bs, dtype=np.int64)
        block_syms[-1] = n - bs * (nblocks - 1)
        if np.any(counts < 1) or np.any(counts > block_syms):
            raise r.fail("tunstall word count impossible for its block")
        nw = int(counts.sum())
        raw = r.take((nw * k + 7) // 8, "tunstall codewords")
        if not padding_is_zero(raw, nw * k):
            raise r.fail("tunstall padding bits not zero")
        cws = unpack_small(raw, nw, k)
        rank_sym, qs = ranked(freqs, precision)
        try:
            tree = build_tree(qs, k, max_word)  # bounded work and memory for any table
        except ValueError as exc:
            raise r.fail(str(exc)) from exc
        if int(cws.max()) >= tree.words.size:
            raise r.fail(f"codeword {int(cws.max())} beyond a {tree.words.size}-word dictionary")
        flat, wstart, wlen = word_strings(tree, rank_sym, alpha.values)
        take = wlen.astype(np.int32)[cws]
        first = np.cumsum(counts) - counts
        last = first + counts - 1
        got = np.add.reduceat(take, first, dtype=np.int64)
        before_last = got - take[last]
        if np.any(got < block_syms) or np.any(before_last >= block_syms):
            raise r.fail("tunstall block words do not cover exactly its symbols")
        take[last] = block_syms - before_last  # cut each block's last word at the block end
        return _expand(flat, wstart, cws, take, n)


def _expand(flat, wstart, cws, take, n):
    """Concatenate the first take[i] symbols of word cws[i]: one gather through an index ramp."""
    itype = np.int32 if max(n, flat.size) < (1 << 31) else np.int64
    out_start = np.cumsum(take, dtype=itype) - take
    idx = np.repeat(wstart.astype(itype)[cws] - out_start, take)
    idx += np.arange(n, dtype=itype)
    return flat[idx]


def _parse(xr: np.ndarray, tree: Tree, bs: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy longest-match parse of every block in lockstep; returns (words per block, codes).

    Row i of `emitted` holds, per block, the codeword finished just before symbol i (or -1).
    """
    n = xr.size
    nblocks = -(-n // bs)
    last_len = n - bs * (nblocks - 1)
    grid = np.zeros(nblocks * bs, dtype=np.int64)
    grid[:n] = xr
    grid = np.ascontiguousarray(grid.reshape(nblocks, bs).T)  # row i = symbol i of every block
    emitted = np.full((bs + 1, nblocks), -1, dtype=np.int64)
    nchild, first, code = tree.nchild, tree.first_child, tree.code
    tail = tail_words(tree)
    node = grid[0].copy()  # every single symbol is a depth-1 node, id = rank
    lanes = nblocks
    for i in range(1, bs):
        if i == last_len and last_len < bs:
            lanes -= 1  # the short last block ends here
            emitted[i, lanes] = tail[node[lanes]]
            node = node[:lanes]
        r = grid[i, :lanes]
        has = r < np.take(nchild, node)
        emitted[i, :lanes] = np.where(has, -1, np.take(code, node))
        node = np.where(has, np.take(first, node) + r, r)
    emitted[bs, :lanes] = tail[node]
    per_block = emitted.T
    keep = per_block >= 0
    return keep.sum(axis=1), per_block[keep]
