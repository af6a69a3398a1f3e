"""A user's own tiny model (``tinynet:tiny``) and short search settings on the synthetic data set."""

from __future__ import annotations

import functools
from pathlib import Path

from autocompress.settings import load_settings
from autocompress.strategies import check_settings

TINY_MODEL = '''
import torch
from torch import nn

def tiny(num_classes=10):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )
'''



def settings_for(root: Path, data_dir: Path, checkpoint: Path | None, *, any_mode: bool = False, **overrides) -> object:
    values = dict(
        target_size="6KB", model="tinynet:tiny", checkpoint=None if checkpoint is None else str(checkpoint),
        data_dir=str(data_dir), output_root=str(root), val_size=200, final_epochs=0.1, batch_size=64,
        device="cpu", bits_max=6, quantizers="clipq", bits_min=2, distill=False,
    )
    if overrides.get("mode", "bo") in ("bo", "random"):
        # the first version's recipe, which most tests exercise; the tests of the default recipe override it
        values.update(trials=4, epochs_per_trial=0.1, sampler_startup_trials=2, sampler="tpe", space="absolute",
                      trial_score="val_accuracy")
    values.update(overrides)
    return load_settings(None, values, check=functools.partial(check_settings, shared=any_mode))
