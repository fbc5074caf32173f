"""Tunstall internals: the dictionary both sides rebuild, the parse, independent blocks."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jointcomp.codec import decode, encode
from jointcomp.codec.sidecode import quantize_counts
from jointcomp.codec.tunstall import _parse
from jointcomp.codec.tunstall_tree import _select_heap, _select_levels, build_tree, ranked


def test_hand_worked_dictionary_and_parse():
    # q = (3/4, 1/4), 4 codewords: a, b, aa (9/16), aaa (27/64); the tie {ab, ba} (3/16 each)
    # would need a fifth word, so it is left out whole.
    tree = build_tree(np.array([0.75, 0.25]), 2, 255)
    strings = []
    for node in tree.words:
        s, cur = "", int(node)
        while cur >= 0:
            s = "ab"[tree.rank[cur]] + s
            cur = int(tree.parent[cur])
        strings.append(s)
    assert strings == ["a", "b", "aa", "aaa"]
    counts, codes = _parse(np.array([0, 0, 0, 0, 1]), tree, 5)  # "aaaab" -> aaa | a | b
    assert counts.tolist() == [3]
    assert codes.tolist() == [3, 0, 1]


@settings(max_examples=120, deadline=None)
@given(
    freqs=st.lists(st.integers(1, 60), min_size=2, max_size=30),
    k=st.integers(2, 10),
    max_word=st.integers(1, 40),
)
def test_both_tree_searches_agree(freqs, k, max_word):
    if len(freqs) > 2**k:
        return
    _, qs = ranked(quantize_counts(np.array(freqs), 1 << 24), 24)
    fast = _select_levels(qs, 1 << k, max_word, rounds=64)
    exact = _select_heap(qs, 1 << k, max_word)
    words = np.bincount(exact[0][exact[0] >= 0], minlength=exact[0].size) < qs.size
    assert words.sum() <= 2**k
    if fast is not None:
        for a, b in zip(fast, exact):
            np.testing.assert_array_equal(a, b)


def test_blocks_are_parsed_independently():
    """Each block is parsed from the root: its codewords equal those of the block alone."""
    rng = np.random.default_rng(2)
    xr = np.minimum(rng.geometric(0.5, 2500) - 1, 7)
    _, qs = ranked(quantize_counts(np.bincount(xr), 1 << 24), 24)
    tree = build_tree(qs, 8, 255)  # symbols used as ranks directly: any labelling will do here
    counts, codes = _parse(xr, tree, 1000)
    assert counts.size == 3
    starts = np.cumsum(counts) - counts
    for j in range(3):
        alone_counts, alone = _parse(xr[j * 1000 : (j + 1) * 1000], tree, 1000)
        assert alone_counts.tolist() == [counts[j]]
        np.testing.assert_array_equal(alone, codes[starts[j] : starts[j] + counts[j]])
    enc = encode(xr.astype(np.int8), "tunstall", k=8, block_size=1000)
    assert enc.stats["blocks"] == 3
    np.testing.assert_array_equal(decode("tunstall", enc.data, {}, xr.size, "int8"), xr)


def test_skewed_and_tied_tables_use_the_exact_search():
    for q in (np.array([1 - 2.0**-20, 2.0**-20]), np.full(5, 0.2), np.array([0.99, 0.004, 0.006])):
        q = np.sort(q)[::-1]
        tree = build_tree(q, 12, 255)
        assert 0 < tree.words.size <= 4096
        exact = _select_heap(q, 4096, 255)
        np.testing.assert_array_equal(tree.parent, exact[0])
