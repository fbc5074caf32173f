"""LeNet-300-100 and LeNet-5 (the Caffe variant), the MNIST networks of Deep Compression."""

from __future__ import annotations

import torch
from torch import nn


def image_hw(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Accept ``28`` or ``(28, 28)``; reject anything else with a ValueError."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        h = w = image_size
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        h, w = (int(v) for v in image_size)
    else:
        raise ValueError(f"image_size must be an int or an (H, W) pair, got {image_size!r}")
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return h, w


def check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class LeNet300(nn.Module):
    """LeNet-300-100: flatten → fc 300 → ReLU → fc 100 → ReLU → fc classes.

    266,610 parameters for 1×28×28 inputs and 10 classes.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int | tuple[int, int] = 28,
        hidden: tuple[int, int] | list[int] = (300, 100),
    ) -> None:
        super().__init__()
        h, w = image_hw(image_size)
        h1, h2 = (check_positive("hidden", int(v)) for v in hidden)
        self.fc1 = nn.Linear(check_positive("in_channels", in_channels) * h * w, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, check_positive("num_classes", num_classes))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5 as in Caffe's ``lenet.prototxt`` (the model Deep Compression prunes).

    conv 5×5-20 → maxpool 2 → conv 5×5-50 → maxpool 2 → fc 500 → ReLU → fc classes; no padding
    and, faithful to Caffe, no ReLU after the convolutions. 431,080 parameters at 1×28×28 and
    10 classes. ``image_size`` sets fc1's input size: ``50 * ((((s - 4) // 2) - 4) // 2) ** 2``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int | tuple[int, int] = 28,
    ) -> None:
        super().__init__()
        h, w = image_hw(image_size)
        fh, fw = (((s - 4) // 2 - 4) // 2 for s in (h, w))
        if fh <= 0 or fw <= 0:
            raise ValueError(
                f"lenet5 needs images of at least 12×12, got image_size={image_size!r}"
            )
        self.conv1 = nn.Conv2d(check_positive("in_channels", in_channels), 20, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(50 * fh * fw, 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, check_positive("num_classes", num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        # flatten, not view(-1, 800): channel pruning of conv2 changes the width.
        x = self.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)
