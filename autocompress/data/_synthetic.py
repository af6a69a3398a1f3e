"""A small learnable stand-in for CIFAR-10, written in the exact python-pickle layout (for tests)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

_SIDE = 32
_NUM_TRAIN_BATCHES = 5


def write_synthetic_cifar(
    root: Path,
    *,
    n_train: int = 2000,
    n_test: int = 500,
    num_classes: int = 10,
    seed: int = 0,
) -> Path:
    """Write ``root/cifar-10-batches-py/`` (5 data batches, ``test_batch``, ``batches.meta``).

    Each class has its own mean colour and stripe orientation/frequency; every image adds colour
    jitter, a random stripe phase and pixel noise, so a tiny CNN learns it well above chance in
    one epoch but not instantly perfectly. Returns ``root``, the ``data_dir`` to pass to
    :func:`load_cifar` (as ``"cifar10"``) or to ``--data-dir``.
    """
    if n_train < _NUM_TRAIN_BATCHES or n_test < 1 or num_classes < 2:
        raise ValueError(f"need n_train >= 5, n_test >= 1, num_classes >= 2; got {n_train}, {n_test}, {num_classes}")
    rng = np.random.default_rng(seed)
    class_colours = rng.uniform(50, 205, size=(num_classes, 3))
    class_angles = rng.uniform(0, np.pi, size=num_classes)
    class_freqs = rng.uniform(0.2, 0.8, size=num_classes)
    style = (class_colours, class_angles, class_freqs)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_data, train_labels = _make_images(rng, n_train, style)
    for index, part in enumerate(np.array_split(np.arange(n_train), _NUM_TRAIN_BATCHES), start=1):
        _write_batch(folder / f"data_batch_{index}", f"training batch {index} of 5", train_data[part], train_labels[part])
    test_data, test_labels = _make_images(rng, n_test, style)
    _write_batch(folder / "test_batch", "testing batch 1 of 1", test_data, test_labels)
    meta = {
        b"label_names": [f"class_{c}".encode() for c in range(num_classes)],
        b"num_cases_per_batch": -(-n_train // _NUM_TRAIN_BATCHES),
        b"num_vis": 3 * _SIDE * _SIDE,
    }
    _dump(folder / "batches.meta", meta)
    return Path(root)


def _make_images(
    rng: np.random.Generator, count: int, style: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    colours, angles, freqs = style
    labels = rng.permutation(np.arange(count) % len(colours))
    yy, xx = np.mgrid[0:_SIDE, 0:_SIDE].astype(np.float64)
    along = np.cos(angles[labels])[:, None, None] * xx + np.sin(angles[labels])[:, None, None] * yy
    phase = rng.uniform(0, 2 * np.pi, size=(count, 1, 1))
    stripes = 35.0 * np.sin(freqs[labels][:, None, None] * along + phase)
    jitter = rng.normal(0, 18, size=(count, 3))
    base = colours[labels] + jitter
    noise = rng.normal(0, 30, size=(count, 3, _SIDE, _SIDE))
    images = base[:, :, None, None] + stripes[:, None, :, :] + noise
    data = np.clip(np.rint(images), 0, 255).astype(np.uint8).reshape(count, -1)
    return data, labels.astype(np.int64)


def _write_batch(path: Path, batch_label: str, data: np.ndarray, labels: np.ndarray) -> None:
    entry = {
        b"batch_label": batch_label.encode(),
        b"labels": [int(v) for v in labels],
        b"data": np.ascontiguousarray(data),
        b"filenames": [f"synthetic_{i}.png".encode() for i in range(len(labels))],
    }
    _dump(path, entry)


def _dump(path: Path, obj: object) -> None:
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=2)
