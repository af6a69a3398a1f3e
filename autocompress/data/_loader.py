"""Device-resident batching with whole-batch augmentation (no DataLoader, no per-image Python)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from autocompress.data._tensorset import TensorSet
from autocompress.errors import DataError

CROP_PADDING = 4


class DeviceLoader:
    """Batches of ``(float images in [0, 1], int64 labels)`` on ``device``.

    The uint8 images are moved to ``device`` once. Epoch ``e`` draws its order and its
    augmentation from a generator seeded with ``seed + e``, so any epoch can be replayed
    exactly with :meth:`iter_epoch`; plain ``iter(loader)`` runs epoch ``loader.epoch`` and then
    advances that counter (set it to resume). Augmentation is a random crop with 4-pixel zero
    padding and a random horizontal flip, both done on the whole batch with tensor ops.
    """

    def __init__(
        self,
        tensor_set: TensorSet,
        *,
        batch_size: int,
        device: torch.device | str,
        augment: bool,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        if len(tensor_set) == 0:
            raise DataError("cannot batch an empty image set; check the split sizes")
        self.device = torch.device(device)
        self.images = tensor_set.images.to(self.device)
        self.labels = tensor_set.labels.to(self.device)
        self.batch_size = batch_size
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.epoch = 0

    def __len__(self) -> int:
        count = len(self.labels) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        return self.iter_epoch(epoch)

    def iter_epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of epoch ``epoch`` (same ``seed`` and ``epoch`` give the same batches)."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        count = len(self.labels)
        order = torch.randperm(count, generator=generator).to(self.device) if self.shuffle else None
        augmentation = self._draw_augmentation(generator, count) if self.augment else None
        for batch in range(len(self)):
            start, stop = batch * self.batch_size, min((batch + 1) * self.batch_size, count)
            index = order[start:stop] if order is not None else slice(start, stop)
            images = self.images[index]
            if augmentation is not None:
                offsets, flips = augmentation
                images = crop_flip(images, offsets[start:stop], flips[start:stop])
            yield self._to_float(images), self.labels[index]

    def _draw_augmentation(self, generator: torch.Generator, count: int) -> tuple[Tensor, Tensor]:
        """Crop offsets ``[count, 2]`` and flip flags ``[count]`` for a whole epoch, on the device."""
        offsets = torch.randint(0, 2 * CROP_PADDING + 1, (count, 2), generator=generator)
        flips = torch.rand(count, generator=generator) < 0.5
        return offsets.to(self.device), flips.to(self.device)

    def _to_float(self, images: Tensor) -> Tensor:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return images.to(dtype=torch.float32, memory_format=memory_format).div_(255.0)


def crop_flip(images: Tensor, offsets: Tensor, flips: Tensor, padding: int = CROP_PADDING) -> Tensor:
    """Crop each image of ``images`` ``[B, C, H, W]`` from its zero-padded version, then flip.

    ``offsets[b] = (dy, dx)`` in ``[0, 2 * padding]`` is the top-left corner of image ``b``'s
    window in the padded image (``(padding, padding)`` = no shift); ``flips[b]`` (bool) mirrors
    it left-right. Works on any dtype; done with two gathers, no per-image loop.
    """
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, 0:1] + torch.arange(height, device=images.device)
    cols = offsets[:, 1:2] + torch.arange(width, device=images.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    row_index = rows[:, None, :, None].expand(batch, channels, height, width + 2 * padding)
    cropped_rows = padded.gather(2, row_index)
    col_index = cols[:, None, None, :].expand(batch, channels, height, width)
    return cropped_rows.gather(3, col_index)
