"""Training-time augmentation of image batches: random translations and horizontal flips, drawn
per sample from a seeded generator, so a run is reproducible.

Written as batch tensor ops rather than torchvision transforms: those draw one set of random
parameters per call, and a call per sample costs more than the training step on small images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .specs import AugmentSpec


class Augmenter:
    """Applies ``spec`` to (N, C, H, W) batches (``fit`` checks the shape once); its generator is
    seeded once per training run."""

    def __init__(self, spec: AugmentSpec, seed: int) -> None:
        self.spec = spec
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.shift:
            x = shift_batch(x, self.spec.shift, self.generator)
        if self.spec.flip:
            x = flip_batch(x, self.generator)
        return x


def shift_batch(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own (dy, dx) in [-shift, shift]², filling the uncovered
    border by replicating the edge pixels (the background, on centred datasets) rather than
    zeros, which after normalization would be a value the images never hold."""
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator).to(x.device)
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # (n, h, w, c) by advanced indexing, back to (n, c, h, w)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def flip_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
