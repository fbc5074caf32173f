"""A low-rank factorized embedding table (ALBERT's factorized embedding parametrization): the
[tokens, width] table E ≈ A·B, a [tokens, rank] table A looked up per token and a
[rank, width] projection B, stored as ``first`` (an nn.Embedding) and ``second`` (an nn.Linear
without bias), so the quantize stage treats A as an embedding table (a scale per token) and B as
a factor."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import registered_module
from ..tensor.svd import svd_factors
from .execution import FactorizedModule
from .svd import check_rank


@registered_module("LowRankEmbedding")
class LowRankEmbedding(FactorizedModule):
    """y = second(first(ids)); the dense table is ``first.weight @ second.weight.T``. Dense
    execution looks tokens up in that table (rebuilt once and cached in eval mode)."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        rank: int,
        padding_idx: int | None = None,
        execution: str = "factorized",
    ) -> None:
        super().__init__(execution)
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.rank = check_rank(rank, min(num_embeddings, embedding_dim), "LowRankEmbedding")
        self.first = nn.Embedding(num_embeddings, rank, padding_idx=padding_idx)
        self.second = nn.Linear(rank, embedding_dim, bias=False)
        self.padding_idx = self.first.padding_idx

    @classmethod
    def from_embedding(cls, table: nn.Embedding, rank: int) -> LowRankEmbedding:
        """``table`` truncated to ``rank`` by SVD (√S in each factor, so both quantize alike)."""
        weight = table.weight.detach()
        new = cls(table.num_embeddings, table.embedding_dim, rank, table.padding_idx)
        a, b = svd_factors(weight.cpu(), rank)  # weight ≈ a @ b
        with torch.no_grad():
            new.first.weight.copy_(a)
            new.second.weight.copy_(b.T)
        return new.to(device=weight.device, dtype=weight.dtype)

    def jc_config(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "rank": self.rank,
            "padding_idx": self.padding_idx,
            "execution": self.execution,
        }

    def reconstruct_weight(self) -> torch.Tensor:
        return self.first.weight @ self.second.weight.T

    def dense_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return F.embedding(x, weight, self.padding_idx)

    def forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))
