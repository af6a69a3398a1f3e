from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from autocompress.data import (
    DataSplits,
    DeviceLoader,
    TensorSet,
    crop_flip,
    load_cifar,
    prepare_splits,
    stratified_split,
    write_synthetic_cifar,
)
from autocompress.errors import DataError


def test_synthetic_files_use_the_cifar_pickle_layout(synthetic_data_dir: Path) -> None:
    folder = synthetic_data_dir / "cifar-10-batches-py"
    names = {p.name for p in folder.iterdir()}
    assert names == {*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"}
    with (folder / "data_batch_1").open("rb") as handle:
        entry = pickle.load(handle, encoding="bytes")
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (400, 3072)
    assert len(entry[b"labels"]) == 400


@pytest.mark.parametrize("subfolder", ["", "cifar-10-batches-py"])
def test_load_synthetic_from_parent_or_batches_folder(synthetic_data_dir: Path, subfolder: str) -> None:
    arrays = load_cifar("cifar10", synthetic_data_dir / subfolder, download=False)
    assert arrays.train_images.shape == (2000, 3, 32, 32) and arrays.train_images.dtype == torch.uint8
    assert arrays.test_images.shape == (500, 3, 32, 32)
    assert arrays.train_labels.dtype == torch.int64 and arrays.test_labels.shape == (500,)
    assert arrays.num_classes == 10 and arrays.class_names[3] == "class_3"
    assert arrays.train_labels.bincount().tolist() == [200] * 10


def test_synthetic_data_is_deterministic(tmp_path: Path) -> None:
    first = load_cifar("cifar10", write_synthetic_cifar(tmp_path / "a", n_train=50, n_test=10, num_classes=4))
    second = load_cifar("cifar10", write_synthetic_cifar(tmp_path / "b", n_train=50, n_test=10, num_classes=4))
    assert torch.equal(first.train_images, second.train_images)
    assert first.num_classes == 4 and first.class_names == ["class_0", "class_1", "class_2", "class_3"]


def test_missing_data_without_download_says_where(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_cifar("cifar10", tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message and "--data-dir" in message


def test_failed_download_becomes_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(**kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.CIFAR100", offline)
    with pytest.raises(DataError, match="download failed: network is unreachable") as info:
        load_cifar("cifar100", tmp_path / "data")
    assert str(tmp_path / "data" / "cifar-100-python") in str(info.value)
    assert "cifar-100-python.tar.gz" in str(info.value)


def test_download_then_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_download(root: str, download: bool) -> None:
        calls.append(root)
        write_synthetic_cifar(Path(root), n_train=20, n_test=10)

    monkeypatch.setattr("torchvision.datasets.CIFAR10", fake_download)
    arrays = load_cifar("cifar10", tmp_path / "fresh")
    assert calls == [str(tmp_path / "fresh")]
    assert len(arrays.train_labels) == 20 and len(arrays.test_labels) == 10


def test_cifar100_layout_reads_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, count in (("train", 30), ("test", 10)):
        entry = {
            b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            b"fine_labels": [i % 100 for i in range(count)],
            b"coarse_labels": [0] * count,
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": []}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    arrays = load_cifar("cifar100", tmp_path, download=False)
    assert arrays.num_classes == 100 and arrays.class_names[99] == "c99"
    assert arrays.train_labels.tolist() == list(range(30))


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (os.getcwd, ())


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    write_synthetic_cifar(tmp_path, n_train=10, n_test=5)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": _RunsCode()}, protocol=2))
    with pytest.raises(DataError, match="refusing to load posix.getcwd"):
        load_cifar("cifar10", tmp_path, download=False)


def test_unknown_dataset_name() -> None:
    with pytest.raises(DataError, match="choose one of cifar10, cifar100"):
        load_cifar("mnist", ".", download=False)


def test_stratified_split_is_deterministic_disjoint_and_stratified() -> None:
    labels = torch.arange(10).repeat_interleave(300)[torch.randperm(3000, generator=torch.Generator().manual_seed(1))]
    train_idx, val_idx = stratified_split(labels, 1005, seed=7)
    again_train, again_val = stratified_split(labels, 1005, seed=7)
    assert torch.equal(train_idx, again_train) and torch.equal(val_idx, again_val)
    assert len(val_idx) == 1005 and len(train_idx) == 1995
    assert torch.equal(torch.sort(torch.cat([train_idx, val_idx])).values, torch.arange(3000))
    assert labels[val_idx].bincount().tolist() == [101] * 5 + [100] * 5
    _, other_val = stratified_split(labels, 1005, seed=8)
    assert not torch.equal(val_idx, other_val)


def test_stratified_split_refuses_impossible_sizes() -> None:
    with pytest.raises(DataError, match="val_size must be in"):
        stratified_split(torch.zeros(10, dtype=torch.int64), 10, seed=0)
    with pytest.raises(DataError, match="class 1 has 1 examples"):
        stratified_split(torch.tensor([0, 0, 0, 0, 1]), 4, seed=0)


def test_prepare_splits_on_synthetic(synthetic_splits: DataSplits) -> None:
    assert (len(synthetic_splits.train), len(synthetic_splits.val), len(synthetic_splits.test)) == (1800, 200, 500)
    assert synthetic_splits.val.labels.bincount().tolist() == [20] * 10
    assert synthetic_splits.num_classes == 10


@pytest.mark.realdata
def test_prepare_splits_on_real_cifar10(shared_dir: Path) -> None:
    splits = prepare_splits("cifar10", shared_dir / "data", download=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (45_000, 5_000, 10_000)
    assert splits.val.labels.bincount().tolist() == [500] * 10
    assert splits.test.labels[:5].tolist() == [3, 8, 8, 0, 6]  # the official test_batch order


def test_tensor_set_validates() -> None:
    with pytest.raises(DataError, match="uint8"):
        TensorSet(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        TensorSet(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


def _numbered_set(count: int) -> TensorSet:
    images = torch.arange(count, dtype=torch.uint8).view(-1, 1, 1, 1).expand(count, 3, 32, 32).clone()
    return TensorSet(images, torch.arange(count, dtype=torch.int64))


@pytest.mark.parametrize(("drop_last", "batches", "last_size"), [(True, 3, 32), (False, 4, 4)])
def test_loader_covers_every_image_once(drop_last: bool, batches: int, last_size: int) -> None:
    loader = DeviceLoader(
        _numbered_set(100), batch_size=32, device="cpu", augment=False, shuffle=True, seed=0, drop_last=drop_last
    )
    out = list(loader.iter_epoch(0))
    assert len(loader) == batches == len(out) and len(out[-1][1]) == last_size
    labels = torch.cat([y for _, y in out])
    assert len(labels.unique()) == len(labels) == (96 if drop_last else 100)
    for images, y in out:
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32)
        assert torch.allclose(images[:, 0, 0, 0], y.float() / 255)


def test_loader_epochs_are_seeded() -> None:
    loader = DeviceLoader(_numbered_set(64), batch_size=64, device="cpu", augment=True, shuffle=True, seed=3, drop_last=False)
    first, second = next(iter(loader)), next(iter(loader))
    assert loader.epoch == 2
    replay = next(loader.iter_epoch(0))
    assert torch.equal(first[0], replay[0]) and torch.equal(first[1], replay[1])
    assert not torch.equal(first[1], second[1])


def test_loader_augments_with_zero_padded_crops_and_channels_last(synthetic_splits: DataSplits) -> None:
    plain = DeviceLoader(synthetic_splits.test, batch_size=500, device="cpu", augment=False, shuffle=False, seed=0, drop_last=False)
    augmented = DeviceLoader(
        synthetic_splits.test, batch_size=500, device="cpu", augment=True, shuffle=False, seed=0,
        drop_last=False, channels_last=True,
    )
    (x, y), (xa, ya) = next(iter(plain)), next(iter(augmented))
    assert xa.shape == x.shape and xa.dtype == torch.float32 and torch.equal(y, ya)
    assert xa.is_contiguous(memory_format=torch.channels_last)
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    changed = (xa != x).flatten(1).any(dim=1).float().mean()
    assert changed > 0.9  # 1 in 162 draws is (no shift, no flip)
    zero_rows = (xa == 0).all(dim=(1, 3))  # [N, 32]: rows that zero padding filled
    assert zero_rows.any(dim=1).float().mean() > 0.8  # 8 of the 9 vertical offsets bring some in
    assert zero_rows.sum(dim=1).max() == 4


def test_crop_flip_shifts_and_flips() -> None:
    images = torch.randint(1, 256, (3, 3, 32, 32), dtype=torch.uint8)
    offsets = torch.tensor([[4, 4], [0, 0], [4, 4]])
    flips = torch.tensor([False, False, True])
    out = crop_flip(images, offsets, flips)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out[0], images[0])  # centre window, no flip
    assert torch.equal(out[1, :, 4:, 4:], images[1, :, :28, :28])  # moved down-right by 4
    assert out[1, :, :4, :].sum() == 0 and out[1, :, :, :4].sum() == 0  # zero padding came in
    assert torch.equal(out[2], images[2].flip(-1))


def test_crop_flip_combined_offset_and_flip() -> None:
    images = torch.randint(1, 256, (1, 3, 32, 32), dtype=torch.uint8)
    out = crop_flip(images, torch.tensor([[8, 6]]), torch.tensor([True]))[0]
    # window starts 4 rows down and 2 columns right of the original, then mirrors left-right
    assert torch.equal(out[:, :28, 2:], images[0, :, 4:, 2:].flip(-1))
    assert out[:, 28:, :].sum() == 0 and out[:, :, :2].sum() == 0
