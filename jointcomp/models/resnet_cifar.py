"""CIFAR-style ResNets (He et al., 2016, §4.2): ResNet-20/32/56 = 6n + 2 layers.

A 3×3 stem conv, then three stages of ``n`` basic blocks with 16/32/64 channels (times
``width``); the first block of stages 2 and 3 halves the resolution. Shortcuts use **option B**:
a 1×1 conv + BatchNorm projection wherever the shape changes, identity elsewhere. Option A
(zero-padded identity) hard-codes channel counts in the forward pass, which structured channel
pruning cannot follow; option B keeps every channel count in a module's weight.
"""

from __future__ import annotations

import torch
from torch import nn

from .lenet import check_positive, image_hw


class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN, plus the shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """A ResNet of ``depth = 6n + 2`` layers for small images (28×28 or 32×32 and up).

    ``image_size`` is accepted for a uniform zoo signature: the global average pool makes the
    network work for any size of at least 4×4.
    """

    def __init__(
        self,
        depth: int = 20,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int | tuple[int, int] = 32,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 56, ...), got {depth!r}")
        if min(image_hw(image_size)) < 4:
            raise ValueError(f"resnet needs images of at least 4×4, got {image_size!r}")
        if not isinstance(width, (int, float)) or width <= 0:
            raise ValueError(f"width must be a positive number, got {width!r}")
        n = (depth - 2) // 6
        c1, c2, c3 = (max(1, round(c * width)) for c in (16, 32, 64))
        self.conv1 = nn.Conv2d(
            check_positive("in_channels", in_channels), c1, 3, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(c1, c1, n, stride=1)
        self.layer2 = self._stage(c1, c2, n, stride=2)
        self.layer3 = self._stage(c2, c3, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c3, check_positive("num_classes", num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(cin: int, cout: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(cin, cout, stride)]
        blocks += [BasicBlock(cout, cout) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet20(
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int | tuple[int, int] = 32,
    width: float = 1.0,
) -> ResNetCIFAR:
    """ResNet-20 (n = 3), option-B shortcuts: 272,474 parameters at 3×32×32, 10 classes."""
    return ResNetCIFAR(20, in_channels, num_classes, image_size, width)


def resnet32(
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int | tuple[int, int] = 32,
    width: float = 1.0,
) -> ResNetCIFAR:
    """ResNet-32 (n = 5), option-B shortcuts: 466,906 parameters at 3×32×32, 10 classes."""
    return ResNetCIFAR(32, in_channels, num_classes, image_size, width)


def resnet56(
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int | tuple[int, int] = 32,
    width: float = 1.0,
) -> ResNetCIFAR:
    """ResNet-56 (n = 9), option-B shortcuts: 855,770 parameters at 3×32×32, 10 classes."""
    return ResNetCIFAR(56, in_channels, num_classes, image_size, width)
