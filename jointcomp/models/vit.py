"""A small Vision Transformer (Dosovitskiy et al., 2021) sized for CPU training on 28×28/32×32.

Layers are plain ``nn.Linear``/``nn.Conv2d``/``nn.LayerNorm`` so that low-rank and pruning
stages see them. The attention forward derives its head size from ``qkv.out_features`` and
``num_heads`` rather than from the constructor, so pruning whole heads (and updating
``num_heads``) or replacing ``qkv`` by a factorized layer keeps the module runnable.
"""

from __future__ import annotations

import torch
from torch import nn

from .lenet import check_positive, image_hw


class Attention(nn.Module):
    """Multi-head self-attention: ``qkv`` (dim → 3·inner) and ``proj`` (inner → dim)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({num_heads})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        inner = self.qkv.out_features // 3
        head_dim = inner // self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, N, head_dim]
        # Explicit matmuls rather than F.scaled_dot_product_attention: torch's flop counter
        # does not count the CPU SDPA kernel, and the audit reports MACs.
        weights = ((q * head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = weights @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, inner))


class MLP(nn.Module):
    """fc1 → GELU → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch-embedding conv → [cls] + learned position embedding → ``depth`` pre-norm blocks →
    LayerNorm → linear head on the [cls] token.

    Defaults (28×28×1, patch 4, dim 64, depth 4, heads 4, mlp_ratio 2) give 50 tokens and
    139,018 parameters. ``image_size`` must be divisible by ``patch_size``; the position
    embedding fixes the input size.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 28,
        patch_size: int = 4,
        in_channels: int = 1,
        num_classes: int = 10,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        h, w = image_hw(image_size)
        p = check_positive("patch_size", patch_size)
        if h % p or w % p:
            raise ValueError(f"image_size {image_size!r} must be divisible by patch_size {p}")
        for name, v in (("dim", dim), ("depth", depth), ("heads", heads)):
            check_positive(name, v)
        if not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
        num_patches = (h // p) * (w // p)
        self.patch_embed = nn.Conv2d(check_positive("in_channels", in_channels), dim, p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(
            *(Block(dim, heads, max(1, round(dim * mlp_ratio))) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, check_positive("num_classes", num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # The usual ViT init (truncated normal, std 0.02); it trains more stably than
        # PyTorch's default Linear init at this depth.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, dim]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])
