"""The model zoo and the resolver of builder strings: zoo:NAME, torchvision:NAME, timm:NAME,
Hugging Face folders (hf:DIR, sentence-transformers:DIR) and their portable forms, pkg.mod:fn."""

from .lenet import LeNet5, LeNet300
from .resnet_cifar import ResNetCIFAR, resnet20, resnet32, resnet56
from .resolve import (
    ZOO,
    build_model,
    builder_reference,
    data_kwargs,
    file_builder,
    is_allowed_builder,
    list_zoo,
)
from .sentence import SentenceEmbedder
from .small_cnn import SmallCNN
from .vit import ViT

__all__ = [
    "ZOO",
    "LeNet5",
    "LeNet300",
    "ResNetCIFAR",
    "SentenceEmbedder",
    "SmallCNN",
    "ViT",
    "build_model",
    "builder_reference",
    "data_kwargs",
    "file_builder",
    "is_allowed_builder",
    "list_zoo",
    "resnet20",
    "resnet32",
    "resnet56",
]
