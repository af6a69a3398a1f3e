"""CIFAR ResNet-18 as in kuangliu/pytorch-cifar (3x3 stem, no max-pool, 11,173,962 parameters)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from autocompress.models._normalize import CIFAR10_MEAN, CIFAR10_STD, Normalize
from autocompress.models._registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; a 1x1 conv + BN projection (``shortcut``) when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs in [0, 1]; four stages of two blocks (64/128/256/512 channels)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = _make_stage(64, 64, stride=1)
        self.layer2 = _make_stage(64, 128, stride=2)
        self.layer3 = _make_stage(128, 256, stride=2)
        self.layer4 = _make_stage(256, 512, stride=2)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _make_stage(in_channels: int, channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_channels, channels, stride), BasicBlock(channels, channels, 1))


@register_model
def resnet18(num_classes: int = 10) -> ResNet18:
    """CIFAR ResNet-18 (11.2 M parameters)."""
    return ResNet18(num_classes)
