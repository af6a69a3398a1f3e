"""Shared fixtures: a synthetic CIFAR-10 on disk, its splits, the real data in ../shared, a tiny CNN,
and a user model (``tinynet:tiny``) with a baseline the search trains itself."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from autocompress.data import DataSplits, prepare_splits, write_synthetic_cifar
from autocompress.runner import run_search
from tests._tiny_search import TINY_MODEL, settings_for

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir holding ``cifar-10-batches-py/`` with 2,000 train and 500 test synthetic images."""
    return write_synthetic_cifar(tmp_path_factory.mktemp("synthetic_cifar"))


@pytest.fixture(scope="session")
def synthetic_splits(synthetic_data_dir: Path) -> DataSplits:
    """The synthetic set split 1,800 train / 200 val / 500 test (do not mutate its tensors)."""
    return prepare_splits("cifar10", synthetic_data_dir, val_size=200, split_seed=0, download=False)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` next to the repository: real CIFAR-10 and the pretrained ResNets."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"real data not available: {SHARED_DIR} (real CIFAR-10 and pretrained ResNets) is absent")
    return SHARED_DIR


@pytest.fixture()
def make_tiny_cnn() -> Callable[..., nn.Module]:
    """A factory of small CNNs (conv-BN-ReLU x2, pool, linear) that train in about a second."""
    return tiny_cnn


def tiny_cnn(num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


@pytest.fixture(scope="session")
def tiny_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's own model, importable as ``tinynet:tiny`` (the ``package.module:factory`` form)."""
    folder = tmp_path_factory.mktemp("usermodel")
    (folder / "tinynet.py").write_text(TINY_MODEL)
    sys.path.insert(0, str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_module: Path, synthetic_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A baseline trained by the search itself (no --checkpoint given), cached where the search keeps it."""
    root = tmp_path_factory.mktemp("baseline")
    messages: list[str] = []
    run_search(settings_for(root, synthetic_data_dir, None, baseline_epochs=1, trials=1, warm_start=False), log=messages.append)
    assert any("no --checkpoint: training a tinynet:tiny baseline for 1 epochs first" in message for message in messages)
    cache = root / "baselines" / "tinynet_tiny-cifar10-s0.pt"
    assert cache.exists()
    return cache
