"""Weight sharing (Deep Compression, Han et al. 2016): one k-means codebook per tensor with
2^bits entries, linearly initialized over [min, max] (the init Han et al. found best: it keeps
the rare large weights, which matter most, as centroids). Zeros of a pruned tensor keep a pinned
centroid 0 at index 0; the indices are what the file codes."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..nn.quantized import Codebook


def kmeans_codebook(
    x: torch.Tensor, bits: int, *, pin_zero: bool, seed: int = 0, max_iter: int = 100
) -> Codebook:
    """A Codebook of at most 2^bits entries that reproduces ``x`` with the least squared error
    k-means finds from a linear init. ``pin_zero``: exact zeros map to index 0, fixed at 0."""
    from sklearn.cluster import KMeans

    if not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"codebook bits must be an int in 1..16, got {bits!r}")
    if x.numel() == 0:
        raise ValueError("cannot cluster an empty tensor")
    flat = x.detach().to("cpu", torch.float64).reshape(-1).numpy()
    size = 1 << bits
    free = flat != 0 if pin_zero else np.ones(flat.shape, dtype=bool)
    values = flat[free]
    k = size - 1 if pin_zero else size
    indices = np.zeros(flat.shape, dtype=np.int64)
    distinct = np.unique(values)
    if pin_zero and k < 1:
        raise ValueError("a pinned zero needs at least 2 codebook entries (bits >= 1)")
    if distinct.size == 0:
        centroids = np.zeros(0)
    elif distinct.size <= k:
        centroids = distinct  # every value is its own centroid: exact
        labels = np.searchsorted(distinct, values)
    else:
        init = np.linspace(values.min(), values.max(), k).reshape(-1, 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate-centroid warnings on tiny tensors
            km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=max_iter, random_state=seed)
            labels = km.fit_predict(values.reshape(-1, 1))
        centroids = km.cluster_centers_.reshape(-1)
    offset = 1 if pin_zero else 0
    if values.size:
        indices[free] = labels + offset
    table = np.concatenate([[0.0], centroids]) if pin_zero else centroids
    if table.size == 0:
        table = np.zeros(1)
    return Codebook.from_assignment(
        torch.from_numpy(indices).reshape(x.shape),
        torch.from_numpy(table).to(torch.float32),
        zero_index=0 if pin_zero else None,
    )
