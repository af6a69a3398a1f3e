"""In-memory image sets: uint8 images and int64 labels, and the train/val/test splits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from autocompress.errors import DataError


@dataclass(frozen=True)
class TensorSet:
    """``images``: uint8 ``[N, 3, H, W]`` (0..255); ``labels``: int64 ``[N]``."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"images must be a uint8 tensor [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise DataError(f"labels must be an int64 tensor [N], got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels; they must match one to one")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Tensor) -> TensorSet:
        """The images and labels at ``indices`` (a copy)."""
        return TensorSet(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class DataSplits:
    """``train`` and ``val`` come from the training batches; ``test`` is for reporting only."""

    train: TensorSet
    val: TensorSet
    test: TensorSet
    num_classes: int
