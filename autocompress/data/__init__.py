"""Data sets (CIFAR-10/100 pickle layout, synthetic for tests), splits and device batching."""

from __future__ import annotations

from autocompress.data._cifar import CifarArrays, dataset_names, load_cifar, prepare_splits
from autocompress.data._loader import CROP_PADDING, DeviceLoader, crop_flip
from autocompress.data._split import stratified_split
from autocompress.data._synthetic import write_synthetic_cifar
from autocompress.data._tensorset import DataSplits, TensorSet

__all__ = [
    "CROP_PADDING",
    "CifarArrays",
    "DataSplits",
    "DeviceLoader",
    "TensorSet",
    "crop_flip",
    "dataset_names",
    "load_cifar",
    "prepare_splits",
    "stratified_split",
    "write_synthetic_cifar",
]
