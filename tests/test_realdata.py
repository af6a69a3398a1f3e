"""The core numbers on real CIFAR-10 and the pretrained ResNet-20 (skipped without ../shared)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from autocompress.compress import compressible_layers
from autocompress.data import prepare_splits
from autocompress.engine import predict
from autocompress.models import build_model, load_checkpoint
from autocompress.pack import read_packed
from autocompress.pipeline import finetune_under_plan_, harden_and_measure
from autocompress.plan import Plan

pytestmark = pytest.mark.realdata
RESNET20_TEST_TOP1 = 0.9173


def test_resnet20_eight_bit_uniform_keeps_accuracy_and_the_file_reproduces_it(shared_dir: Path, tmp_path: Path) -> None:
    splits = prepare_splits("cifar10", shared_dir / "data", download=False)
    model = build_model("resnet20")
    load_checkpoint(model, shared_dir / "weights" / "akamaster" / "resnet20-12fca82f.th")
    plan = Plan.uniform(compressible_layers(model), sparsity=0.0, bits=8, quantizer="uniform", model="resnet20")
    device = torch.device("cpu")
    finetune_under_plan_(model, plan, splits.train, device=device, epochs=0, progress=False)
    compressed = harden_and_measure(model, plan, model_spec="resnet20", num_classes=10, device=device)
    compressed.write(tmp_path / "r20.acz")
    assert os.path.getsize(tmp_path / "r20.acz") == compressed.size.total
    assert compressed.size.fp32_bytes == 1_084_392  # every float tensor of the fp32 state dict
    assert compressed.size.total <= 0.30 * compressed.size.fp32_bytes
    in_memory = predict(compressed.model, splits.test, device=device)
    from_file = predict(read_packed(tmp_path / "r20.acz").model, splits.test, device=device)
    assert torch.equal(in_memory, from_file)  # all 10,000 predictions identical
    accuracy = float((from_file == splits.test.labels).float().mean())
    assert abs(accuracy - RESNET20_TEST_TOP1) <= 0.003
