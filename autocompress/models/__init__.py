"""Model zoo (CIFAR ResNet-18, He et al. ResNet-20/32/44/56/110) and checkpoint files.

Every registered model takes images scaled to [0, 1] and normalises them itself.
"""

from __future__ import annotations

from autocompress.models import _resnet18, _resnet_cifar  # noqa: F401  (registers the models)
from autocompress.models._checkpoint import atomic_torch_save, load_checkpoint, save_checkpoint
from autocompress.models._normalize import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, Normalize
from autocompress.models._registry import build_model, list_models, register_model
from autocompress.models._resnet18 import ResNet18
from autocompress.models._resnet_cifar import CifarResNet

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CifarResNet",
    "Normalize",
    "ResNet18",
    "atomic_torch_save",
    "build_model",
    "list_models",
    "load_checkpoint",
    "register_model",
    "save_checkpoint",
]
