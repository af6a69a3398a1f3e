"""Deterministic stratified train/validation split."""

from __future__ import annotations

import torch
from torch import Tensor

from autocompress.errors import DataError


def stratified_split(labels: Tensor, val_size: int = 5000, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Return sorted int64 ``(train_idx, val_idx)`` that partition ``range(len(labels))``.

    Each class gives ``val_size // num_classes`` validation examples (``num_classes`` = the
    distinct labels present); the remaining ``val_size % num_classes`` go one each to the
    classes with the lowest label values. Which examples of a class are picked depends only on
    ``seed``.
    """
    labels = labels.reshape(-1).to("cpu", torch.int64)
    classes = torch.unique(labels)
    if not 0 <= val_size < len(labels):
        raise DataError(f"val_size must be in [0, {len(labels)}) for {len(labels)} examples, got {val_size}")
    quotas = _class_quotas(len(classes), val_size)
    generator = torch.Generator().manual_seed(seed)
    val_parts: list[Tensor] = []
    for label, quota in zip(classes.tolist(), quotas):
        members = torch.nonzero(labels == label).flatten()
        if quota > len(members):
            raise DataError(
                f"class {label} has {len(members)} examples but the split needs {quota} of them for "
                f"validation; use a smaller val_size than {val_size}"
            )
        val_parts.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    if val_parts:
        is_val[torch.cat(val_parts)] = True
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()


def _class_quotas(num_classes: int, val_size: int) -> list[int]:
    base, remainder = divmod(val_size, num_classes)
    return [base + (1 if index < remainder else 0) for index in range(num_classes)]
