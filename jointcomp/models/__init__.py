"""The model zoo and the resolver of builder strings: zoo:NAME, torchvision:NAME, pkg.mod:fn."""

from .lenet import LeNet5, LeNet300
from .resnet_cifar import ResNetCIFAR, resnet20, resnet32, resnet56
from .resolve import ZOO, build_model, builder_reference, data_kwargs, is_allowed_builder, list_zoo
from .small_cnn import SmallCNN
from .vit import ViT

__all__ = [
    "ZOO",
    "LeNet5",
    "LeNet300",
    "ResNetCIFAR",
    "SmallCNN",
    "ViT",
    "build_model",
    "builder_reference",
    "data_kwargs",
    "is_allowed_builder",
    "list_zoo",
    "resnet20",
    "resnet32",
    "resnet56",
]
