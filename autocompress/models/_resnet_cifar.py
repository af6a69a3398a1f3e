"""He et al. (2016) CIFAR ResNets with parameter-free "option A" shortcuts.

The module layout (and so the state-dict keys) matches akamaster/pytorch_resnet_cifar10, so
its pretrained checkpoints load as they are: ``conv1``, ``bn1``,
``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, ``linear``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from autocompress.models._normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize
from autocompress.models._registry import register_model


class PadShortcut(nn.Module):
    """Option A shortcut: keep every second pixel, zero-pad channels equally on both sides."""

    def __init__(self, out_channels: int, in_channels: int) -> None:
        super().__init__()
        extra = out_channels - in_channels
        self.pad_front = extra // 2
        self.pad_back = extra - extra // 2

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        return f"pad_channels=({self.pad_front}, {self.pad_back})"


class BasicBlockA(nn.Module):
    """Two 3x3 conv-BN layers and an identity or option A shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        needs_projection = stride != 1 or in_channels != channels
        self.shortcut: nn.Module = PadShortcut(channels, in_channels) if needs_projection else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs in [0, 1]: three stages of n blocks (16/32/64 channels)."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _make_stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = _make_stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = _make_stage(32, 64, blocks_per_stage, stride=2)
        self.linear = nn.Linear(64, num_classes)
        self.apply(_kaiming_init)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _make_stage(in_channels: int, channels: int, num_blocks: int, stride: int) -> nn.Sequential:
    blocks = [BasicBlockA(in_channels, channels, stride)]
    blocks += [BasicBlockA(channels, channels, 1) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def _kaiming_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)


@register_model
def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 (0.27 M parameters)."""
    return CifarResNet(3, num_classes)


@register_model
def resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet-32 (0.46 M parameters)."""
    return CifarResNet(5, num_classes)


@register_model
def resnet44(num_classes: int = 10) -> CifarResNet:
    """ResNet-44 (0.66 M parameters)."""
    return CifarResNet(7, num_classes)


@register_model
def resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet-56 (0.85 M parameters)."""
    return CifarResNet(9, num_classes)


@register_model
def resnet110(num_classes: int = 10) -> CifarResNet:
    """ResNet-110 (1.7 M parameters)."""
    return CifarResNet(18, num_classes)
