"""The Tunstall dictionary: a parse tree both encoder and decoder rebuild from the frequencies.

Symbols are ranked by frequency (descending, ties by dense index); q_r = f_r / 2**precision.
A node is a string of ranks; its probability is the float64 product of its q's, left to right.
The tree holds every string of length 1 and every string of length 2..max_word whose
probability is >= tau, for the smallest tau at which the number of codewords stays <= 2**k.
A codeword ("word") is a node lacking at least one child; a node with all A children is never
emitted. A group of equal probabilities that would overflow 2**k is left out whole, so the
result needs no tie-breaking rule. Codeword c is the c-th word in (length, lexicographic) order.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

FLAT_CAP = 1 << 22  # total symbols over all dictionary words: bounds the decoder's memory
_TINY = 2.0**-900  # below this, products could turn subnormal; never generate such nodes


@dataclass
class Tree:
    nchild: np.ndarray  # int64, children present per node (a rank prefix)
    first_child: np.ndarray  # int64, id of the rank-0 child (or -1)
    parent: np.ndarray  # int64, -1 for depth-1 nodes
    rank: np.ndarray  # int64, rank of the node's last symbol
    depth: np.ndarray  # int64
    words: np.ndarray  # node ids of the codewords, codeword c is node words[c]
    code: np.ndarray  # codeword of each node, -1 for complete (non-word) nodes


def _generate(qs: np.ndarray, t: float, max_word: int, cap: int) -> tuple[dict, bool] | None:
    """All nodes with probability >= t (depth-1 nodes always), level by level.

    Returns (nodes, pruned) -- pruned: some node was left out only because of t -- or None
    when more than `cap` nodes would be generated.
    """
    a = qs.size
    t = max(t, _TINY)
    levels_p, levels_par, levels_rank = [qs], [np.full(a, -1, np.int64)], [np.arange(a)]
    pruned = False
    base, total = 0, a
    cur, neg_qs = qs, -qs
    for _ in range(1, max_word):
        # Children of each node with q >= t / P, plus one to absorb rounding in t / P (all
        # nodes kept so far have P >= t > 0, so the division is safe).
        c = np.searchsorted(neg_qs, -(t / cur), side="right")
        c += 1
        np.minimum(c, a, out=c)
        tot = int(c.sum())
        if total + tot > cap:
            return None
        par_local = np.repeat(np.arange(cur.size), c)
        r = np.arange(tot) - np.repeat(np.cumsum(c) - c, c)
        p = cur[par_local] * qs[r]
        keep = p >= t  # a prefix of each parent's candidates: products are monotone in q
        if tot < a * cur.size or not keep.all():
            pruned = True
            p, par_local, r = p[keep], par_local[keep], r[keep]
        if p.size == 0:
            break
        levels_p.append(p)
        levels_par.append(par_local + base)
        levels_rank.append(r)
        base += cur.size
        cur = p
        total += cur.size
    depth = np.concatenate([np.full(lv.size, d + 1) for d, lv in enumerate(levels_p)])
    nodes = {
        "p": np.concatenate(levels_p),
        "parent": np.concatenate(levels_par),
        "rank": np.concatenate(levels_rank),
        "depth": depth,
    }
    return nodes, pruned and t > _TINY


def _threshold(nodes: dict, a: int, d: int) -> tuple[float, bool]:
    """Smallest generated probability tau with words({P >= tau}) <= d, and whether every
    generated node fits (then a lower threshold might fit too)."""
    deep = nodes["depth"] > 1
    p = nodes["p"][deep]
    if p.size == 0:
        return np.inf, True
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    completes = np.cumsum(nodes["rank"][deep][order] == a - 1)
    # words after including every node down to index i: A + (i + 1) - completes[i]
    group_end = np.flatnonzero(np.append(ps[1:] != ps[:-1], True))  # last index of each value
    words = a + group_end + 1 - completes[group_end]
    fit = int(np.searchsorted(words, d, side="right"))  # words is non-decreasing
    if fit == 0:
        return np.inf, False
    return float(ps[group_end[fit - 1]]), fit == group_end.size


def _select_levels(qs: np.ndarray, d: int, max_word: int, rounds: int = 4):
    """Fast path: generate all nodes above a threshold level by level and cut at tau.

    Returns (parent, rank, depth) of the tree, or None when a few threshold guesses do not
    bracket tau (very skewed or tie-heavy tables; the heap search below handles those).
    """
    a = qs.size
    cap = 8 * d + 2 * a
    t = 1.0 / (2 * d)
    for _ in range(rounds):
        gen = _generate(qs, t, max_word, cap)
        if gen is None:
            return None
        nodes, pruned = gen
        tau, all_fit = _threshold(nodes, a, d)
        if not (all_fit and pruned):
            sel = (nodes["depth"] == 1) | (nodes["p"] >= tau)
            new_id = np.cumsum(sel) - 1
            parent = nodes["parent"][sel]
            parent = np.where(parent >= 0, new_id[np.maximum(parent, 0)], -1)
            return parent, nodes["rank"][sel], nodes["depth"][sel]
        t /= 4.0  # everything generated fits: look lower
    return None


def _select_heap(qs: np.ndarray, d: int, max_word: int):
    """Exact search in decreasing probability with a heap: O(2**k log 2**k), any depth.

    Same result as _select_levels: whole groups of equal probability are added while the word
    count stays <= d. A node's next sibling has the same probability only if its q is equal,
    so a group is completed by following equal-q siblings before it is judged.
    """
    a = qs.size
    q = qs.tolist()
    parent, rank, depth, prob = [-1] * a, list(range(a)), [1] * a, list(q)
    # Entries (-P, parent id, rank); the order inside a group of equal P does not matter.
    heap: list[tuple[float, int, int]] = []
    hpush, hpop = heapq.heappush, heapq.heappop
    if max_word > 1:
        for u in range(a):
            if q[u] * q[0] >= _TINY:
                hpush(heap, (-(q[u] * q[0]), u, 0))
    words = a
    while heap:
        top = heap[0][0]
        group, delta = [], 0
        while heap and heap[0][0] == top:
            _, par, r = hpop(heap)
            group.append((par, r))
            delta += r != a - 1  # adding the last child completes the parent: no new word
            j = r + 1
            while j < a and q[j] == q[r] and words + delta <= d:
                group.append((par, j))
                delta += j != a - 1
                j += 1
            if words + delta > d:
                break
            if j < a and prob[par] * q[j] >= _TINY:
                hpush(heap, (-(prob[par] * q[j]), par, j))
        if words + delta > d:
            break
        words += delta
        for par, r in group:
            parent.append(par)
            rank.append(r)
            dep = depth[par] + 1
            depth.append(dep)
            prob.append(-top)
            if dep < max_word and -top * q[0] >= _TINY:
                hpush(heap, (top * q[0], len(prob) - 1, 0))
    parent_a, rank_a, depth_a = (np.array(v, dtype=np.int64) for v in (parent, rank, depth))
    # Renumber in (depth, lexicographic) order: level by level, by parent order then rank.
    new_id = np.empty(parent_a.size, dtype=np.int64)
    next_id = 0
    for lv in range(1, int(depth_a.max()) + 1):
        ids = np.flatnonzero(depth_a == lv)
        key_parent = np.where(parent_a[ids] >= 0, new_id[np.maximum(parent_a[ids], 0)], -1)
        ids = ids[np.lexsort((rank_a[ids], key_parent))]
        new_id[ids] = np.arange(next_id, next_id + ids.size)
        next_id += ids.size
    order = np.argsort(new_id)
    par = parent_a[order]
    par = np.where(par >= 0, new_id[np.maximum(par, 0)], -1)
    return par, rank_a[order], depth_a[order]


def build_tree(qs: np.ndarray, k: int, max_word: int) -> Tree:
    """Tunstall tree for ranked probabilities qs (descending) with <= 2**k codewords.

    The tree is every node with probability >= tau for the smallest tau at which the words
    still fit: a group of equal probabilities straddling the limit is left out whole, so the
    result needs no tie-breaking rule and both search strategies agree exactly.
    """
    a = qs.size
    d = 1 << k
    if a > d:
        raise ValueError(f"{a} symbols do not fit {k}-bit codewords")
    sel = _select_levels(qs, d, max_word)
    parent, rank, depth = sel if sel is not None else _select_heap(qs, d, max_word)
    size = parent.size
    has_parent = parent >= 0
    nchild = np.bincount(parent[has_parent], minlength=size).astype(np.int64)
    first_child = np.full(size, -1, dtype=np.int64)
    ids = np.arange(size)
    zero = has_parent & (rank == 0)
    first_child[parent[zero]] = ids[zero]
    words = np.flatnonzero(nchild < a)
    if int(depth[words].sum()) > FLAT_CAP:
        raise ValueError(
            f"tunstall dictionary would hold over {FLAT_CAP} symbols; lower k or max_word"
        )
    code = np.full(size, -1, dtype=np.int64)
    code[words] = np.arange(words.size)
    return Tree(nchild, first_child, parent, rank, depth, words, code)


def ranked(freqs: np.ndarray, precision: int) -> tuple[np.ndarray, np.ndarray]:
    """(dense symbol of each rank, probability of each rank), most probable first."""
    order = np.argsort(-freqs, kind="stable")
    return order, freqs[order].astype(np.float64) / float(1 << precision)


def word_strings(tree: Tree, rank_sym: np.ndarray, values: np.ndarray):
    """Flat dictionary of every codeword's symbols (as `values`), with each word's start."""
    lens = tree.depth[tree.words]
    starts = np.cumsum(lens) - lens
    flat = np.empty(int(lens.sum()), dtype=values.dtype)
    cur = tree.words.copy()
    pos = starts + lens - 1
    while cur.size:
        flat[pos] = values[rank_sym[tree.rank[cur]]]
        cur = tree.parent[cur]
        live = cur >= 0
        cur, pos = cur[live], pos[live] - 1
    return flat, starts, lens


def tail_words(tree: Tree) -> np.ndarray:
    """Codeword to emit when a block ends at each node: the node, or its rank-0 descendant word."""
    cur = np.arange(tree.code.size)
    while True:
        inner = tree.code[cur] < 0
        if not inner.any():
            return tree.code[cur]
        cur[inner] = tree.first_child[cur[inner]]
