"""CIFAR-10/100 in the official python-pickle layout: read it, download it when online."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from autocompress.data._split import stratified_split
from autocompress.data._tensorset import DataSplits, TensorSet
from autocompress.errors import DataError


@dataclass(frozen=True)
class _Layout:
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    url: str


_LAYOUTS: dict[str, _Layout] = {
    "cifar10": _Layout(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "cifar100": _Layout(
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
}


@dataclass(frozen=True)
class CifarArrays:
    """A whole CIFAR data set in memory: uint8 images ``[N, 3, 32, 32]``, int64 labels ``[N]``."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    class_names: list[str]


def dataset_names() -> list[str]:
    """The data set names :func:`load_cifar` accepts."""
    return sorted(_LAYOUTS)


def load_cifar(name: str, data_dir: str | Path, *, download: bool = True) -> CifarArrays:
    """Read CIFAR-10 (``"cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels) from ``data_dir``.

    ``data_dir`` is either the folder holding ``cifar-10-batches-py/`` (``cifar-100-python/``)
    or that folder itself. When the files are absent and ``download`` is true, the official
    archive is downloaded into ``data_dir`` first.
    """
    layout = _layout_for(name)
    folder = _find_folder(layout, Path(data_dir))
    if folder is None:
        folder = _download(name, layout, Path(data_dir)) if download else None
    if folder is None:
        raise DataError(_missing_message(name, layout, Path(data_dir), reason="download=False"))
    train_images, train_labels = _read_batches(folder, layout, layout.train_files)
    test_images, test_labels = _read_batches(folder, layout, (layout.test_file,))
    class_names = _read_class_names(folder, layout)
    num_classes = len(class_names)
    observed = int(max(train_labels.max(), test_labels.max())) + 1
    if observed > num_classes:
        raise DataError(f"{folder} has label {observed - 1} but only {num_classes} class names; the files are malformed")
    return CifarArrays(train_images, train_labels, test_images, test_labels, num_classes, class_names)


def prepare_splits(
    name: str,
    data_dir: str | Path,
    *,
    val_size: int = 5000,
    split_seed: int = 0,
    download: bool = True,
) -> DataSplits:
    """Load a data set and carve a stratified validation split out of its training images."""
    arrays = load_cifar(name, data_dir, download=download)
    train_idx, val_idx = stratified_split(arrays.train_labels, val_size, split_seed)
    full_train = TensorSet(arrays.train_images, arrays.train_labels)
    return DataSplits(
        train=full_train.subset(train_idx),
        val=full_train.subset(val_idx),
        test=TensorSet(arrays.test_images, arrays.test_labels),
        num_classes=arrays.num_classes,
    )


def _layout_for(name: str) -> _Layout:
    key = name.strip().lower().replace("-", "")
    if key not in _LAYOUTS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(dataset_names())}")
    return _LAYOUTS[key]


def _find_folder(layout: _Layout, data_dir: Path) -> Path | None:
    for candidate in (data_dir / layout.folder, data_dir):
        if all((candidate / f).is_file() for f in (*layout.train_files, layout.test_file)):
            return candidate
    return None


def _download(name: str, layout: _Layout, data_dir: Path) -> Path:
    import torchvision.datasets as tv_datasets

    dataset_class = tv_datasets.CIFAR10 if layout.num_classes == 10 else tv_datasets.CIFAR100
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        dataset_class(root=str(data_dir), download=True)
    except Exception as exc:
        raise DataError(_missing_message(name, layout, data_dir, reason=f"the download failed: {exc}")) from exc
    folder = _find_folder(layout, data_dir)
    if folder is None:
        raise DataError(_missing_message(name, layout, data_dir, reason="the download left no files there"))
    return folder


def _missing_message(name: str, layout: _Layout, data_dir: Path, *, reason: str) -> str:
    expected = data_dir / layout.folder
    files = ", ".join((*layout.train_files, layout.test_file))
    return (
        f"{name} not found: expected {files} in {expected} (or directly in {data_dir}), and {reason}. "
        f"Download {layout.url} and extract it into {data_dir}, "
        f"or pass --data-dir with the folder that holds {layout.folder}/"
    )


def _read_batches(folder: Path, layout: _Layout, files: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    for file_name in files:
        entry = _read_pickle(folder / file_name)
        data = np.asarray(_get(entry, b"data", folder / file_name))
        batch_labels = np.asarray(_get(entry, layout.label_key, folder / file_name), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch_labels):
            raise DataError(
                f"{folder / file_name} is malformed: expected uint8 data [N, 3072] and N labels, "
                f"got {data.dtype} {data.shape} and {len(batch_labels)} labels; re-download the data set"
            )
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(batch_labels))
    return torch.cat(images), torch.cat(labels)


def _read_class_names(folder: Path, layout: _Layout) -> list[str]:
    meta_path = folder / layout.meta_file
    if not meta_path.is_file():
        return [str(index) for index in range(layout.num_classes)]
    names = _get(_read_pickle(meta_path), layout.names_key, meta_path)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_pickle(path: Path) -> dict[Any, Any]:
    try:
        with path.open("rb") as handle:
            entry = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"cannot read {path}: {exc}; the file is damaged or not a CIFAR batch; re-download the data set") from exc
    if not isinstance(entry, dict):
        raise DataError(f"{path} holds a {type(entry).__name__}, not the CIFAR dict layout")
    return entry


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, so a crafted file cannot run code."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of the CIFAR layout")
        return super().find_class(module, name)


def _get(entry: dict[Any, Any], key: bytes, path: Path) -> Any:
    """Look a key up whether the pickle was written with bytes or str keys."""
    for candidate in (key, key.decode()):
        if candidate in entry:
            return entry[candidate]
    raise DataError(f"{path} has no {key.decode()!r} entry; it is not in the CIFAR python layout")
